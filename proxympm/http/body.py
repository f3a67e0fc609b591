"""Message body framing: Content-Length, chunked, and read-until-close.

Theory of operation: a body decoder is fed the connection's input buffer (a
``bytearray`` that may also hold the start of the next pipelined message). It
consumes exactly the bytes that belong to this body, returns the payload bytes it
decoded, and sets ``done`` once the body has ended. Bytes after the end stay in the
buffer, so offsets are always exact: that is why framing is done here and not
left to a parser that cannot say where a message ended.

The same decoders serve both directions (client request bodies, upstream response
bodies); ``err_status`` is the status a violation maps to (400 from a client, 502
from an upstream).
"""

from __future__ import annotations

from proxympm.http.errors import HTTPError
from proxympm.http.grammar import CHUNK_LINE, FORBIDDEN_IN_VALUE, TOKEN

MAX_CHUNK_LINE = 4096  # size line with extensions; nginx and HAProxy use similar caps
MAX_TRAILER_BYTES = 16384


def _take(buf: bytearray, n: int, have: int) -> bytes:
    """The first ``n`` bytes of ``buf`` as bytes, removed from it: one copy (a
    ``bytes(buf[:n])`` is two), none of the rest of the buffer moved."""
    if n == have:
        data = bytes(buf)
        buf.clear()
        return data
    with memoryview(buf) as view, view[:n] as part:
        data = bytes(part)
    del buf[:n]  # front deletion: CPython only moves the start offset
    return data


class BodyDecoder:
    __slots__ = ("done", "received")

    def __init__(self) -> None:
        self.done = False
        self.received = 0  # payload bytes decoded so far

    def feed(self, buf: bytearray) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def eof(self) -> None:
        """The peer closed: fine only where the framing says the body ends there."""
        if not self.done:
            raise HTTPError(400, "connection closed before the end of the body")


class NoBody(BodyDecoder):
    __slots__ = ()

    def __init__(self) -> None:
        self.done = True  # BodyDecoder's fields, set here: one per request, no super() call
        self.received = 0

    def feed(self, buf: bytearray) -> bytes:
        return b""


class LengthBody(BodyDecoder):
    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        super().__init__()
        self.remaining = length
        self.done = length == 0

    def feed(self, buf: bytearray) -> bytes:
        have = len(buf)
        n = self.remaining if self.remaining < have else have
        if not n:
            return b""
        data = _take(buf, n, have)
        self.remaining -= n
        self.received += n
        if not self.remaining:
            self.done = True
        return data


class UntilCloseBody(BodyDecoder):
    """HTTP/1.0-style response body delimited by the upstream closing."""

    __slots__ = ()

    def feed(self, buf: bytearray) -> bytes:
        data = bytes(buf)
        buf.clear()
        self.received += len(data)
        return data

    def eof(self) -> None:
        self.done = True


_SIZE, _DATA, _DATA_CRLF, _TRAILERS = range(4)


class ChunkedBody(BodyDecoder):
    """Strict RFC 9112 7.1 chunked decoding. Trailers are read, checked and dropped:
    they are never merged into the header section."""

    __slots__ = ("state", "chunk_left", "trailer_bytes", "err_status", "limit")

    def __init__(self, err_status: int = 400, limit: int = 0) -> None:
        super().__init__()
        self.state = _SIZE
        self.chunk_left = 0
        self.trailer_bytes = 0
        self.err_status = err_status
        self.limit = limit  # LimitRequestBody for decoded bytes; 0 = none

    def _fail(self, detail: str) -> HTTPError:
        return HTTPError(self.err_status, detail)

    def feed(self, buf: bytearray) -> bytes:
        out: list[bytes] = []
        while buf and not self.done:
            if self.state == _DATA:
                have = len(buf)
                n = self.chunk_left if self.chunk_left < have else have
                out.append(_take(buf, n, have))
                self.chunk_left -= n
                self.received += n
                if not self.chunk_left:
                    self.state = _DATA_CRLF
            elif self.state == _SIZE:
                end = buf.find(b"\n", 0, MAX_CHUNK_LINE)
                if end < 0:
                    if len(buf) >= MAX_CHUNK_LINE:
                        raise self._fail("chunk size line too long")
                    break
                m = CHUNK_LINE.fullmatch(buf, 0, end + 1)
                if m is None:
                    raise self._fail("invalid chunk size line")
                size = int(m.group("size"), 16)  # validated as 1-16 HEXDIG above
                if self.limit and self.received + size > self.limit:
                    raise HTTPError(413, "chunked request body larger than LimitRequestBody")
                del buf[: end + 1]
                if size:
                    self.chunk_left = size
                    self.state = _DATA
                else:
                    self.state = _TRAILERS
            elif self.state == _DATA_CRLF:
                if len(buf) < 2:
                    if buf[:1] not in (b"", b"\r"):
                        raise self._fail("chunk data not followed by CRLF")
                    break
                if buf[:2] != b"\r\n":
                    raise self._fail("chunk data not followed by CRLF")
                del buf[:2]
                self.state = _SIZE
            else:  # _TRAILERS: *( field-line CRLF ) CRLF
                end = buf.find(b"\n")
                if end < 0:
                    if self.trailer_bytes + len(buf) > MAX_TRAILER_BYTES:
                        raise self._fail("trailer section too large")
                    break
                line = bytes(buf[: end + 1])
                del buf[: end + 1]
                self.trailer_bytes += len(line)
                if self.trailer_bytes > MAX_TRAILER_BYTES:
                    raise self._fail("trailer section too large")
                if line == b"\r\n":
                    self.done = True
                elif not _valid_field_line(line):
                    raise self._fail("invalid trailer field")
        return b"".join(out) if len(out) != 1 else out[0]

    def eof(self) -> None:
        if not self.done:
            raise self._fail("connection closed inside a chunked body")


def _valid_field_line(line: bytes) -> bool:
    if not line.endswith(b"\r\n"):
        return False
    name, sep, value = line[:-2].partition(b":")
    return bool(sep) and TOKEN.fullmatch(name) is not None and not FORBIDDEN_IN_VALUE.search(value)
