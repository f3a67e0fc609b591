"""Which client address to believe (mod_remoteip), and the RFC 7239 ``Forwarded`` element.

``believe`` walks ``RemoteIPHeader`` right to left as ``remoteip_modify_request``
does: the hop that handed us the header (the peer, first) must be a trusted or
internal proxy, else the walk stops; the rightmost address is then believed and
taken off the header, and becomes the hop to check next. A trusted (not internal)
proxy may only present a public address: private, loopback and link-local IPv4,
and IPv6 outside 2000::/3, stop the walk (IPv4-mapped IPv6 counts as IPv4). An
entry that is not an address stops it too. What is left stays in the header (the
header is removed when nothing is left). With no proxy list at all every hop is
trusted, as in httpd.

Thread model: pure functions, run by the worker that owns the request.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from proxympm.config.model import HostConfig

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientAddress:
    """The address a request is believed to come from, and the hop that brought it."""

    __slots__ = ("ip", "port", "peer", "peer_trusted")

    def __init__(self, ip: str, port: int, peer: tuple[str, int], peer_trusted: bool) -> None:
        self.ip = ip  # believed client address (the peer's when nothing else is believed)
        self.port = port  # its port, when it is the connection's own; else 0
        self.peer = peer  # the connection's peer (after a PROXY protocol header)
        self.peer_trusted = peer_trusted  # the peer is a listed trusted/internal proxy


def _parse(text: bytes) -> Address | None:
    text = text.strip(b" \t")
    if text.startswith(b"[") and text.endswith(b"]"):
        text = text[1:-1]
    try:
        addr = ipaddress.ip_address(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _match(host: HostConfig, addr: Address) -> bool | None:
    """None: not a listed proxy; else whether it is an internal one."""
    for net, internal in host.remote_ip_proxies:
        if addr.version == net.version and addr in net:
            return internal
    return None


def _public(addr: Address) -> bool:
    if isinstance(addr, ipaddress.IPv4Address):
        b = addr.packed
        return not (b[0] in (10, 127) or (b[0] == 169 and b[1] == 254)
                    or (b[0] == 172 and (b[1] & 0xF0) == 16) or (b[0] == 192 and b[1] == 168))
    return (addr.packed[0] & 0xE0) == 0x20


def believe(host: HostConfig, peer: tuple[str, int], req: Any) -> ClientAddress:
    """The client address for ``req`` on a connection from ``peer``; RemoteIPHeader's
    consumed entries are taken off ``req``'s fields (the worker owns ``req``)."""
    peer_addr = _parse(peer[0].encode("ascii"))
    listed = bool(host.remote_ip_proxies)
    peer_kind = _match(host, peer_addr) if (listed and peer_addr is not None) else None
    found = ClientAddress(peer[0], peer[1], peer, peer_kind is not None)
    name = host.remote_ip_header
    if name is None or peer_addr is None:
        return found
    lname = name.lower().encode("latin-1")
    values = [v for n, v in req.headers if n.lower() == lname]
    if not values:
        return found
    remote = b", ".join(values)  # httpd merged repeated request fields on input
    hop: Address = peer_addr
    internal = False
    crossed_external = False
    believed: Address | None = None
    via: list[str] = []  # trusted (not internal) hops, for RemoteIPProxiesHeader
    while remote is not None:
        if listed:
            kind = _match(host, hop)
            if kind is None:
                break
            # an internal proxy presented by an external one is not internal
            internal = kind and not crossed_external
            crossed_external = crossed_external or not kind
        comma = remote.rfind(b",")
        entry = remote[comma + 1:] if comma >= 0 else remote
        rest: bytes | None = remote[:comma] if comma >= 0 else None
        addr = _parse(entry)
        if addr is None or not entry.strip(b" \t"):
            break
        if not internal and not _public(addr):
            break
        if not internal:
            via.append(str(hop))
        believed = hop = addr
        remote = rest
    if believed is None:
        return found
    _rewrite(req, lname, name.encode("latin-1"), remote)
    if host.remote_ip_proxies_header and via:
        proxies = host.remote_ip_proxies_header.encode("latin-1")
        _rewrite(req, proxies.lower(), proxies, ", ".join(via).encode("ascii"))
    found.ip = str(believed)
    found.port = 0
    return found


def _rewrite(req: Any, lname: bytes, name: bytes, rest: bytes | None) -> None:
    headers = [(n, v) for n, v in req.headers if n.lower() != lname]
    if rest is not None and rest.strip(b" \t"):
        headers.append((name, rest.strip(b" \t")))
    req.headers = headers
    req.lnames = [n.lower() for n, _ in headers]


# -- RFC 7239 ---------------------------------------------------------------------

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _quoted(value: bytes) -> bytes:
    """A token stays bare; anything else (``:``, ``[``) becomes a quoted-string."""
    if value and all(c in _TCHAR for c in value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def node(ip: str, port: int) -> bytes:
    """RFC 7239 section 6: IPv6 in brackets, an optional port; quoted when needed."""
    text = f"[{ip}]" if ":" in ip else ip
    if port:
        text += f":{port}"
    return _quoted(text.encode("ascii"))


def forwarded_value(client: ClientAddress, host: bytes | None, tls: bool,
                    incoming: bytes | None) -> bytes:
    """The Forwarded value sent upstream. An incoming one is kept only from a listed
    trusted/internal proxy, and ours appended with ``for`` = that proxy (the next
    hop of the chain); otherwise ours stands alone with ``for`` = the believed client."""
    chained = client.peer_trusted and incoming is not None
    who = node(client.peer[0], client.peer[1]) if chained else node(client.ip, client.port)
    element = b"for=" + who
    if host:
        element += b";host=" + _quoted(host)
    element += b";proto=" + (b"https" if tls else b"http")
    return incoming + b", " + element if chained else element  # type: ignore[operator]
