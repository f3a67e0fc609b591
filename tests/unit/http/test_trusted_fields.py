"""Fields proxympm copies verbatim are written without a second check: pin why.

``ResponseRelay`` writes the upstream's fields with ``join_head`` (no per-field
regex) because ``read_response_head`` already refused every name that is not a
token and every value with a CTL (NUL, bare CR, LF, DEL, ...). These tests are the
proof that claim rests on; the values proxympm makes or rewrites (ProxyPassReverse,
Via, configuration values) still go through ``check_value``.
"""

from __future__ import annotations

import pytest

from proxympm.config.model import HostConfig, ReverseRule
from proxympm.http.errors import HTTPError
from proxympm.http.request import Limits, RequestReader
from proxympm.http.response import Response, read_response_head
from proxympm.http.serialize import HeaderInjection, join_head, serialize_head
from proxympm.proxy.headers import client_response_headers, upstream_request_head

CTLS = [bytes([c]) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)]


@pytest.mark.parametrize("ctl", CTLS, ids=[f"0x{c[0]:02x}" for c in CTLS])
def test_upstream_value_with_a_control_character_is_refused(ctl: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-A: a" + ctl + b"b\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(HTTPError) as exc:
        read_response_head(bytearray(raw))
    assert exc.value.status == 502


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: x\r\n\r\n",  # bare CR inside a value
    b"HTTP/1.1 200 OK\r\nX-A: a\r\r\n\r\n",  # CR before the CRLF
    b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: x\r\n\r\n",  # bare LF inside a value
    b"HTTP/1.1 200 OK\r\nX-A: a\x00\r\n\r\n",  # NUL at the end (not OWS-stripped)
    b"HTTP/1.1 200 OK\r\nX-A:\x00\r\n\r\n",
])
def test_upstream_line_breaks_and_nul_are_refused(raw: bytes) -> None:
    with pytest.raises(HTTPError) as exc:
        read_response_head(bytearray(raw))
    assert exc.value.status == 502


@pytest.mark.parametrize("name", [
    b"", b"Bad Name", b"X\x00", b"X\r", b"X\x7f", b"(x)", b"a/b", b"X\xff", b"X\t",
])
def test_upstream_name_that_is_not_a_token_is_refused(name: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + name + b": v\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(HTTPError) as exc:
        read_response_head(bytearray(raw))
    assert exc.value.status == 502


def test_accepted_upstream_fields_pass_the_serializer_checks() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nServer: x\r\nX-Tab: a\tb \r\nX-Obs: caf\xe9\r\n"
           b"X-Empty:\r\nContent-Length: 0\r\n\r\n")
    resp = read_response_head(bytearray(raw))
    assert resp is not None
    assert resp.lnames == [n.lower() for n, _ in resp.headers]
    # everything the parser lets through is what serialize_head would accept
    assert join_head(b"HTTP/1.1 200 OK\r\n", resp.headers) == serialize_head(
        b"HTTP/1.1 200 OK\r\n", resp.headers)


@pytest.mark.parametrize("ctl", [b"\x00", b"\r", b"\n", b"\x7f", b"\x01"])
def test_client_value_with_a_control_character_is_refused(ctl: bytes) -> None:
    reader = RequestReader(Limits())
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a" + ctl + b"b\r\n\r\n"
    with pytest.raises(HTTPError) as exc:
        reader.read(bytearray(raw))
    assert exc.value.status == 400


def _response(headers: list[tuple[bytes, bytes]]) -> Response:
    resp = Response()
    resp.status = 302
    resp.headers = headers  # no lnames: not built by read_response_head
    return resp


def test_rewritten_location_is_still_checked() -> None:
    rules = (ReverseRule(path="/app/", url="http://backend/"),)
    resp = _response([(b"Location", b"http://backend/x")])
    out = client_response_headers(resp, HostConfig(), rules, b"http://front", b"front")
    assert out == [(b"Location", b"http://front/app/x")]
    bad = _response([(b"Location", b"http://backend/x\r\nSet-Cookie: y")])
    with pytest.raises(HeaderInjection):
        client_response_headers(bad, HostConfig(), rules, b"http://front", b"front")
    with pytest.raises(HeaderInjection):
        client_response_headers(_response([]), HostConfig(via="on"), (), b"http://front",
                                b"front\r\nX-Injected: 1")


def test_configuration_values_in_the_upstream_request_are_checked() -> None:
    reader = RequestReader(Limits())
    parsed = reader.read(bytearray(b"GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"))
    assert parsed is not None
    req = parsed[0]
    head = upstream_request_head(req, HostConfig(), b"/a", b"up:80", "10.0.0.1", False,
                                 b"front", None)
    assert head.startswith(b"GET /a HTTP/1.1\r\nHost: up:80\r\nX-A: 1\r\n")
    with pytest.raises(HeaderInjection):
        upstream_request_head(req, HostConfig(), b"/a", b"up\r\nX: 1", "10.0.0.1", False,
                              b"front", None)
    with pytest.raises(HeaderInjection):
        upstream_request_head(req, HostConfig(), b"/a", b"up:80", "10.0.0.1", False,
                              b"front\x00", None)
    with pytest.raises(HeaderInjection):
        upstream_request_head(req, HostConfig(), b"/a\r\nX: 1", b"up:80", "10.0.0.1",
                              False, b"front", None)
