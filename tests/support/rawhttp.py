"""A raw-socket HTTP/1.1 client for tests that must see exact framing.

``requests`` and curl hide what a broken response looked like on the wire; this one
reports it: how the body was framed, whether the framing was satisfied, and whether
the server closed the connection.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass

_STATUS_LINE = re.compile(rb"(HTTP/\d\.\d) (\d{3})(?: (.*))?")


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "content-length" | "chunked" | "close" | "none"
    complete: bool  # the framing said the body ended (False: EOF came first)
    raw_head: bytes

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def connection_tokens(self) -> set[str]:
        return {t.strip().lower() for v in self.header_all("connection") for t in v.split(",")}


def request_bytes(
    method: str,
    target: str,
    host: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k, _ in headers or []):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(body: bytes, size: int = 1000) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


class RawClient:
    """One TCP connection; ``read_response`` parses one response off it."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    @classmethod
    def over(cls, sock: socket.socket, port: int, timeout: float = 10.0) -> RawClient:
        """A client on a socket the caller connected (non-blocking connects in a
        burst, say); it is made blocking with ``timeout``."""
        client = cls.__new__(cls)
        client.host, client.port, client.timeout = "127.0.0.1", port, timeout
        sock.settimeout(timeout)
        client.sock = sock
        client.buf = bytearray()
        client.eof = False
        return client

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str, **kw: object) -> RawResponse:
        self.send(request_bytes(method, target, f"{self.host}:{self.port}", **kw))  # type: ignore[arg-type]
        return self.read_response(method)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(256 << 10)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _line(self) -> bytes | None:
        while (end := self.buf.find(b"\r\n")) < 0:
            if not self._fill():
                return None
        return self._take(end + 2)[:-2]

    def read_response(self, method: str = "GET") -> RawResponse:
        """Read one final response (skipping 1xx). Raises TimeoutError if the server
        neither finishes nor closes within ``timeout``; ConnectionError if it closes
        before a complete head."""
        while True:
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                if not self._fill():
                    raise ConnectionError(f"closed before a response head: {bytes(self.buf)!r}")
            head = self._take(end + 4)
            lines = head[:-4].split(b"\r\n")
            match = _STATUS_LINE.fullmatch(lines[0])
            if not match:
                raise ValueError(f"bad status line {lines[0]!r}")
            status = int(match.group(2))
            if not 100 <= status < 200 or status == 101:
                break
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        resp = RawResponse(match.group(1).decode(), status, (match.group(3) or b"").decode(),
                           headers, b"", "none", True, head)
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if method == "HEAD" or status in (204, 304):
            return resp
        if te:
            resp.framing = "chunked"
            resp.body, resp.complete = self._read_chunked()
        elif cl is not None:
            resp.framing = "content-length"
            want = int(cl)
            while len(self.buf) < want and self._fill():
                pass
            resp.body = self._take(min(want, len(self.buf)))
            resp.complete = len(resp.body) == want
        else:
            resp.framing = "close"
            while self._fill():
                pass
            resp.body = self._take(len(self.buf))
        return resp

    def _read_chunked(self) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            line = self._line()
            if line is None:
                return bytes(body), False
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while (trailer := self._line()) not in (b"", None):
                    pass
                return bytes(body), trailer is not None
            while len(self.buf) < size + 2 and self._fill():
                pass
            if len(self.buf) < size + 2:
                body += self._take(len(self.buf))
                return bytes(body), False
            body += self._take(size)
            self._take(2)

    def closed_by_peer(self, within: float) -> bool:
        """True if the server closes the connection within ``within`` seconds
        (bytes still arriving are drained and ignored)."""
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self._fill():
                    return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        return False
