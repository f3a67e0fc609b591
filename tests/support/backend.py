"""A recording HTTP/1.1 backend for integration tests: stdlib sockets, one thread per
connection, its own small and strict parser.

It records every request as received (head bytes exactly, body wire bytes up to
``RAW_CAP``), counts accepted TCP connections and the peak number of requests in
flight, and keeps connections alive as HTTP/1.1 says. Bodies of any size are consumed
as they arrive (length and sha256 are computed on the fly), and large responses are
generated on the fly, so 100 MiB in either direction never sits in memory.

Threads: ``_accept_loop`` runs on the accept thread; ``_serve`` and everything it
calls run on that connection's own thread; the counters and ``requests`` are shared
and guarded by ``Backend._lock``.

Routes (path prefix after whatever the proxy mapped; query strings are ignored unless
said otherwise):

=====================  ===========================================================
``/bytes/N``           N pattern bytes (see ``pattern``), Content-Length, generated
``/chunked/N``         N pattern bytes, chunked (``?chunk=SIZE``, default 4096)
``/slow/SECONDS``      sleeps, then the echo JSON
``/status/CODE``       that status, small body (none for 1xx/204/304)
``/redirect``          302, ``Location: http://<own host:port>/elsewhere``
``/echo``              the request body back, chunked if the request was chunked,
                       else Content-Length (at most ``ECHO_CAP`` bytes, else 413)
``/close``             echo JSON with ``Connection: close``, then closes
``/garbage``           a response that is not HTTP, then closes
``/truncated``         a response head cut in the middle, then closes
``/half``              ``Content-Length: 1000``, 500 bytes, then closes
``/hopbyhop``          a response carrying hop-by-hop and Connection-listed headers
``/respond/CODE?N=v``   that status with the fields of the query string (``N: v``)
``/_stats``            JSON of the counters (counts as a request itself)
``/health``            ``health_status`` (default 200; a test sets it), small body
anything else          echo JSON: backend name, pid, method, target, headers,
                       body length and sha256 (so ``/upload`` answers an upload hash)
=====================  ===========================================================

Subprocess use: ``python -m tests.support.backend --port N --name A`` prints
``READY <port>`` once listening and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

BLOCK = bytes(range(256)) * 256  # 64 KiB: what /bytes and /chunked repeat
RAW_CAP = 1 << 20  # wire bytes of one request kept in RecordedRequest.raw
ECHO_CAP = 16 << 20  # decoded body kept for /echo
HEAD_LIMIT = 64 << 10
LINE_LIMIT = 8 << 10

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) (HTTP/1\.[01])")
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00\r\n]*?)[ \t]*")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n]*)?")


def pattern(n: int) -> Iterator[bytes]:
    """N deterministic bytes in 64 KiB pieces (what /bytes/N and /chunked/N send)."""
    while n > 0:
        piece = BLOCK if n >= len(BLOCK) else BLOCK[:n]
        n -= len(piece)
        yield piece


def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    for piece in pattern(n):
        h.update(piece)
    return h.hexdigest()


class BadRequest(Exception):
    """The peer sent something this strict parser refuses (answered 400, closed)."""


class PeerClosed(Exception):
    """EOF in the middle of a request."""


@dataclass
class RecordedRequest:
    """One request as the backend received it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    raw_head: bytes  # request line + headers + blank line, exactly as received
    connection_id: int  # 1-based accept order
    number_on_connection: int  # 1 for the first request on its connection
    framing: str = "none"  # "content-length" | "chunked" | "none"
    body_length: int = 0
    body_sha256: str = hashlib.sha256(b"").hexdigest()
    raw: bytes = b""  # head + body wire bytes (chunk framing included), capped
    received_at: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


