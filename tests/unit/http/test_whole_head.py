"""The whole-head fast path against the incremental path it shortcuts.

A head that is all in the buffer is validated by llhttp without callbacks and split
by ``split_fields``; a head fed in pieces goes through ``_Collector``. Both must
produce the same Request, and the fast path must refuse (with the same status and
message) everything the incremental path refuses, including which of two faults
wins when a limit and a syntax error are in the same head.
"""

from __future__ import annotations

import pytest

from proxympm.http import request as request_mod
from proxympm.http.errors import HTTPError
from proxympm.http.fields import connection_tokens
from proxympm.http.grammar import CONTENT_LENGTH, is_content_length
from proxympm.http.request import Limits, Request, RequestReader
from proxympm.http.response import MAX_RESPONSE_FIELD, read_response_head

ATTRS = Request.__slots__


def whole(raw: bytes, limits: Limits) -> object:
    buf = bytearray(raw)
    try:
        parsed = RequestReader(limits).read(buf)
    except HTTPError as exc:
        return exc.status, exc.detail
    assert parsed is not None
    req, body = parsed
    return {a: getattr(req, a) for a in ATTRS}, type(body).__name__, bytes(buf)


def in_two(raw: bytes, limits: Limits) -> object:
    """The request line and the first field byte, then the rest: the collector path."""
    reader = RequestReader(limits)
    cut = raw.index(b"\r\n") + 3
    buf = bytearray(raw[:cut])
    try:
        assert reader.read(buf) is None
        buf += raw[cut:]
        parsed = reader.read(buf)
    except HTTPError as exc:
        return exc.status, exc.detail
    assert parsed is not None
    req, body = parsed
    return {a: getattr(req, a) for a in ATTRS}, type(body).__name__, bytes(buf)


ACCEPTED = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18501\r\n\r\n",
    b"GET /a?b HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Ws: \t \r\nX-Pad: \t v a l \t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Obs: caf\xc3\xa9\r\nX-Colon: a:b: c\r\n"
    b"x-dup: 1\r\nX-Dup: 2\r\n\r\n",
    b"POST http://h.test:81/p?q HTTP/1.1\r\nHost: x\r\nConnection: close, X-Drop\r\n"
    b"Expect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive\r\nConnection: ,Upgrade\r\n"
    b"Upgrade: websocket\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nExpect: nonsense\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
]

REFUSED = [
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nY: b\r\n\r\n",  # bare LF in a field
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n",  # obs-fold
    b"GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n",  # space before colon
    b"GET / HTTP/1.1\r\nHost: h\r\nX(: a\r\n\r\n",  # not a token
    b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET /#f HTTP/1.1\r\nHost: h\r\n\r\n",
    b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nExpect: later\r\n\r\n",
]


@pytest.mark.parametrize("raw", ACCEPTED + REFUSED)
def test_whole_head_matches_the_incremental_path(raw: bytes) -> None:
    limits = Limits()
    assert whole(raw, limits) == in_two(raw, limits)


@pytest.mark.parametrize("raw", REFUSED)
def test_whole_head_refuses_what_the_incremental_path_refuses(raw: bytes) -> None:
    result = whole(raw, Limits())
    assert isinstance(result, tuple) and isinstance(result[0], int) and result[0] >= 400


