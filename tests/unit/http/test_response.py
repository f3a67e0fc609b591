"""Upstream response heads: strict parsing and framing by method and status."""

from __future__ import annotations

import pytest

from proxympm.http.body import ChunkedBody, LengthBody, NoBody, UntilCloseBody
from proxympm.http.errors import HTTPError
from proxympm.http.response import read_response_head, response_body
from proxympm.http.serialize import HeaderInjection, error_response, serialize_head


def parse(raw: bytes, method: bytes = b"GET"):
    buf = bytearray(raw)
    resp = read_response_head(buf)
    assert resp is not None
    return resp, response_body(resp, method), buf


def test_length_body_and_leftover() -> None:
    resp, body, buf = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA")
    assert resp.status == 200 and isinstance(body, LengthBody)
    assert body.feed(buf) == b"abc" and body.done and bytes(buf) == b"EXTRA"


@pytest.mark.parametrize(("raw", "method", "kind"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"HEAD", NoBody),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET", NoBody),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", b"GET", NoBody),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"GET", ChunkedBody),
    (b"HTTP/1.0 200 OK\r\n\r\n", b"GET", UntilCloseBody),
])
def test_framing_follows_method_and_status(raw: bytes, method: bytes, kind: type) -> None:
    resp, body, _ = parse(raw, method)
    assert isinstance(body, kind)
    if kind is UntilCloseBody:
        assert not resp.keep_alive


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"garbage that is not http\r\n\r\n",
])
def test_invalid_responses_are_502(raw: bytes) -> None:
    with pytest.raises(HTTPError) as exc:
        read_response_head(bytearray(raw))
    assert exc.value.status == 502


def test_incomplete_head_waits_but_non_http_fails_early() -> None:
    assert read_response_head(bytearray(b"HTTP/1.1 200 OK\r\n")) is None
    with pytest.raises(HTTPError):
        read_response_head(bytearray(b"<html>"))


def test_serializer_refuses_injection() -> None:
    with pytest.raises(HeaderInjection):
        serialize_head(b"HTTP/1.1 200 OK\r\n", [(b"Location", b"/a\r\nSet-Cookie: x")])
    with pytest.raises(HeaderInjection):
        serialize_head(b"HTTP/1.1 200 OK\r\n", [(b"Bad Name", b"v")])
    ok = serialize_head(b"HTTP/1.1 200 OK\r\n", [(b"X-A", b"v")])
    assert ok == b"HTTP/1.1 200 OK\r\nX-A: v\r\n\r\n"


def test_error_page_is_framed() -> None:
    page = error_response(503, close=True)
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Connection: close" in head and b"Content-Length: %d" % len(body) in head
