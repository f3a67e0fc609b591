"""The PROXY protocol (HAProxy, versions 1 and 2), sans-I/O: bytes in, addresses out.

A PROXY header is the first thing on a connection from an L4 load balancer: it
names the original client (source) and the address it connected to
(destination). Version 1 is one text line of at most 107 bytes::

    PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\\r\\n
    PROXY UNKNOWN\\r\\n

Version 2 is binary: a 12-byte signature, version/command, family/transport, a
16-bit length, then the addresses (and optional TLVs, skipped here).

``next_read`` tells a reader how many bytes it may read next without reading past
the header (so what follows, e.g. a TLS ClientHello, stays in the socket for the
TLS layer); ``parse`` turns a complete header into the source address, or None
for LOCAL/UNKNOWN (keep the real peer). Anything malformed raises ``ProxyHeaderError``.
``build_v1``/``build_v2`` make the header sent to backends.
"""

from __future__ import annotations

import ipaddress
import re
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest valid v1 line, CRLF included
MIN_HEADER = 15  # b"PROXY UNKNOWN\r\n"; a v2 header has at least 16
V2_MAX_PAYLOAD = 4096  # addresses + TLVs we accept; HAProxy sends far less

_V1 = re.compile(
    rb"PROXY (?:(TCP4|TCP6) ([0-9A-Fa-f.:]+) ([0-9A-Fa-f.:]+) "
    rb"(0|[1-9][0-9]{0,4}) (0|[1-9][0-9]{0,4})|UNKNOWN[^\r\n]*)\r\n"
)

Source = tuple[str, int]


class ProxyHeaderError(ValueError):
    """Not a valid PROXY protocol header."""


def _is_v2(buf: bytes | bytearray) -> bool:
    n = min(len(buf), 12)
    return bytes(buf[:n]) == V2_SIGNATURE[:n]


def check_prefix(buf: bytes | bytearray) -> None:
    """Refuse as soon as the first bytes cannot start a PROXY header."""
    if _is_v2(buf):
        return
    n = min(len(buf), len(V1_PREFIX))
    if bytes(buf[:n]) != V1_PREFIX[:n]:
        raise ProxyHeaderError(f"no PROXY protocol header (got {bytes(buf[:16])!r})")


def header_length(buf: bytes | bytearray) -> int | None:
    """Total header length if it can be told from ``buf`` yet, else None."""
    check_prefix(buf)
    if _is_v2(buf):
        if len(buf) < 16:
            return None
        length = struct.unpack_from("!H", buf, 14)[0]
        if length > V2_MAX_PAYLOAD:
            raise ProxyHeaderError(f"PROXY v2 header too long ({length} bytes)")
        return 16 + length
    end = bytes(buf[:V1_MAX]).find(b"\r\n")
    if end >= 0:
        return end + 2
    if len(buf) >= V1_MAX:
        raise ProxyHeaderError("PROXY v1 line longer than 107 bytes")
    return None


def next_read(buf: bytes | bytearray) -> int:
    """How many bytes may be read now without passing the header's end; 0 when the
    header is complete. For a v1 line whose end is not known yet the answer is 1
    beyond what is needed to tell: callers that can peek do better (see the listener)."""
    if len(buf) < MIN_HEADER:  # no header is shorter: reading this far is always safe
        check_prefix(buf)
        return MIN_HEADER - len(buf)
    total = header_length(buf)
    if total is not None:
        return total - len(buf)
    return 16 - len(buf) if _is_v2(buf) else 1


def parse(header: bytes) -> Source | None:
    """The source address of a complete header; None for LOCAL / UNKNOWN / non-IP."""
    if header.startswith(V2_SIGNATURE):
        return _parse_v2(header)
    m = _V1.fullmatch(header)
    if m is None:
        raise ProxyHeaderError(f"malformed PROXY v1 line {header[:60]!r}")
    if m.group(1) is None:
        return None  # UNKNOWN
    family = ipaddress.IPv4Address if m.group(1) == b"TCP4" else ipaddress.IPv6Address
    try:
        src = family(m.group(2).decode("ascii"))
        family(m.group(3).decode("ascii"))
    except ValueError:
        raise ProxyHeaderError(f"bad address in PROXY v1 line {header[:60]!r}") from None
    sport, dport = int(m.group(4)), int(m.group(5))
    if sport > 65535 or dport > 65535:
        raise ProxyHeaderError(f"bad port in PROXY v1 line {header[:60]!r}")
    return str(src), sport


def _parse_v2(header: bytes) -> Source | None:
    ver_cmd, fam = header[12], header[13]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2: unknown version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command == 0:
        return None  # LOCAL: a health check from the balancer itself
    if command != 1:
        raise ProxyHeaderError(f"PROXY v2: unknown command {command}")
    payload = header[16:]
    family = fam >> 4
    if family == 1:  # AF_INET: src, dst, sport, dport
        if len(payload) < 12:
            raise ProxyHeaderError("PROXY v2: short IPv4 address block")
        return str(ipaddress.IPv4Address(payload[:4])), struct.unpack_from("!H", payload, 8)[0]
    if family == 2:  # AF_INET6
        if len(payload) < 36:
            raise ProxyHeaderError("PROXY v2: short IPv6 address block")
        addr = ipaddress.IPv6Address(payload[:16])
        ip = str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)
        return ip, struct.unpack_from("!H", payload, 32)[0]
    if family in (0, 3):  # UNSPEC, AF_UNIX: no IP address to believe
        return None
    raise ProxyHeaderError(f"PROXY v2: unknown address family {family}")


# -- towards backends ---------------------------------------------------------------


def _pair(src: str, dst: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version != b.version:  # one family per header: map IPv4 into IPv6
        a, b = (ipaddress.IPv6Address(f"::ffff:{x}") if x.version == 4 else x for x in (a, b))
    return a, b


def build_v1(src: Source, dst: Source) -> bytes:
    a, b = _pair(src[0], dst[0])
    proto = b"TCP4" if a.version == 4 else b"TCP6"
    return b"PROXY %s %s %s %d %d\r\n" % (proto, str(a).encode(), str(b).encode(),
                                          src[1], dst[1])


def build_v2(src: Source, dst: Source) -> bytes:
    a, b = _pair(src[0], dst[0])
    fam = 0x11 if a.version == 4 else 0x21  # TCP over IPv4 / IPv6
    payload = a.packed + b.packed + struct.pack("!HH", src[1], dst[1])
    return V2_SIGNATURE + bytes((0x21, fam)) + struct.pack("!H", len(payload)) + payload