@pytest.mark.parametrize(("raw", "limits", "status", "message"), [
    # a field count or size limit hit before a later syntax error wins, as ever (llhttp
    # hands a field over once the next name is complete)
    (b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD : 4\r\n\r\n",
     Limits(fields=2), 431, "too many header fields"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nA: " + b"x" * 40 + b"\r\nB: 2\r\nC\x01: 3\r\n\r\n",
     Limits(field_size=30), 431, "header field too large"),
    # and a syntax error before the limit is reached wins over it
    (b"GET / HTTP/1.1\r\nHost: h\r\nA : 1\r\nB: 2\r\nC: 3\r\n\r\n",
     Limits(fields=2), 400, None),
    # a limit alone, in a head that arrived whole
    (b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", Limits(fields=2), 431, None),
    (b"GET / HTTP/1.1\r\nHost: h\r\nA: " + b"x" * 30 + b"\r\n\r\n",
     Limits(field_size=30), 431, None),
])
def test_limits_and_syntax_errors_keep_their_order(
        raw: bytes, limits: Limits, status: int, message: str | None) -> None:
    result = whole(raw, limits)
    assert result == in_two(raw, limits)
    assert isinstance(result, tuple) and result[0] == status
    if message is not None:
        assert result[1] == message


def test_a_field_exactly_at_the_size_limit_is_accepted_on_both_paths() -> None:
    # name + value + 2 == field_size: allowed; one byte more: 431
    at = b"GET / HTTP/1.1\r\nHost: h\r\nA: " + b"x" * 27 + b"\r\n\r\n"
    limits = Limits(field_size=30)
    assert whole(at, limits) == in_two(at, limits)
    assert not isinstance(whole(at, limits)[0], int)
    over = at.replace(b"x\r\n", b"xx\r\n")
    assert whole(over, limits) == in_two(over, limits) == (431, "header field too large")


def test_pipelined_heads_leave_the_next_one_in_the_buffer() -> None:
    reader = RequestReader(Limits())
    buf = bytearray(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3")
    first = reader.read(buf)
    second = reader.read(buf)
    assert first is not None and second is not None
    assert (first[0].path, second[0].path) == (b"/1", b"/2")
    assert reader.read(buf) is None and bytes(buf) == b"GET /3"


@pytest.mark.parametrize("value", [
    b"0", b"13", b"1" * 18, b"1" * 19, b"", b"+1", b"-1", b" 1", b"1 ", b"1_0", b"0x1",
    "\u0663".encode(), "\u00b2".encode(), b"1\x00", b"\xb2",
])
def test_is_content_length_is_the_grammar(value: bytes) -> None:
    assert is_content_length(value) == (CONTENT_LENGTH.fullmatch(value) is not None)


@pytest.mark.parametrize("values", [
    [b"keep-alive"], [b"Keep-Alive"], [b"close"], [b"Close"], [b"Upgrade"], [b"upgrade"],
    [b"KEEP-ALIVE"], [b"close, X-Drop"], [b","], [b""], [b"a", b"B, c"],
])
def test_connection_tokens(values: list[bytes]) -> None:
    headers = [(b"Connection", v) for v in values] + [(b"Host", b"h")]
    expected = {t.strip(b" \t").lower() for v in values for t in v.split(b",")} - {b""}
    assert connection_tokens(headers, [n.lower() for n, _ in headers]) == expected


def test_valid_hosts_are_remembered_boundedly_and_invalid_ones_never() -> None:
    for i in range(1100):
        assert whole(b"GET / HTTP/1.1\r\nHost: h%d\r\n\r\n" % i, Limits())[0]["host"] == b"h%d" % i
    assert len(request_mod._HOSTS_OK) <= 1024
    for bad in (b"a b", b"a/b", b""):
        raw = b"GET / HTTP/1.1\r\nHost: " + bad + b"\r\n\r\n"
        assert whole(raw, Limits())[0] == 400
        assert bad not in request_mod._HOSTS_OK


def test_request_defaults() -> None:
    a, b = Request(), Request()
    assert a.headers == [] and a.headers is not b.headers and a.lnames is not b.lnames
    assert a.version == b"1.1" and a.keep_alive and a.connection_tokens == frozenset()


def response(raw: bytes) -> object:
    buf = bytearray(raw)
    try:
        resp = read_response_head(buf)
    except HTTPError as exc:
        return exc.status, exc.detail
    assert resp is not None
    return {a: getattr(resp, a) for a in type(resp).__slots__}, bytes(buf)


def test_response_heads_on_both_sides_of_the_field_limit_parse_alike() -> None:
    fields = (b"Server: x\r\nX-Pad: \t v \r\nX-Empty:\r\nContent-Length: 2\r\n"
              b"Connection: Keep-Alive, X-Hop\r\n")
    small = response(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nhi")
    filler = b"X-Fill: " + b"f" * 4000 + b"\r\n"
    big_raw = b"HTTP/1.1 200 OK\r\n" + fields + filler * 3 + b"\r\nhi"
    assert len(big_raw) > MAX_RESPONSE_FIELD  # parsed by the callback path
    big = response(big_raw)
    assert isinstance(small[0], dict) and isinstance(big[0], dict)
    assert big[0]["headers"][:5] == small[0]["headers"]
    assert small[0]["headers"][1:3] == [(b"X-Pad", b"v"), (b"X-Empty", b"")]
    assert small[0]["connection_tokens"] == {b"keep-alive", b"x-hop"}
    for key in ("status", "content_length", "keep_alive", "connection_tokens", "chunked"):
        assert small[0][key] == big[0][key]
    assert small[1] == big[1] == b"hi"


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_RESPONSE_FIELD + b"\r\n\r\n",
])
def test_refused_responses_are_502_whichever_path(raw: bytes) -> None:
    result = response(raw)
    assert isinstance(result, tuple) and result[0] == 502


@pytest.mark.parametrize(("line", "status", "reason", "version"), [
    (b"HTTP/1.1 200 OK", 200, b"OK", b"1.1"),  # the literal the parser takes as is
    (b"HTTP/1.1 200 OKAY", 200, b"OKAY", b"1.1"),
    (b"HTTP/1.1 200 OK ", 200, b"OK ", b"1.1"),
    (b"HTTP/1.0 200 OK", 200, b"OK", b"1.0"),
    (b"HTTP/1.1 200 ", 200, b"", b"1.1"),
    (b"HTTP/1.1 200", 200, b"", b"1.1"),
    (b"HTTP/1.1 404 Not Found", 404, b"Not Found", b"1.1"),
])
def test_status_lines(line: bytes, status: int, reason: bytes, version: bytes) -> None:
    result = response(line + b"\r\nContent-Length: 0\r\n\r\nnext")
    assert isinstance(result[0], dict)
    assert (result[0]["status"], result[0]["reason"], result[0]["version"]) == (
        status, reason, version)
    assert result[0]["headers"] == [(b"Content-Length", b"0")] and result[1] == b"next"


@pytest.mark.parametrize("line", [
    b"HTTP/1.1 200 OK\r", b"HTTP/1.1  200 OK", b"HTTP/1.1 200 O\x00K", b"HTTP/2.0 200 OK"])
def test_bad_status_lines_are_502(line: bytes) -> None:
    result = response(line + b"\r\n\r\n")
    assert isinstance(result, tuple) and result[0] == 502
