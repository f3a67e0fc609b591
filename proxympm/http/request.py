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
3. llhttp (httptools, strict mode) over the head bytes, which rejects bare LF,
   obs-fold, space before colon, CTLs, bad or duplicate Content-Length and CL
   together with TE. A head that arrives whole (the usual case) is validated in
   one call without callbacks and its fields are split (both in fields.py); a head
   that arrives in pieces is fed as it comes, with ``_Collector`` counting the
   fields as llhttp completes them, so the limits hold while it is incomplete.
   Whenever the whole-head path sees an error or a limit, it hands the head to
   the incremental path, whose errors (and their order) are the reference;
4. the proxy's own semantics: Host, Transfer-Encoding, Expect, target form.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools

from proxympm.http.body import BodyDecoder, ChunkedBody, LengthBody, NoBody
from proxympm.http.errors import HTTPError
from proxympm.http.fields import (
    NO_TOKENS,
    Headers,
    connection_tokens,
    feed,
    split_fields,
    validates,
)
from proxympm.http.grammar import (
    ABSOLUTE_FORM,
    HOST,
    OWS,
    REQUEST_LINE,
    is_content_length,
)


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

    def __init__(
        self,
        method: bytes = b"",
        target: bytes = b"",  # as received
        path: bytes = b"",  # origin-form: path and query (absolute-form reduced to it)
        version: bytes = b"1.1",
        headers: Headers | None = None,
        lnames: list[bytes] | None = None,  # lowercase names, parallel to ``headers``
        host: bytes | None = None,
        content_length: int | None = None,
        chunked: bool = False,
        keep_alive: bool = True,
        expect_continue: bool = False,
        connection_tokens: frozenset[bytes] = frozenset(),
        upgrade: bytes | None = None,
        request_line: bytes = b"",
        head_size: int = 0,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.version = version
        self.headers: Headers = [] if headers is None else headers
        self.lnames: list[bytes] = [] if lnames is None else lnames
        self.host = host
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.connection_tokens = connection_tokens
        self.upgrade = upgrade
        self.request_line = request_line
        self.head_size = head_size

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


# fields _build acts on besides Host
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"expect",
                      b"upgrade"})
_HOSTS_OK: set[bytes] = set()  # Host values that passed the HOST grammar (bounded)

# method, target, minor version, request line without CRLF, its end
_Line = tuple[bytes, bytes, bytes, bytes, int]


class RequestReader:
    """Incremental head reader for one client connection (one request at a time)."""

    __slots__ = ("limits", "_parser", "_collector", "_fed", "_line_ok", "_scan", "_line")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._collector: _Collector | None = None  # made when a head arrives in pieces
        self._parser: httptools.HttpRequestParser | None = None
        self._reset()

    def _reset(self) -> None:
        self._fed = 0  # head bytes already given to llhttp
        self._line_ok = False
        self._line: _Line | None = None
        self._scan = 0  # where to resume looking for the end of the head

    @property
    def started(self) -> bool:
        """True once part of a head has arrived (for the header read timeout)."""
        return self._fed > 0 or self._line_ok

    def read(self, buf: bytearray) -> tuple[Request, BodyDecoder] | None:
        """Consume one complete head from the front of ``buf``, or return None."""
        if not self._line_ok:
            m = REQUEST_LINE.match(buf, 0, self.limits.request_line + 2)
            if m is not None:
                request_line, method, target, major, minor = m.groups()
                eol = m.end() - 2
                end = buf.find(b"\r\n\r\n", eol)
                # the whole head is here (the usual case), HTTP/1.0 or 1.1
                if end >= 0 and major == b"1" and (minor == b"1" or minor == b"0"):
                    fields = self._whole_head(buf, eol, end)
                    if fields is not None:
                        request = _build(method, target, minor, request_line, end + 4, *fields)
                        del buf[: end + 4]
                        if request.chunked or request.content_length:
                            return request, self._body_for(request)
                        return request, NoBody()
                    # refused or over a limit: _feed below says why, as it always did
            line = self._request_line(buf)
            if line is None:
                return None
            self._line = line
            self._line_ok = True
        else:
            line = self._line
            assert line is not None
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
        assert self._collector is not None  # made by _feed
        method, target, minor, request_line, _ = line
        headers = self._collector.headers
        # lowercase names once, for every later lookup (here, upstream_request_head)
        request = _build(method, target, minor, request_line, head_len, headers,
                         [name.lower() for name, _ in headers])
        del buf[:head_len]
        body = self._body_for(request)
        self._reset()
        return request, body

    def _request_line(self, buf: bytearray) -> _Line | None:
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
        request_line, method, target, major, minor = m.groups()
        if major != b"1":
            raise HTTPError(505, "HTTP major version is not 1")
        if minor != b"1" and minor != b"0":
            buf[eol - 1 : eol] = b"1"  # HTTP/1.2+ is served as 1.1 (llhttp knows no 1.2)
            request_line = request_line[:-1] + b"1"
        # The buffer's front stays as it is until the head is complete: keep the
        # match's groups (bytes copies) instead of matching again in _build.
        return method, target, minor, request_line, eol

    def _whole_head(self, buf: bytearray, eol: int, end: int,
                    ) -> tuple[Headers, list[bytes]] | None:
        """The fields of a head that is all in ``buf``, or None when llhttp refuses
        it or a limit is hit (``_feed`` then parses it again and raises what it
        always raised, in the same order: a limit before a later syntax error)."""
        limits = self.limits
        # every field line is in buf[eol + 2 : end + 2] and longer than name + value + 2
        if end - eol > limits.field_size:
            return None
        if not validates(httptools.HttpRequestParser, buf[: end + 4]):
            return None
        fields = split_fields(buf, eol + 2, end)
        if limits.fields and len(fields[0]) > limits.fields:
            return None
        return fields

    def _feed(self, buf: bytearray, upto: int) -> None:
        if upto <= self._fed:
            return
        if not self._fed:
            self._collector = _Collector(self.limits.field_size, self.limits.fields)
            self._parser = httptools.HttpRequestParser(self._collector)
        assert self._parser is not None
        feed(self._parser, buf[self._fed : upto] if self._fed else buf[:upto], 400,
             "request head", self._refine)
        self._fed = upto

    def _refine(self, message: str) -> HTTPError | None:
        if "Transfer-Encoding" in message and self._unknown_coding():
            return HTTPError(501, "unknown transfer coding")
        return None

    def _unknown_coding(self) -> bool:
        """llhttp refuses a request whose codings do not end in chunked; that is a 501
        (unknown coding) when chunked is absent, a 400 (ambiguous framing) otherwise."""
        assert self._collector is not None
        codings = [
            c.strip(OWS).lower()
            for name, value in self._collector.headers
            if name.lower() == b"transfer-encoding"
            for c in value.split(b",")
        ]
        return bool(codings) and b"chunked" not in codings

    def _body_for(self, req: Request) -> BodyDecoder:
        if req.chunked:
            return ChunkedBody(400, self.limits.body)
        if req.content_length:
            limit = self.limits.body
            if limit and req.content_length > limit:
                raise HTTPError(413, "request body larger than LimitRequestBody")
            return LengthBody(req.content_length)
        return NoBody()


