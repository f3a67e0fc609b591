"""Where converted directive values go: the stores of the declaration table.

A store puts one directive's value into the current ``Scope``; a section's
store returns the scope its children are read in.
"""

from __future__ import annotations

from typing import Any

from proxympm.config.converters import Invocation
from proxympm.config.declaration import Store
from proxympm.config.errors import DirectiveError
from proxympm.config.model import (
    DEFAULT_DNS_TTL_CEILING,
    DEFAULT_DNS_TTL_FLOOR,
    ReadStage,
)
from proxympm.config.scope import (
    Context,
    HostScope,
    LocationScope,
    LogEntry,
    Scope,
    VirtualHostScope,
)


def server(field: str) -> Store:
    """Set a ``ServerConfig`` field."""

    def store(scope: Scope, inv: Invocation, value: Any) -> None:
        scope.server.settings[field] = value

    return store


def host(field: str) -> Store:
    """Set a ``HostConfig`` field of the current host."""

    def store(scope: Scope, inv: Invocation, value: Any) -> None:
        scope.host.settings[field] = value
        scope.host.set_at[field] = inv.where

    return store


def tls(field: str) -> Store:
    """Set a ``TLSSettings`` field of the current host."""

    def store(scope: Scope, inv: Invocation, value: Any) -> None:
        scope.host.tls[field] = value
        scope.host.set_at[f"tls.{field}"] = inv.where
        if field == "engine":
            scope.host.tls["where"] = inv.where

    return store


def proxy_tls(field: str) -> Store:
    """Set a ``ProxyTLSSettings`` field of the current host."""

    def store(scope: Scope, inv: Invocation, value: Any) -> None:
        scope.host.proxy_tls[field] = value
        scope.host.set_at[f"proxy_tls.{field}"] = inv.where
        if field == "engine":
            scope.host.proxy_tls["where"] = inv.where

    return store


def certificate(field: str) -> Store:
    """A certificate or key file: one per host (httpd allows an RSA and an EC pair)."""
    plain = tls(field)

    def store(scope: Scope, inv: Invocation, value: Any) -> None:
        if field in scope.host.tls:
            raise DirectiveError(
                f"{inv.name} is already set at {scope.host.set_at['tls.' + field]}: "
                "proxympm takes one certificate and key per host"
            )
        plain(scope, inv, value)

    return store


def nothing(scope: Scope, inv: Invocation, value: Any) -> None:
    return None


def ignored_user(scope: Scope, inv: Invocation, value: Any) -> None:
    inv.warn(
        f"{inv.name} is ignored: proxympm does not switch users; "
        "start it as the user it should run as"
    )


def listen(scope: Scope, inv: Invocation, value: Any) -> None:
    for known in scope.server.listens:
        if (known.host, known.port) == (value.host, value.port):
            raise DirectiveError("Cannot define multiple Listeners on the same IP:port")
    scope.server.listens.append(value)


def server_alias(scope: Scope, inv: Invocation, value: Any) -> None:
    if scope.context is Context.SERVER:
        raise DirectiveError("ServerAlias only used in <VirtualHost>")
    scope.host.aliases.extend(value)


def proxy_pass(scope: Scope, inv: Invocation, value: Any) -> None:
    if value.url is not None and value.url[:11].lower() == "balancer://":
        name = "balancer://" + value.url[11:].split("/", 1)[0].lower()
        scope.balancer_named(name, inv.where).settings.update(value.balancer_settings)
    if scope.location is None:
        scope.host.routes.append(value)
        return
    if scope.location.route is not None:
        inv.warn(
            f"ProxyPass replaces the one at {scope.location.route.where}: "
            "a <Location> holds one ProxyPass"
        )
    scope.location.route = value


def proxy_section(scope: Scope, inv: Invocation, value: Any) -> Scope:
    balancer = scope.balancer_named(value, inv.where)
    if not balancer.where or balancer.where == "-":
        balancer.where = inv.where
    return Scope(scope.server, scope.host, Context.PROXY, balancer=balancer)


def _balancer_for(scope: Scope, inv: Invocation, name: str | None) -> Any:
    if name is not None:
        if scope.balancer is not None and scope.balancer.name != name:
            raise DirectiveError(f"{inv.name}: balancer {name} given inside "
                                 f"<Proxy {scope.balancer.name}>")
        return scope.balancer_named(name, inv.where)
    if scope.balancer is None:
        raise DirectiveError(f"{inv.name} must define balancer name when outside <Proxy> "
                             "section")
    return scope.balancer


def balancer_member(scope: Scope, inv: Invocation, value: Any) -> None:
    name, member = value
    balancer = _balancer_for(scope, inv, name)
    for known in balancer.members:
        if known.url.lower() == member.url.lower():
            raise DirectiveError(f"BalancerMember {member.url} is already a member of "
                                 f"{balancer.name} (at {known.where})")
    balancer.members.append(member)


def proxy_set(scope: Scope, inv: Invocation, value: Any) -> None:
    name, settings = value
    _balancer_for(scope, inv, name).settings.update(settings)


