"""PROXY protocol v1/v2, sans-I/O: parsing, the no-overshoot read sizes, building."""

from __future__ import annotations

import pytest

from proxympm.http.proxy_protocol import (
    ProxyHeaderError,
    build_v1,
    build_v2,
    header_length,
    next_read,
    parse,
)

FOLLOWING = b"\x16\x03\x01\x02\x00"  # what comes after the header (a TLS ClientHello)


@pytest.mark.parametrize(("header", "source"), [
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n", ("203.0.113.7", 51234)),
    (b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n", ("2001:db8::1", 1)),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
    (build_v1(("203.0.113.7", 1), ("192.0.2.1", 2)), ("203.0.113.7", 1)),
    (build_v2(("203.0.113.7", 1), ("192.0.2.1", 2)), ("203.0.113.7", 1)),
    (build_v2(("2001:db8::1", 9), ("2001:db8::2", 2)), ("2001:db8::1", 9)),
    (build_v2(("203.0.113.7", 1), ("::1", 2)), ("203.0.113.7", 1)),  # mapped, read back
])
def test_parse_and_read_exactly_the_header(header: bytes, source: object) -> None:
    assert parse(header) == source
    # byte by byte as a reader would: never asked to read past the header
    buf = bytearray()
    stream = header + FOLLOWING
    while (want := next_read(buf)) > 0:
        assert len(buf) + want <= len(header)
        buf += stream[len(buf):len(buf) + 1]
    assert bytes(buf) == header and header_length(buf) == len(header)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 ::1 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
])
def test_malformed_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        length = header_length(data)
        parse(data[:length] if length else data)


def test_v1_without_crlf_in_107_bytes_is_refused() -> None:
    with pytest.raises(ProxyHeaderError):
        header_length(b"PROXY TCP4 " + b"1" * 120)
