"""Sans-I/O parsing of upstream response heads, as strict as for requests.

Any violation is an ``HTTPError(502)``: the caller answers 502 (or closes the
client connection if the response already started) and never pools the upstream
connection. Body framing follows the request method and the status (RFC 9112 6.3).
"""

from __future__ import annotations

import httptools

from proxympm.http.body import BodyDecoder, ChunkedBody, LengthBody, NoBody, UntilCloseBody
from proxympm.http.errors import HTTPError
from proxympm.http.grammar import BARE_LF, CONTENT_LENGTH, OWS, STATUS_LINE
from proxympm.http.request import Headers

MAX_RESPONSE_HEAD = 65536
MAX_RESPONSE_FIELD = 8192  # mod_proxy's responsefieldsize default


class Response:
    __slots__ = ("status", "reason", "version", "headers", "lnames", "content_length",
                 "chunked", "keep_alive", "connection_tokens", "head_size")

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.version = b"1.1"
        self.headers: Headers = []
        self.lnames: list[bytes] = []  # lowercase names, parallel to ``headers``
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.connection_tokens: frozenset[bytes] = frozenset()
        self.head_size = 0


_NO_TOKENS: frozenset[bytes] = frozenset()


class _Collector:
    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: Headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 2 > MAX_RESPONSE_FIELD:
            raise HTTPError(502, "upstream response header field too large")
        self.headers.append((name, value.rstrip(OWS)))


class _SmallCollector(_Collector):
    """For a head no longer than MAX_RESPONSE_FIELD: no field in it can be longer."""

    __slots__ = ()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value.rstrip(OWS)))


def read_response_head(buf: bytearray) -> Response | None:
    """Consume one response head from the front of ``buf``, or return None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if BARE_LF.search(buf):
            raise HTTPError(502, "bare LF in upstream response head")
        if len(buf) > MAX_RESPONSE_HEAD:
            raise HTTPError(502, "upstream response head too large")
        if not b"HTTP/".startswith(buf[:5]):
            raise HTTPError(502, "upstream sent something that is not an HTTP response")
        return None
    head_len = end + 4
    eol = buf.find(b"\r\n")
    m = STATUS_LINE.fullmatch(buf, 0, eol + 2)
    if m is None:
        raise HTTPError(502, "invalid upstream status line")
    major, minor, code, reason = m.groups()
    if major != b"1":
        raise HTTPError(502, "invalid upstream status line")
    # a field line is shorter than the head: the per-field limit needs no check
    collector = _SmallCollector() if head_len <= MAX_RESPONSE_FIELD else _Collector()
    parser = httptools.HttpResponseParser(collector)
    try:
        parser.feed_data(buf[:head_len])
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserCallbackError as exc:
        cause = exc.__context__
        if isinstance(cause, HTTPError):
            raise cause from None
        raise HTTPError(502, f"invalid upstream response head: {exc}") from None
    except httptools.HttpParserError as exc:
        raise HTTPError(502, f"invalid upstream response head: {exc}") from None

    resp = Response()
    resp.status = int(code)  # three ASCII digits, checked by the regex
    resp.reason = reason or b""
    resp.version = b"1.0" if minor == b"0" else b"1.1"
    resp.headers = headers = collector.headers
    resp.lnames = lnames = [name.lower() for name, _ in headers]
    resp.head_size = head_len
    tokens: set[bytes] | None = None
    te: list[bytes] | None = None
    for i, lname in enumerate(lnames):
        if lname == b"content-length":
            value = headers[i][1]
            if CONTENT_LENGTH.fullmatch(value) is None or resp.content_length is not None:
                raise HTTPError(502, "invalid upstream Content-Length")
            resp.content_length = int(value)  # 1-18 ASCII digits
        elif lname == b"transfer-encoding":
            if te is None:
                te = []
            te.extend(c.strip(OWS).lower() for c in headers[i][1].split(b","))
        elif lname == b"connection":
            if tokens is None:
                tokens = set()
            value = headers[i][1]
            if b"," in value:
                tokens.update(t.strip(OWS).lower() for t in value.split(b","))
            else:  # the usual single token ("keep-alive", "close")
                tokens.add(value.lower())
    if te:
        if te != [b"chunked"]:
            raise HTTPError(502, "unsupported upstream transfer coding")
        if resp.content_length is not None:
            raise HTTPError(502, "upstream sent Content-Length with Transfer-Encoding")
        resp.chunked = True
    if tokens:
        tokens.discard(b"")
        resp.connection_tokens = frozenset(tokens)
        resp.keep_alive = resp.version == b"1.1" and b"close" not in tokens
    else:
        resp.connection_tokens = _NO_TOKENS
        resp.keep_alive = resp.version == b"1.1"
    del buf[:head_len]
    return resp


def response_body(resp: Response, method: bytes) -> BodyDecoder:
    """RFC 9112 6.3: how the body of this response is delimited."""
    if method == b"HEAD" or resp.status < 200 or resp.status in (204, 304):
        return NoBody()
    if resp.chunked:
        return ChunkedBody(502)
    if resp.content_length is not None:
        return LengthBody(resp.content_length)
    resp.keep_alive = False
    return UntilCloseBody()
