"""Sans-I/O request head parsing: bytes in, a validated ``Request`` out.

Theory of operation: the connection keeps one input ``bytearray``. ``RequestReader``
is called each time bytes arrive; it returns ``None`` until a whole head is at the
front of the buffer, then removes the head from the buffer and returns the
``Request`` together with the body decoder that frames what follows. Nothing here
reads a socket, so tests feed it any chunking they like.

Checks, in order:
1. size limits while the head is incomplete (414 for the request line, 431 for a
   field or the field count), so a client cannot make us buffer without bound;
2. the request line against our own regex (one SP each, version, target bytes),
   because llhttp tolerates extra spaces and HTTP/0.9;
3. llhttp (httptools, strict mode) over the head bytes, incrementally, which
   rejects bare LF, obs-fold, space before colon, CTLs, bad or duplicate
   Content-Length and CL together with TE;
4. the proxy's own semantics: Host, Transfer-Encoding, Expect, target form.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools

from proxympm.http.body import BodyDecoder, ChunkedBody, LengthBody, NoBody
from proxympm.http.errors import HTTPError
from proxympm.http.grammar import (
    ABSOLUTE_FORM,
    CONTENT_LENGTH,
    HOST,
    OWS,
    REQUEST_LINE,
)

Headers = list[tuple[bytes, bytes]]  # (name as received, value without OWS)


@dataclass(frozen=True, slots=True)
class Limits:
    request_line: int = 8190
    fields: int = 100  # 0 = unlimited
    field_size: int = 8190
    body: int = 1073741824  # 0 = unlimited


class Request:
    """One parsed request head. Built by the listener thread, then owned by the
    worker that serves it."""

    __slots__ = (
        "method",
        "target",
        "path",
        "version",
        "headers",
        "lnames",
        "host",
        "content_length",
        "chunked",
        "keep_alive",
        "expect_continue",
        "connection_tokens",
        "upgrade",
        "request_line",
        "head_size",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""  # as received
        self.path = b""  # origin-form: path and query (absolute-form reduced to it)
        self.version = b"1.1"
        self.headers: Headers = []
        self.lnames: list[bytes] = []  # lowercase names, parallel to ``headers``
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.expect_continue = False
        self.connection_tokens: frozenset[bytes] = frozenset()
        self.upgrade: bytes | None = None
        self.request_line = b""
        self.head_size = 0

    def header(self, lname: bytes) -> bytes | None:
        """First value of a header, by lowercase name."""
        lnames = self.lnames
        if len(lnames) == len(self.headers):
            try:
                return self.headers[lnames.index(lname)][1]
            except ValueError:
                return None
        for name, value in self.headers:
            if name.lower() == lname:
                return value
        return None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


_NO_TOKENS: frozenset[bytes] = frozenset()


class _Collector:
    """httptools callback target; collects header fields for one head."""

    __slots__ = ("headers", "count", "field_limit", "fields_limit")

    def __init__(self, field_limit: int, fields_limit: int) -> None:
        self.headers: Headers = []
        self.count = 0
        self.field_limit = field_limit
        self.fields_limit = fields_limit

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count += 1
        if self.fields_limit and self.count > self.fields_limit:
            raise HTTPError(431, "too many header fields")
        if len(name) + len(value) + 2 > self.field_limit:
            raise HTTPError(431, "header field too large")
        self.headers.append((name, value.rstrip(OWS)))


_INTERESTING = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"})


class RequestReader:
    """Incremental head reader for one client connection (one request at a time)."""

    __slots__ = ("limits", "_parser", "_collector", "_fed", "_line_ok", "_scan", "_line")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._reset()

    def _reset(self) -> None:
        self._collector = _Collector(self.limits.field_size, self.limits.fields)
        self._parser = httptools.HttpRequestParser(self._collector)
        self._fed = 0  # head bytes already given to llhttp
        self._line_ok = False
        self._line: tuple[bytes, bytes, bytes, int] | None = None  # method, target, minor, eol
        self._scan = 0  # where to resume looking for the end of the head

    @property
    def started(self) -> bool:
        """True once part of a head has arrived (for the header read timeout)."""
        return self._fed > 0 or self._line_ok

    def read(self, buf: bytearray) -> tuple[Request, BodyDecoder] | None:
        """Consume one complete head from the front of ``buf``, or return None."""
        if not self._line_ok:
            # RFC 9112 2.2: ignore at least one empty line before the request line.
            while buf[:2] == b"\r\n":
                del buf[:2]
            eol = buf.find(b"\r\n", 0, self.limits.request_line + 2)
            if eol < 0:
                if len(buf) > self.limits.request_line:
                    raise HTTPError(414, "request line too long")
                if b"\n" in buf:
                    raise HTTPError(400, "bare LF in request line")
                return None
            m = REQUEST_LINE.fullmatch(buf, 0, eol + 2)
            if m is None:
                raise HTTPError(400, "malformed request line")
            method, target, major, minor = m.groups()
            if major != b"1":
                raise HTTPError(505, "HTTP major version is not 1")
            if minor != b"1" and minor != b"0":
                buf[eol - 1 : eol] = b"1"  # HTTP/1.2+ is served as 1.1 (llhttp knows no 1.2)
            # The buffer's front stays as it is until the head is complete: keep the
            # match's groups (bytes copies) instead of matching again in _build.
            self._line = (method, target, minor, eol)
            self._line_ok = True
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            self._scan = max(0, len(buf) - 3)
            self._feed(buf, len(buf))
            last = buf.rfind(b"\n")
            if len(buf) - last > self.limits.field_size + 2:
                raise HTTPError(431, "header field too large")
            return None
        head_len = end + 4
        self._feed(buf, head_len)
        request = self._build(buf, head_len)
        del buf[:head_len]
        body = self._body_for(request)
        self._reset()
        return request, body

    def _feed(self, buf: bytearray, upto: int) -> None:
        if upto <= self._fed:
            return
        try:
            self._parser.feed_data(buf[self._fed : upto] if self._fed else buf[:upto])
        except httptools.HttpParserUpgrade:
            pass  # Upgrade is decided by the proxy layer, not the parser
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HTTPError):
                raise cause from None
            raise HTTPError(400, f"invalid request head: {exc}") from None
        except httptools.HttpParserError as exc:
            if "Transfer-Encoding" in str(exc) and self._unknown_coding():
                raise HTTPError(501, "unknown transfer coding") from None
            raise HTTPError(400, f"invalid request head: {exc}") from None
        self._fed = upto

    def _unknown_coding(self) -> bool:
        """llhttp refuses a request whose codings do not end in chunked; that is a 501
        (unknown coding) when chunked is absent, a 400 (ambiguous framing) otherwise."""
        codings = [
            c.strip(OWS).lower()
            for name, value in self._collector.headers
            if name.lower() == b"transfer-encoding"
            for c in value.split(b",")
        ]
        return bool(codings) and b"chunked" not in codings

    def _build(self, buf: bytearray, head_len: int) -> Request:
        assert self._line is not None  # checked when the line arrived
        method, target, minor, eol = self._line
        req = Request()
        req.request_line = bytes(buf[:eol])
        req.method = method
        req.target = target
        req.version = b"1.0" if minor == b"0" else b"1.1"
        req.head_size = head_len
        req.headers = headers = self._collector.headers
        # lowercase names once, for every later lookup (here, upstream_request_head)
        req.lnames = lnames = [name.lower() for name, _ in headers]

        host_values: list[bytes] = []
        te_values: list[bytes] = []
        conn_tokens: set[bytes] | None = None
        expect: bytes | None = None
        for i, lname in enumerate(lnames):
            if lname not in _INTERESTING:
                continue
            value = headers[i][1]
            if lname == b"host":
                host_values.append(value)
            elif lname == b"content-length":
                if CONTENT_LENGTH.fullmatch(value) is None:
                    raise HTTPError(400, "invalid Content-Length")
                req.content_length = int(value)  # 1-18 ASCII digits, checked above
            elif lname == b"transfer-encoding":
                te_values.append(value)
            elif lname == b"connection":
                if conn_tokens is None:
                    conn_tokens = set()
                if b"," in value:
                    conn_tokens.update(t.strip(OWS).lower() for t in value.split(b","))
                else:  # the usual single token ("keep-alive", "close")
                    conn_tokens.add(value.lower())
            elif lname == b"expect":
                expect = value
            else:  # upgrade
                req.upgrade = value
        if conn_tokens:
            conn_tokens.discard(b"")
            req.connection_tokens = frozenset(conn_tokens)
        else:
            req.connection_tokens = _NO_TOKENS

        if req.version == b"1.1":
            if len(host_values) != 1:
                raise HTTPError(400, "HTTP/1.1 request needs exactly one Host")
        elif len(host_values) > 1:
            raise HTTPError(400, "more than one Host")
        if host_values:
            if HOST.fullmatch(host_values[0]) is None or not host_values[0]:
                raise HTTPError(400, "invalid Host")
            req.host = host_values[0]

        if te_values:
            if req.version != b"1.1":
                raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
            codings = [c.strip(OWS).lower() for v in te_values for c in v.split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                if b"chunked" in codings:
                    raise HTTPError(400, "chunked is not the final transfer coding once")
                raise HTTPError(501, "unknown transfer coding")
            if len(codings) != 1:
                raise HTTPError(501, "unsupported transfer coding")
            if req.content_length is not None:
                raise HTTPError(400, "Content-Length with Transfer-Encoding")
            req.chunked = True

        if expect is not None and req.version == b"1.1":
            if expect.lower() != b"100-continue":
                raise HTTPError(417, "unsupported Expect")
            req.expect_continue = True

        self._target_form(req)
        # HTTP/1.0 clients get no keep-alive: a 1.0 keep-alive extension is a source
        # of framing disagreements for no gain today.
        req.keep_alive = req.version == b"1.1" and b"close" not in req.connection_tokens
        return req

    @staticmethod
    def _target_form(req: Request) -> None:
        target = req.target
        if b"#" in target:
            raise HTTPError(400, "fragment in request target")
        if req.method == b"CONNECT":
            raise HTTPError(501, "CONNECT is not supported")
        if target[:1] == b"/":
            req.path = target
            return
        if target == b"*":
            if req.method != b"OPTIONS":
                raise HTTPError(400, "asterisk-form outside OPTIONS")
            req.path = target
            return
        m = ABSOLUTE_FORM.fullmatch(target)
        if m is None:
            raise HTTPError(400, "invalid request target")
        authority = m.group("authority")
        if b"@" in authority or HOST.fullmatch(authority) is None:
            raise HTTPError(400, "invalid authority in request target")
        # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
        req.host = authority
        req.path = m.group("rest") or b"/"
        if req.path[:1] == b"?":
            req.path = b"/" + req.path

    def _body_for(self, req: Request) -> BodyDecoder:
        if req.chunked:
            return ChunkedBody(400, self.limits.body)
        if req.content_length:
            limit = self.limits.body
            if limit and req.content_length > limit:
                raise HTTPError(413, "request body larger than LimitRequestBody")
            return LengthBody(req.content_length)
        return NoBody()
