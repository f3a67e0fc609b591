"""TLS clients for front-side tests: one raw HTTPS connection, and many idle ones.

``TLSRawClient`` is ``RawClient`` over TLS with a chosen SNI name, so a test sees the
certificate a vhost served and the exact response. ``IdleTLSConnections`` opens N
connections, each with one keep-alive request answered, then leaves them silent
(handshakes run on a small thread pool: the proxy does its side without blocking, the
test side need not).
"""

from __future__ import annotations

import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.rawhttp import RawClient, RawResponse, request_bytes


def client_context(ca: str | Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TLSRawClient(RawClient):
    """One TLS connection to 127.0.0.1:port with SNI ``sni`` (None: no SNI sent)."""

    def __init__(self, port: int, ctx: ssl.SSLContext, sni: str | None,
                 timeout: float = 10.0) -> None:
        super().__init__(port, "127.0.0.1", timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=sni)

    @property
    def peer_der(self) -> bytes:
        der = self.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert der is not None
        return der

    def get(self, path: str, host: str, headers: list[tuple[str, str]] | None = None
            ) -> RawResponse:
        self.send(request_bytes("GET", path, host, headers))
        return self.read_response("GET")


class IdleTLSConnections:
    """N TLS connections that each made one keep-alive request and then went quiet."""

    def __init__(self, port: int, ctx: ssl.SSLContext, sni: str, host: str,
                 path: str = "/idle") -> None:
        self.port = port
        self.ctx = ctx
        self.sni = sni
        self.request = request_bytes("GET", path, host, [("User-Agent", "idle-tls")])
        self.held: list[TLSRawClient] = []
        self.failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def _one(self) -> None:
        try:
            client = TLSRawClient(self.port, self.ctx, self.sni, timeout=30)
            client.send(self.request)
            resp = client.read_response()
        except (OSError, ValueError) as exc:
            why = type(exc).__name__
            with self._lock:
                self.failures[why] = self.failures.get(why, 0) + 1
            return
        with self._lock:
            if resp.status == 200 and "close" not in resp.connection_tokens():
                self.held.append(client)
            else:
                self.failures[f"status {resp.status}"] = self.failures.get(
                    f"status {resp.status}", 0) + 1
                client.close()

    def open(self, n: int, parallel: int = 32) -> int:
        with ThreadPoolExecutor(parallel) as pool:
            for _ in range(n):
                pool.submit(self._one)
        return len(self.held)

    def still_open(self) -> int:
        """How many held connections have neither EOF nor data waiting (poll, no read)."""
        import select

        ep = select.epoll()
        try:
            for c in self.held:
                ep.register(c.sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            events = ep.poll(0.1)
        finally:
            ep.close()
        return len(self.held) - len(events)

    def close(self) -> None:
        for c in self.held:
            try:
                c.close()
            except OSError:
                pass
        self.held.clear()


def raw_connections(port: int, n: int) -> list[socket.socket]:
    """n plain TCP connections to the port that never send a byte."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