def hc_expr(scope: Scope, inv: Invocation, value: Any) -> None:
    name, text = value
    exprs = dict(scope.server.settings.get("hc_exprs", ()))  # type: ignore[arg-type]
    exprs[name] = text  # a later one of the same name wins, as in httpd
    scope.server.settings["hc_exprs"] = tuple(exprs.items())


def proxy_pass_reverse(scope: Scope, inv: Invocation, value: Any) -> None:
    target = scope.location.reverse_rules if scope.location else scope.host.reverse_rules
    target.append(value)


def dns_ttl(scope: Scope, inv: Invocation, value: Any) -> None:
    """ProxyDNSTTLFloor / ProxyDNSTTLCeiling: the floor may not exceed the ceiling;
    the line that makes them cross is the one reported."""
    floor = inv.name.lower().endswith("floor")
    field = "dns_ttl_floor" if floor else "dns_ttl_ceiling"
    other = "dns_ttl_ceiling" if floor else "dns_ttl_floor"
    settings = scope.server.settings
    bound = settings.get(other, DEFAULT_DNS_TTL_CEILING if floor else DEFAULT_DNS_TTL_FLOOR)
    low, high = (value, bound) if floor else (bound, value)
    if low > high:  # type: ignore[operator]
        raise DirectiveError(f"{inv.name} {inv.args[0]}: ProxyDNSTTLFloor ({low:g}s) must not "
                             f"exceed ProxyDNSTTLCeiling ({high:g}s)")
    settings[field] = value


def proxy_pass_inherit(scope: Scope, inv: Invocation, value: Any) -> None:
    scope.host.inherit_routes = value


def log_level(scope: Scope, inv: Invocation, value: Any) -> None:
    if scope.context is Context.VIRTUALHOST:
        inv.warn("LogLevel in <VirtualHost> is ignored: the server-wide LogLevel applies")
        return
    overall, modules = value
    if overall is not None:
        server("log_level")(scope, inv, overall)
    scope.server.module_log_levels.update(modules)


def log_format(scope: Scope, inv: Invocation, value: Any) -> None:
    fmt, nickname = value
    if nickname is None:
        scope.host.default_format = fmt
    else:
        scope.host.formats[nickname] = fmt


def custom_log(scope: Scope, inv: Invocation, value: Any) -> None:
    target, fmt = value
    scope.host.logs.append(LogEntry(target, fmt, inv.where))


def transfer_log(scope: Scope, inv: Invocation, value: Any) -> None:
    scope.host.logs.append(LogEntry(value, None, inv.where))


def virtual_host(scope: Scope, inv: Invocation, value: Any) -> Scope:
    host = HostScope(where=inv.where)
    scope.server.vhosts.append(VirtualHostScope(value, host))
    return Scope(scope.server, host, Context.VIRTUALHOST)


def location(scope: Scope, inv: Invocation, value: Any) -> Scope:
    section = LocationScope(path=value, where=inv.where)
    scope.host.locations.append(section)
    return Scope(scope.server, scope.host, Context.LOCATION, section)


def set_handler(scope: Scope, inv: Invocation, value: Any) -> None:
    assert scope.location is not None
    scope.location.handler = value
    scope.location.handler_where = inv.where


def require(scope: Scope, inv: Invocation, value: Any) -> None:
    assert scope.location is not None
    scope.location.require.append(value)


def read_timeout(scope: Scope, inv: Invocation, value: Any) -> None:
    """RequestReadTimeout: the stages named replace those set before; the stages a
    vhost does not name come from the main server (loader), as mod_reqtimeout merges."""
    stages = scope.host.settings.setdefault("read_timeout", {})
    stages.update({name: ReadStage(*stage) for name, stage in value.items()})
    scope.host.set_at["read_timeout"] = inv.where


def header_rule(scope: Scope, inv: Invocation, value: Any) -> None:
    """Header/RequestHeader: kept in configuration order, per host or <Location>."""
    target = scope.location.header_rules if scope.location else scope.host.header_rules
    target.append(value)


def remote_ip_proxies(internal: bool) -> Store:
    """RemoteIPTrustedProxy/RemoteIPInternalProxy[List]: lines add up within a host;
    a vhost that names none uses the main server's (mod_remoteip's merge)."""

    def store(scope: Scope, inv: Invocation, value: Any) -> None:
        known = scope.host.settings.get("remote_ip_proxies", ())
        scope.host.settings["remote_ip_proxies"] = (
            *known, *((net, internal) for net in value))  # type: ignore[misc]
        scope.host.set_at["remote_ip_proxies"] = inv.where

    return store


def proxy_protocol_exceptions(scope: Scope, inv: Invocation, value: Any) -> None:
    known = scope.host.settings.get("proxy_protocol_exceptions", ())
    scope.host.settings["proxy_protocol_exceptions"] = (*known, *value)  # type: ignore[misc]
    scope.host.set_at["proxy_protocol_exceptions"] = inv.where
