"""Sans-I/O parsing of upstream response heads, as strict as for requests.

Any violation is an ``HTTPError(502)``: the caller answers 502 (or closes the
client connection if the response already started) and never pools the upstream
connection. Body framing follows the request method and the status (RFC 9112 6.3).
"""

from __future__ import annotations

import httptools

from proxympm.http.body import BodyDecoder, ChunkedBody, LengthBody, NoBody, UntilCloseBody
from proxympm.http.errors import HTTPError
from proxympm.http.fields import (
    NO_TOKENS,
    Headers,
    connection_tokens,
    feed,
    split_fields,
    validates,
)
from proxympm.http.grammar import BARE_LF, OWS, STATUS_LINE, is_content_length

MAX_RESPONSE_HEAD = 65536
MAX_RESPONSE_FIELD = 8192  # mod_proxy's responsefieldsize default


class Response:
    __slots__ = ("status", "reason", "version", "headers", "lnames", "content_length",
                 "chunked", "keep_alive", "connection_tokens", "head_size")

    def __init__(
        self,
        status: int = 0,
        reason: bytes = b"",
        version: bytes = b"1.1",
        headers: Headers | None = None,
        lnames: list[bytes] | None = None,  # lowercase names, parallel to ``headers``
        content_length: int | None = None,
        chunked: bool = False,
        keep_alive: bool = True,
        connection_tokens: frozenset[bytes] = frozenset(),
        head_size: int = 0,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers: Headers = [] if headers is None else headers
        self.lnames: list[bytes] = [] if lnames is None else lnames
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.connection_tokens = connection_tokens
        self.head_size = head_size


class _Collector:
    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: Headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 2 > MAX_RESPONSE_FIELD:
            raise HTTPError(502, "upstream response header field too large")
        self.headers.append((name, value.rstrip(OWS)))


def _collect(buf: bytearray, head_len: int) -> Headers:
    """llhttp over the head with a callback per field, which checks its size."""
    collector = _Collector()
    feed(httptools.HttpResponseParser(collector), buf[:head_len], 502,
         "upstream response head")
    return collector.headers


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_OK_LINE = b"HTTP/1.1 200 OK\r\n"


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
    if buf.startswith(_OK_LINE):  # what STATUS_LINE makes of the most common line
        minor, status, reason, fields_at = b"1", 200, b"OK", len(_OK_LINE)
    else:
        # the reason phrase holds no CR: a match ends at the first CRLF
        m = STATUS_LINE.match(buf)
        if m is None:
            raise HTTPError(502, "invalid upstream status line")
        major, minor, code, reason = m.groups()
        if major != b"1":
            raise HTTPError(502, "invalid upstream status line")
        status = int(code)  # three ASCII digits, checked by the regex
        fields_at = m.end()
    # A field line is shorter than the head: a head within MAX_RESPONSE_FIELD needs
    # no per-field check, so llhttp validates it without callbacks and the fields
    # are split here. Anything else goes through _collect (and its messages).
    if head_len > MAX_RESPONSE_FIELD or not validates(httptools.HttpResponseParser, buf[:head_len]):
        headers = _collect(buf, head_len)
        lnames = [name.lower() for name, _ in headers]
    else:
        headers, lnames = split_fields(buf, fields_at, end)
    version = b"1.0" if minor == b"0" else b"1.1"
    content_length: int | None = None
    chunked = False
    tokens = NO_TOKENS
    if not _FRAMING.isdisjoint(lnames):
        count = lnames.count(b"content-length")
        if count:
            value = headers[lnames.index(b"content-length")][1]
            if count != 1 or not is_content_length(value):
                raise HTTPError(502, "invalid upstream Content-Length")
            content_length = int(value)  # 1-18 ASCII digits
        if b"transfer-encoding" in lnames:
            te = [c.strip(OWS).lower() for i, lname in enumerate(lnames)
                  if lname == b"transfer-encoding" for c in headers[i][1].split(b",")]
            if te != [b"chunked"]:
                raise HTTPError(502, "unsupported upstream transfer coding")
            if content_length is not None:
                raise HTTPError(502, "upstream sent Content-Length with Transfer-Encoding")
            chunked = True
        tokens = connection_tokens(headers, lnames)
    resp = Response(status, reason or b"", version, headers, lnames, content_length, chunked,
                    version == b"1.1" and b"close" not in tokens, tokens, head_len)
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
