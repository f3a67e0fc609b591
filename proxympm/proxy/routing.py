"""Which backend serves a request: ProxyPass matching as mod_proxy does it.

Built once per child from the immutable config; read-only afterwards, so every
worker thread can use it without a lock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proxympm.config.model import Access, HandlerLocation, HostConfig, ProxyRoute, WorkerParams

if TYPE_CHECKING:
    from proxympm.proxy.backend_table import ErrorState
    from proxympm.proxy.balancer import Balancer, Balancers


@dataclass(frozen=True, slots=True)
class Target:
    """Where a route sends requests: one backend origin plus a base path."""

    scheme: str  # "http" or "https" (a ws:// URL is http, wss:// is https)
    host: str
    port: int
    base_path: bytes  # path prefix of the ProxyPass URL, as bytes
    name: str  # "http://host:port", for logs and the backend table
    # a balancer:// route: the balancer that picks the member per request
    balancer: Balancer | None = field(default=None, compare=False)
    # ``srv=on``: ``host`` is an SRV name (``_http._tcp.app.example``) whose records
    # give hosts and ports; ``port`` is then 0
    srv: bool = False
    # a ws:// or wss:// URL: requests may upgrade to WebSocket without upgrade=
    websocket: bool = False
    # a plain route with max=N: the one-member group that enforces it server-wide
    capped: Balancer | None = field(default=None, compare=False)
    # a plain route: its server-wide error state (``retry``), in the backend table
    errors: ErrorState | None = field(default=None, compare=False)

    @property
    def origin_host(self) -> str:
        """The name for Host and TLS SNI: an SRV name without its ``_service._proto.``
        labels (RFC 6125's source domain), else the URL's host."""
        if self.srv:
            return self.host.split(".", 2)[2]
        return self.host

    @property
    def host_header(self) -> bytes:
        if self.srv:
            return self.origin_host.encode("ascii")
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode("ascii")


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    websocket = scheme in ("ws", "wss")
    if websocket:  # mod_proxy_http (2.4.47+): ws: and wss: are http: and https:
        scheme = "https" if scheme == "wss" else "http"
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported ProxyPass URL {url!r}")
    path = parts.path or "/"
    host = parts.hostname
    if host.startswith("_"):  # an SRV name (the config loader required srv=on for it)
        return Target(scheme, host, 0, path.encode("ascii"), f"{scheme}://{host}", srv=True,
                      websocket=websocket)
    port = parts.port or (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return Target(scheme, host, port, path.encode("ascii"), f"{scheme}://{shown}:{port}",
                  websocket=websocket)


class AccessCheck:
    """A Location's Require lines (mod_authz_host), as an implicit RequireAny."""

    __slots__ = ("granted", "local", "networks")

    def __init__(self, access: Access) -> None:
        self.granted = access.all_granted
        self.local = access.local
        self.networks = tuple(ipaddress.ip_network(n) for n in access.networks)

    def allows(self, peer_ip: str, local_ip: str) -> bool:
        if self.granted:
            return True
        try:
            addr = ipaddress.ip_address(peer_ip.partition("%")[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if self.local and (addr.is_loopback or peer_ip == local_ip):
            return True
        return any(addr in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class Route:
    prefix: bytes
    target: Target | None  # None: excluded with "!", or a handler
    params: WorkerParams
    handler: HandlerLocation | None = None  # SetHandler: proxympm answers itself
    access: AccessCheck | None = None  # Require lines; None: everyone

    def matches(self, path: bytes) -> int:
        """Length of the matched prefix, or -1 (Apache's alias_match)."""
        return alias_match(path, self.prefix)


def alias_match(uri: bytes, prefix: bytes) -> int:
    """mod_proxy's prefix match: runs of '/' match runs of '/', and a prefix that
    does not end in '/' matches only on a whole path segment (/foo matches /foo and
    /foo/x, not /foobar). Returns the number of uri bytes matched, or -1."""
    u = p = 0
    lu, lp = len(uri), len(prefix)
    while p < lp:
        if prefix[p] == 0x2F:  # '/'
            if u >= lu or uri[u] != 0x2F:
                return -1
            while p < lp and prefix[p] == 0x2F:
                p += 1
            while u < lu and uri[u] == 0x2F:
                u += 1
            continue
        if u >= lu or uri[u] != prefix[p]:
            return -1
        u += 1
        p += 1
    if prefix[-1:] != b"/" and u < lu and uri[u] not in (0x2F, 0x3F):  # '/' or '?'
        return -1
    return u


def balancer_target(url: str, balancer: Balancer) -> Target:
    """``balancer://name/path``: host is the name; members are chosen per request."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return Target("balancer", parts.netloc.lower(), 0, path.encode("ascii"),
                  balancer.name, balancer)


class Router:
    """Routes of one host (the main server or a vhost), in configuration order.

    ``balancers`` is the child's one registry, so that every host's routes to a
    balancer share its state (busy counts, error state, queue)."""

    __slots__ = ("routes",)

    def __init__(self, routes: tuple[ProxyRoute, ...], balancers: Balancers | None = None,
                 handlers: tuple[HandlerLocation, ...] = ()) -> None:
        self.routes = tuple(
            Route(h.path.encode("ascii"), None, WorkerParams(), h,
                  AccessCheck(h.access) if h.access is not None else None)
            for h in handlers
        ) + tuple(
            Route(r.path.encode("ascii"),
                  self._target(r.url, r.params, balancers) if r.url else None, r.params,
                  None, AccessCheck(r.access) if r.access is not None else None)
            for r in routes
        )

    @staticmethod
    def _target(url: str, params: WorkerParams, balancers: Balancers | None) -> Target:
        if balancers is None:
            from proxympm.proxy.balancer import Balancers

            balancers = Balancers(())
        if url[:11].lower() != "balancer://":
            from dataclasses import replace

            target = parse_target(url)
            return replace(target, capped=balancers.capped(target, params),
                           errors=balancers.error_state(target))
        return balancer_target(url, balancers.get(url))

    def backends(self) -> Iterator[Target]:
        """Every backend origin these routes may use (balancer members included)."""
        for route in self.routes:
            target = route.target
            if target is None:
                continue
            if target.balancer is not None:
                yield from (m.target for m in target.balancer.members)
            else:
                yield target

    def match(self, path: bytes) -> tuple[Route, bytes] | None:
        """First route that matches, and the upstream path (base + the rest)."""
        for route in self.routes:
            n = route.matches(path)
            if n < 0:
                continue
            if route.target is None:
                return route, b""
            rest = path[n:]
            base = route.target.base_path
            if base.endswith(b"/") and rest.startswith(b"/"):
                rest = rest[1:]
            elif not base.endswith(b"/") and rest and rest[:1] not in (b"/", b"?"):
                rest = b"/" + rest
            upstream = base + rest
            if upstream[:1] != b"/":
                upstream = b"/" + upstream
            return route, upstream
        return None




NAME_CACHE = 4096  # remembered (address, Host) -> vhost choices


class HostTable:
    """Name-based virtual host selection, as httpd does it: best address match
    first, then ServerName/ServerAlias in configuration order (wildcards allowed),
    else the first vhost for that address; the main server when no vhost listens
    on the address at all."""

    __slots__ = ("main", "vhosts", "_by_addr", "_by_name")

    def __init__(self, main: HostConfig, vhosts: tuple) -> None:
        self.main = main
        self.vhosts = vhosts
        self._by_addr: dict[tuple[str, int], tuple[HostConfig, ...]] = {}
        # (ip, port, Host as received) -> the vhost: one dict lookup per request
        # instead of a walk over the names (bounded: Host values come from clients)
        self._by_name: dict[tuple[str, int, bytes | None], HostConfig] = {}

    def for_address(self, ip: str, port: int) -> tuple[HostConfig, ...]:
        key = (ip, port)
        found = self._by_addr.get(key)
        if found is None:
            exact = tuple(v.host for v in self.vhosts if _addr_match(v.addresses, ip, port, True))
            found = exact or tuple(
                v.host for v in self.vhosts if _addr_match(v.addresses, ip, port, False))
            self._by_addr[key] = found
        return found

    def default(self, ip: str, port: int) -> HostConfig:
        hosts = self.for_address(ip, port)
        return hosts[0] if hosts else self.main

    def by_name(self, ip: str, port: int, host: bytes | None) -> HostConfig:
        key = (ip, port, host)
        found = self._by_name.get(key)
        if found is None:
            found = self._select(ip, port, host)
            if len(self._by_name) >= NAME_CACHE:
                self._by_name.clear()  # any thread: a dict clear is atomic
            self._by_name[key] = found
        return found

    def _select(self, ip: str, port: int, host: bytes | None) -> HostConfig:
        hosts = self.for_address(ip, port)
        if not hosts:
            return self.main
        if host:
            name = strip_port(host).decode("ascii", "replace").lower()
            for h in hosts:
                if name_matches(h, name):
                    return h
        return hosts[0]


def name_matches(host: HostConfig, name: str) -> bool:
    from fnmatch import fnmatchcase

    if host.server_name and strip_port(host.server_name.encode()).decode().lower() == name:
        return True
    return any(fnmatchcase(name, alias.lower()) for alias in host.server_aliases)


def strip_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[1:end] if end > 0 else host
    return host.rsplit(b":", 1)[0] if b":" in host else host


def _addr_match(addresses: tuple[tuple[str, int], ...], ip: str, port: int, exact: bool) -> bool:
    for host, p in addresses:
        if p not in (0, port):
            continue
        if exact and host == ip:
            return True
        if not exact and host in ("*", "_default_", ""):
            return True
    return False
