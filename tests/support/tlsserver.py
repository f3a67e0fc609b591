"""A small threaded TLS server for tests of the proxy side (proxympm as TLS client).

``TLSServer(cert_pem, key_pem, mode=..., client_ca=None)`` listens on 127.0.0.1 and
serves each connection on its own thread with a blocking handshake. It records
what a test wants to assert on: the SNI names received, the client certificate's
subject (when ``client_ca`` makes one required), and handshake failures.

Modes:

==========  ==========================================================================
``hello``   after the handshake, sends ``b"hello"`` and waits for the peer to close
``echo``    sends back every byte it receives until EOF (full duplex: it writes
            while the peer is still sending, so a client that only writes deadlocks)
``http``    answers every HTTP/1.1 request head with a small 200 (keep-alive), the
            body naming the SNI it saw, so it can serve as an ``https://`` backend
``silent``  accepts TCP and never speaks TLS (for handshake timeouts)
``close``   completes the handshake, then closes with close_notify at once
==========  ==========================================================================

Threads: ``_accept_loop`` on the accept thread, ``_serve`` on one thread per
connection; the recorded lists are guarded by ``_lock``. ``stop()`` closes the
listening socket and every connection; use it as a context manager.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from types import TracebackType


class TLSServer:
    def __init__(
        self,
        cert_pem: str | Path,
        key_pem: str | Path | None = None,
        *,
        mode: str = "hello",
        client_ca: str | Path | None = None,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> None:
        self.mode = mode
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert_pem), str(key_pem) if key_pem else None)
        self.ctx.set_alpn_protocols(["http/1.1"])
        if maximum_version is not None:
            self.ctx.maximum_version = maximum_version
        if client_ca is not None:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(cafile=str(client_ca))
        self.ctx.sni_callback = self._on_sni
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self.sni_names: list[str | None] = []
        self.client_subjects: list[str] = []
        self.errors: list[str] = []
        self.handshakes = 0
        self._conns: list[socket.socket] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def __enter__(self) -> TLSServer:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped = True
        with self._lock:
            conns, self._conns = self._conns, []
        for s in (self.sock, *conns):
            try:  # close() alone does not wake a thread blocked in accept()/recv()
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._thread.join(5)

    # -- accept thread ---------------------------------------------------------------

    def _on_sni(self, sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        with self._lock:
            self.sni_names.append(name)

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- connection threads ------------------------------------------------------------

    def _serve(self, raw: socket.socket) -> None:
        if self.mode == "silent":
            try:
                while raw.recv(4096):
                    pass
            except OSError:
                pass
            return
        raw.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self.errors.append(str(exc))
            raw.close()
            return
        with self._lock:
            self._conns.append(tls)
            self.handshakes += 1
            cert = tls.getpeercert()
            if cert:
                subject = dict(x[0] for x in cert.get("subject", ()))
                names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
                self.client_subjects.append(subject.get("commonName") or ",".join(names))
        try:
            getattr(self, f"_mode_{self.mode}")(tls)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self.errors.append(str(exc))
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def _mode_hello(self, tls: ssl.SSLSocket) -> None:
        tls.sendall(b"hello")
        while tls.recv(4096):
            pass

    def _mode_echo(self, tls: ssl.SSLSocket) -> None:
        while True:
            data = tls.recv(65536)
            if not data:
                return
            tls.sendall(data)

    def _mode_close(self, tls: ssl.SSLSocket) -> None:
        tls.settimeout(0)  # send close_notify, do not wait for the peer's
        try:
            tls.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass

    def _mode_http(self, tls: ssl.SSLSocket) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = tls.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            with self._lock:
                sni = self.sni_names[-1] if self.sni_names else None
            body = f"tls backend, sni={sni}\n".encode()
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