class _Reader:
    """Buffered reads from one socket; copies consumed bytes into ``capture``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.capture = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(256 << 10)
        if not data:
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        room = RAW_CAP - len(self.capture)
        if room > 0:
            self.capture += data[:room]
        return data

    def read_head(self) -> bytes | None:
        """A request head through its blank line; None on EOF before any byte."""
        while True:
            # RFC 9112 2.2: a server SHOULD ignore at least one empty line before
            # the request line.
            while self.buf[:2] == b"\r\n":
                del self.buf[:2]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                return self._take(end + 4)
            if len(self.buf) > HEAD_LIMIT:
                raise BadRequest("request head too large")
            if not self._fill():
                if not self.buf:
                    return None
                raise PeerClosed("EOF inside a request head")

    def read_line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                return self._take(end + 2)[:-2]
            if len(self.buf) > LINE_LIMIT:
                raise BadRequest("line too long")
            if not self._fill():
                raise PeerClosed("EOF inside a line")

    def read_exact(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if not self.buf and not self._fill():
                raise PeerClosed(f"EOF with {n} body bytes missing")
            piece = self._take(min(n, len(self.buf)))
            n -= len(piece)
            yield piece


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head[:-4].split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if not match:
        raise BadRequest(f"bad request line {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise BadRequest("obs-fold")
        hmatch = _HEADER_LINE.fullmatch(line)
        if not hmatch:
            raise BadRequest(f"bad header line {line!r}")
        headers.append((hmatch.group(1).decode("ascii"), hmatch.group(2).decode("latin-1")))
    method, target, version = (g.decode("ascii") for g in match.groups())
    return method, target, version, headers


def _framing(req: RecordedRequest) -> tuple[str, int]:
    te = req.header_all("transfer-encoding")
    cl = req.header_all("content-length")
    if te and cl:
        raise BadRequest("both Transfer-Encoding and Content-Length")
    if te:
        if len(te) != 1 or te[0].lower() != "chunked":
            raise BadRequest(f"unsupported Transfer-Encoding {te!r}")
        return "chunked", 0
    if cl:
        if len(set(cl)) != 1 or not re.fullmatch(r"[0-9]{1,18}", cl[0]):
            raise BadRequest(f"bad Content-Length {cl!r}")
        return "content-length", int(cl[0])
    return "none", 0


class _Conn:
    """State of one accepted connection (owned by its thread)."""

    def __init__(self, backend: Backend, sock: socket.socket, conn_id: int) -> None:
        self.backend = backend
        self.sock = sock
        self.id = conn_id
        self.reader = _Reader(sock)
        self.head_only = False
        self.version = "HTTP/1.1"
        self.keep_alive = True
        # Called right before a whole response is written in one piece: the request
        # stops counting as in flight then, since its last byte may reach the proxy
        # (which may send the next request, to this backend's max) before this
        # thread runs again.
        self.answered: Callable[[], None] | None = None

    # -- writing -------------------------------------------------------------

    def _head(self, status: int, headers: Iterable[tuple[str, str]], reason: str = "") -> bytes:
        reason = reason or _REASONS.get(status, "Unknown")
        lines = [f"HTTP/1.1 {status} {reason}", f"X-Backend: {self.backend.name}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if not self.keep_alive:
            lines.append("Connection: close")
        elif self.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        content_type: str = "text/plain",
    ) -> None:
        hdrs = [("Content-Type", content_type), *headers]
        if status >= 200 and status not in (204, 304):
            hdrs.append(("Content-Length", str(len(body))))
        else:
            body = b""
        data = self._head(status, hdrs) + (b"" if self.head_only else body)
        if self.answered is not None:
            self.answered()
        self.sock.sendall(data)

    def send_json(self, obj: object, status: int = 200, headers: Iterable[tuple[str, str]] = ()):
        self.send(status, json.dumps(obj).encode(), headers, "application/json")

    def send_stream(self, length: int, pieces: Iterable[bytes]) -> None:
        hdrs = [("Content-Type", "application/octet-stream"), ("Content-Length", str(length))]
        self.sock.sendall(self._head(200, hdrs))
        if self.head_only:
            return
        for piece in pieces:
            self.sock.sendall(piece)

    def send_chunked(self, pieces: Iterable[bytes], content_type: str = "") -> None:
        hdrs = [("Content-Type", content_type or "application/octet-stream"),
                ("Transfer-Encoding", "chunked")]
        self.sock.sendall(self._head(200, hdrs))
        if self.head_only:
            return
        for piece in pieces:
            if piece:
                self.sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.sock.sendall(b"0\r\n\r\n")


class Backend:
    """A recording HTTP/1.1 server on a thread. ``port=0`` picks a free port."""

    def __init__(
        self,
        name: str = "backend",
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._running = False
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # requests refused by the parser, and why
        self.connections_accepted = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.in_flight = 0
        self.max_concurrent = 0  # peak number of requests being answered at once
        self.health_status = 200  # what /health answers (health-check tests)

    # -- lifecycle (caller's thread) ------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> Backend:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((self.host, self.port))
        lsock.listen(1024)
        lsock.settimeout(0.1)
        self.port = lsock.getsockname()[1]
        self._listener = lsock
        self._running = True
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"backend-{self.name}-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (RST-free close)."""
        self._running = False
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.errors.clear()
            self.connections_accepted = 0
            self.max_open_connections = self.open_connections
            self.max_concurrent = self.in_flight

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"{self.name}: {len(self.requests)} requests seen, wanted {n}")

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "name": self.name,
                "requests": len(self.requests),
                "errors": list(self.errors),
                "connections_accepted": self.connections_accepted,
                "open_connections": self.open_connections,
                "max_open_connections": self.max_open_connections,
                "max_concurrent": self.max_concurrent,
            }

    # -- accept thread ----------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while self._running:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections_accepted += 1
                conn_id = self.connections_accepted
                self.open_connections += 1
                self.max_open_connections = max(self.max_open_connections, self.open_connections)
                self._open.add(sock)
            threading.Thread(
                target=self._serve, args=(sock, conn_id), name=f"backend-{self.name}-{conn_id}",
                daemon=True,
            ).start()

    # -- connection threads -----------------------------------------------------

    def _serve(self, sock: socket.socket, conn_id: int) -> None:
        conn = _Conn(self, sock, conn_id)
        number = 0
        try:
            while self._running:
                sock.settimeout(self.idle_timeout)
                conn.reader.capture = bytearray()
                head = conn.reader.read_head()
                if head is None:
                    return
                sock.settimeout(None)
                number += 1
                if not self._one_request(conn, head, number):
                    return
        except BadRequest as exc:
            with self._lock:
                self.errors.append(str(exc))
            try:
                conn.keep_alive = False
                conn.send(400, b"bad request\n")
            except OSError:
                pass
        except (PeerClosed, OSError):
            pass
        finally:
            with self._lock:
                self.open_connections -= 1
                self._open.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _one_request(self, conn: _Conn, head: bytes, number: int) -> bool:
        method, target, version, headers = _parse_head(head)
        req = RecordedRequest(method, target, version, headers, head, conn.id, number)
        framing, length = _framing(req)
        req.framing = framing
        connection = {t.strip().lower() for v in req.header_all("connection") for t in v.split(",")}
        conn.version = version
        conn.head_only = method == "HEAD"
        conn.keep_alive = (
            "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        )
        if (req.header("expect") or "").lower() == "100-continue" and framing != "none":
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._read_body(conn, req, framing, length)
        req.raw = bytes(conn.reader.capture)
        with self._lock:
            self.requests.append(req)
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)
        counted = True

        def answered() -> None:
            nonlocal counted
            if counted:
                counted = False
                with self._lock:
                    self.in_flight -= 1

        conn.answered = answered
        try:
            self._route(conn, req, body)
        finally:
            conn.answered = None
            answered()
        return conn.keep_alive

    def _read_body(self, conn: _Conn, req: RecordedRequest, framing: str, length: int) -> bytes:
        digest = hashlib.sha256()
        kept = bytearray()

        def take(piece: bytes) -> None:
            digest.update(piece)
            req.body_length += len(piece)
            if len(kept) < ECHO_CAP:
                kept.extend(piece[: ECHO_CAP - len(kept)])

        if framing == "content-length":
            for piece in conn.reader.read_exact(length):
                take(piece)
        elif framing == "chunked":
            while True:
                line = conn.reader.read_line()
                match = _CHUNK_LINE.fullmatch(line)
                if not match:
                    raise BadRequest(f"bad chunk size line {line!r}")
                size = int(match.group(1), 16)
                if size == 0:
                    break
                for piece in conn.reader.read_exact(size):
                    take(piece)
                if conn.reader.read_line() != b"":
                    raise BadRequest("chunk data not followed by CRLF")
            while conn.reader.read_line() != b"":  # trailer fields, ignored
                pass
        req.body_sha256 = digest.hexdigest()
        return bytes(kept)

    def _echo(self, conn: _Conn, req: RecordedRequest) -> dict[str, object]:
        return {
            "backend": self.name,
            "pid": os.getpid(),
            "method": req.method,
            "target": req.target,
            "path": req.path,
            "version": req.version,
            "headers": [[k, v] for k, v in req.headers],
            "framing": req.framing,
            "body_length": req.body_length,
            "body_sha256": req.body_sha256,
            "connection_id": req.connection_id,
            "number_on_connection": req.number_on_connection,
        }

    def _route(self, conn: _Conn, req: RecordedRequest, body: bytes) -> None:
        parts = req.path.split("/")
        name = parts[1] if len(parts) > 1 else ""
        arg = parts[2] if len(parts) > 2 else ""
        query = dict(
            p.split("=", 1) for p in req.target.partition("?")[2].split("&") if "=" in p
        )
        if name == "bytes" and arg.isdigit():
            conn.send_stream(int(arg), pattern(int(arg)))
        elif name == "chunked" and arg.isdigit():
            size = int(query.get("chunk", "4096"))
            conn.send_chunked(_rechunk(pattern(int(arg)), size))
        elif name == "slow":
            time.sleep(float(arg or "1"))
            conn.send_json(self._echo(conn, req))
        elif name == "status" and arg.isdigit():
            conn.send(int(arg), f"status {arg}\n".encode())
        elif name == "redirect":
            conn.send(302, b"moved\n", [("Location", f"{self.url}/elsewhere")])
        elif name == "echo":
            if req.body_length > ECHO_CAP:
                conn.send(413, b"too large for /echo\n")
            elif req.framing == "chunked":
                conn.send_chunked(_rechunk([body], 1000), "application/octet-stream")
            else:
                conn.send(200, body, content_type="application/octet-stream")
        elif name == "close":
            conn.keep_alive = False
            conn.send_json(self._echo(conn, req))
        elif name == "garbage":
            conn.keep_alive = False
            conn.sock.sendall(b"THIS IS NOT HTTP AT ALL\r\n\x00\x01\r\n\r\n")
        elif name == "truncated":
            conn.keep_alive = False
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl")
        elif name == "half":
            conn.keep_alive = False
            head = conn._head(200, [("Content-Type", "text/plain"), ("Content-Length", "1000")])
            conn.sock.sendall(head + b"h" * 500)
        elif name == "hopbyhop":
            conn.send(200, b"hop\n", [
                ("Connection", "X-Backend-Private"),
                ("X-Backend-Private", "secret"),
                ("Keep-Alive", "timeout=77, max=77"),
                ("X-Kept", "yes"),
            ])
        elif name == "respond":
            # /respond/STATUS?Name=value&...: answer with these response fields
            from urllib.parse import parse_qsl

            fields = parse_qsl(req.target.partition("?")[2], keep_blank_values=True)
            conn.send(int(arg) if arg.isdigit() else 200, b"respond\n", fields)
        elif name == "health":
            conn.send(self.health_status, b"health\n")
        elif name == "_stats":
            conn.send_json(self.stats())
        else:
            conn.send_json(self._echo(conn, req))


def _rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    for piece in pieces:
        for i in range(0, len(piece), size):
            yield piece[i : i + size]


_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
    302: "Found", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
    413: "Content Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="backend")
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    backend = Backend(args.name, args.host, args.port, args.idle_timeout).start()
    print(f"READY {backend.port}", flush=True)
    while not stop.wait(0.5):
        pass
    backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