def _build(method: bytes, target: bytes, minor: bytes, request_line: bytes, head_len: int,
           headers: Headers, lnames: list[bytes]) -> Request:
    """The proxy's semantics of a head llhttp accepted (check 4 above)."""
    version = b"1.0" if minor == b"0" else b"1.1"

    content_length: int | None = None
    te_values: list[bytes] | None = None
    expect: bytes | None = None
    upgrade: bytes | None = None
    tokens = NO_TOKENS
    if not _FRAMING.isdisjoint(lnames):
        for i, lname in enumerate(lnames):
            if lname not in _FRAMING:
                continue
            value = headers[i][1]
            if lname == b"content-length":
                if not is_content_length(value):
                    raise HTTPError(400, "invalid Content-Length")
                content_length = int(value)  # 1-18 ASCII digits, checked above
            elif lname == b"transfer-encoding":
                if te_values is None:
                    te_values = []
                te_values.append(value)
            elif lname == b"expect":
                expect = value
            elif lname == b"upgrade":
                upgrade = value
        tokens = connection_tokens(headers, lnames)

    hosts = lnames.count(b"host")
    if version == b"1.1":
        if hosts != 1:
            raise HTTPError(400, "HTTP/1.1 request needs exactly one Host")
    elif hosts > 1:
        raise HTTPError(400, "more than one Host")
    host: bytes | None = None
    if hosts:
        host = headers[lnames.index(b"host")][1]
        if host not in _HOSTS_OK:
            if HOST.fullmatch(host) is None or not host:
                raise HTTPError(400, "invalid Host")
            if len(_HOSTS_OK) < 1024:
                _HOSTS_OK.add(host)

    chunked = False
    if te_values:
        if version != b"1.1":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = [c.strip(OWS).lower() for v in te_values for c in v.split(b",")]
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            if b"chunked" in codings:
                raise HTTPError(400, "chunked is not the final transfer coding once")
            raise HTTPError(501, "unknown transfer coding")
        if len(codings) != 1:
            raise HTTPError(501, "unsupported transfer coding")
        if content_length is not None:
            raise HTTPError(400, "Content-Length with Transfer-Encoding")
        chunked = True

    expect_continue = False
    if expect is not None and version == b"1.1":
        if expect.lower() != b"100-continue":
            raise HTTPError(417, "unsupported Expect")
        expect_continue = True

    # (find, not ``in``: ``bytes in bytes`` first tries the needle as an int and
    # builds a TypeError message, which costs as much as the rest of this test)
    if target[:1] == b"/" and target.find(b"#") < 0 and method != b"CONNECT":
        path = target  # origin-form, the usual case of _target_form
    else:
        path, authority = _target_form(method, target)
        if authority is not None:
            # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
            host = authority
    # HTTP/1.0 clients get no keep-alive: a 1.0 keep-alive extension is a source
    # of framing disagreements for no gain today.
    keep_alive = version == b"1.1" and b"close" not in tokens
    return Request(method, target, path, version, headers, lnames, host, content_length,
                   chunked, keep_alive, expect_continue, tokens, upgrade, request_line,
                   head_len)


def _target_form(method: bytes, target: bytes) -> tuple[bytes, bytes | None]:
    """(path, authority of an absolute-form target or None)."""
    if b"#" in target:
        raise HTTPError(400, "fragment in request target")
    if method == b"CONNECT":
        raise HTTPError(501, "CONNECT is not supported")
    if target[:1] == b"/":
        return target, None
    if target == b"*":
        if method != b"OPTIONS":
            raise HTTPError(400, "asterisk-form outside OPTIONS")
        return target, None
    m = ABSOLUTE_FORM.fullmatch(target)
    if m is None:
        raise HTTPError(400, "invalid request target")
    authority = m.group("authority")
    if b"@" in authority or HOST.fullmatch(authority) is None:
        raise HTTPError(400, "invalid authority in request target")
    path = m.group("rest") or b"/"
    if path[:1] == b"?":
        path = b"/" + path
    return path, authority
