"""The mutable scopes directives write into while a configuration is loaded.

A ``Scope`` is where a directive stands: the server, the host (main server or a
``<VirtualHost>``), and the ``<Location>`` if any. Directive declarations store
their converted values here; the loader then merges vhosts over the main server
and freezes everything into the immutable ``proxympm.config.model`` objects.
Only the loader's thread (the arbiter, before forking) ever touches these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from proxympm.config.model import (
    Access,
    BalancerMember,
    HeaderRule,
    Listen,
    ProxyRoute,
    ReverseRule,
)


class Context(enum.Flag):
    """Where a directive may appear."""

    SERVER = enum.auto()  # the main server, outside any section
    VIRTUALHOST = enum.auto()  # directly inside <VirtualHost>
    LOCATION = enum.auto()  # inside <Location>
    PROXY = enum.auto()  # inside <Proxy balancer://...>


@dataclass(slots=True)
class LocationScope:
    """One ``<Location path>`` section: at most one ProxyPass (a later one replaces)."""

    path: str
    where: str
    route: ProxyRoute | None = None
    reverse_rules: list[ReverseRule] = field(default_factory=list)
    header_rules: list[HeaderRule] = field(default_factory=list)  # Header, RequestHeader
    handler: str | None = None  # SetHandler
    handler_where: str = ""
    require: list[Access] = field(default_factory=list)  # one per Require line


@dataclass(slots=True)
class LogEntry:
    """A CustomLog or TransferLog, its format resolved once the file is read."""

    target: str
    format: str | None  # a format or a nickname; None: TransferLog's default format
    where: str


@dataclass(slots=True)
class HostScope:
    """What one host (main server or vhost) set explicitly."""

    where: str
    settings: dict[str, object] = field(default_factory=dict)  # HostConfig fields
    tls: dict[str, object] = field(default_factory=dict)  # TLSSettings fields
    proxy_tls: dict[str, object] = field(default_factory=dict)  # ProxyTLSSettings fields
    set_at: dict[str, str] = field(default_factory=dict)  # field -> "file:line"
    aliases: list[str] = field(default_factory=list)
    routes: list[ProxyRoute] = field(default_factory=list)
    reverse_rules: list[ReverseRule] = field(default_factory=list)
    locations: list[LocationScope] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # LogFormat nicknames
    default_format: str | None = None  # LogFormat without nickname, for TransferLog
    inherit_routes: bool | None = None  # ProxyPassInherit
    header_rules: list[HeaderRule] = field(default_factory=list)  # Header, RequestHeader


@dataclass(slots=True)
class BalancerScope:
    """One balancer, from its ``<Proxy>``, BalancerMember, ProxySet and ProxyPass lines."""

    name: str  # "balancer://name"
    where: str
    members: list[BalancerMember] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)  # BalancerSettings fields


@dataclass(slots=True)
class VirtualHostScope:
    addresses: tuple[tuple[str, int], ...]
    host: HostScope


@dataclass(slots=True)
class ServerScope:
    """Server-wide settings, the main host and the vhosts in config order."""

    main: HostScope
    settings: dict[str, object] = field(default_factory=dict)  # ServerConfig fields
    listens: list[Listen] = field(default_factory=list)
    module_log_levels: dict[str, str] = field(default_factory=dict)
    vhosts: list[VirtualHostScope] = field(default_factory=list)
    balancers: dict[str, BalancerScope] = field(default_factory=dict)  # by name


@dataclass(frozen=True, slots=True)
class Scope:
    server: ServerScope
    host: HostScope
    context: Context
    location: LocationScope | None = None
    balancer: BalancerScope | None = None  # inside <Proxy balancer://...>

    def balancer_named(self, name: str, where: str) -> BalancerScope:
        """The balancer called ``name``, created on first mention (as httpd does)."""
        found = self.server.balancers.get(name)
        if found is None:
            found = self.server.balancers[name] = BalancerScope(name, where)
        return found
