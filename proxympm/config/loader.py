"""From a config file name to a checked, immutable ``ServerConfig``.

Three steps, as httpd does them:

1. read: ``grammar.Reader`` turns the files into a tree (Include, Define and the
   ``<If...>`` sections are done by then);
2. walk: every node is looked up in the declaration table, checked for context
   and arity, converted, and stored into a mutable ``Scope``;
3. build: vhosts are merged over the main server, access-log nicknames are
   resolved, the MPM numbers are clamped as mpm_event's ``check_config`` does
   (with its warnings), and the cross-checks run (listeners, TLS certificates,
   SSLProxyEngine for https:// backends).

Runs in the arbiter before anything forks; nothing here is shared afterwards.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from proxympm.config.converters import Invocation
from proxympm.config.declaration import Declaration, check_arity
from proxympm.config.directives import lookup, spelling
from proxympm.config.errors import ConfigError, DirectiveError
from proxympm.config.grammar import Node, Reader, Section
from proxympm.config.model import (
    COMBINED_LOG_FORMAT,
    COMMON_LOG_FORMAT,
    Access,
    Balancer,
    BalancerSettings,
    CustomLog,
    HandlerLocation,
    HeaderRule,
    HostConfig,
    Listen,
    ProxyRoute,
    ReverseRule,
    ServerConfig,
    VirtualHost,
)
from proxympm.config.mpm_limits import clamp_mpm
from proxympm.config.scope import Context, HostScope, Scope, ServerScope

DEFAULT_PID_FILE = "logs/httpd.pid"
DEFAULT_ERROR_LOG = "logs/error_log"
PREDEFINED_FORMATS = {"common": COMMON_LOG_FORMAT, "combined": COMBINED_LOG_FORMAT}

# HostConfig fields a vhost takes from the main server when it does not set them.
_INHERITED = (
    "server_name", "preserve_host", "add_headers", "via", "proxy_timeout",
    "websocket_idle_timeout", "timeout",
    "keepalive", "keepalive_timeout", "max_keepalive_requests", "limit_request_line",
    "limit_request_fields", "limit_request_field_size", "limit_request_body", "error_log",
    "read_timeout", "remote_ip_header", "remote_ip_proxies_header", "remote_ip_proxies",
    "proxy_protocol", "proxy_protocol_exceptions", "add_forwarded",
)  # fmt: skip


def load_config(
    path: str, defines: Sequence[str] = (), server_root: str | None = None
) -> ServerConfig:
    """Read, validate and build the configuration in ``path``.

    ``server_root`` is httpd's ``-d``: the initial ServerRoot (default: the current
    directory), which a ``ServerRoot`` directive in the file overrides. A relative
    ``path`` is taken relative to it, as httpd's ``-f``. ``defines`` are ``-D``
    names. Raises ``ConfigError`` with httpd's wording and file:line.
    """
    root = os.path.abspath(server_root) if server_root else os.getcwd()
    config_file = os.path.normpath(os.path.join(root, path))
    reader = Reader(root, defines)
    tree = reader.read(config_file)
    root = reader.server_root
    warnings = list(reader.warnings)
    server = ServerScope(main=HostScope(where=""))
    _walk(tree, Scope(server, server.main, Context.SERVER), root, warnings)
    balancers = _balancers(server)
    for host_scope in (server.main, *(v.host for v in server.vhosts)):
        _check_locations(host_scope, warnings)
    main = _build_host(server.main, None, None, root, balancers)
    vhosts = tuple(
        VirtualHost(v.addresses, _build_host(v.host, server.main, main, root, balancers))
        for v in server.vhosts
    )
    _check_listeners(server.listens, config_file, reader.line_counts.get(config_file, 0))
    listens = _mark_proxy_protocol(server.listens, main, vhosts)
    _check_certificates(server, main, vhosts)
    _check_proxy_tls(main, vhosts, balancers)
    _check_hc_exprs(balancers, dict(server.settings.get("hc_exprs", ())))  # type: ignore[arg-type]
    settings = dict(server.settings)
    settings.update(clamp_mpm(settings, warnings))
    settings.setdefault("pid_file", os.path.join(root, DEFAULT_PID_FILE))
    return ServerConfig(
        config_file=config_file,
        server_root=root,
        listens=listens,
        main=main,
        vhosts=vhosts,
        balancers=tuple(balancers.values()),
        error_log=main.error_log or os.path.join(root, DEFAULT_ERROR_LOG),
        module_log_levels=tuple(server.module_log_levels.items()),
        defines=tuple(reader.define_names),
        warnings=tuple(warnings),
        **settings,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------
# Walking the tree


def _walk(nodes: Sequence[Node], scope: Scope, root: str, warnings: list[str]) -> None:
    for node in nodes:
        key = f"<{node.name}" if isinstance(node, Section) else node.name
        declaration = lookup(key)
        if declaration is None:
            raise ConfigError(
                f"Invalid command '{key}', perhaps misspelled or defined by a module not "
                "included in the server configuration",
                node.file,
                node.line,
            )
        written = spelling(key)
        name = declaration.display_name if written == declaration.name else written
        invocation = Invocation(
            name=name,
            args=node.args,
            file=node.file,
            line=node.line,
            server_root=root,
            location=scope.location.path if scope.location else None,
            warnings=warnings,
        )
        try:
            _check_context(declaration, scope.context, name)
            check_arity(declaration, node.args, name)
            if name != declaration.display_name:
                invocation.warn(f"{name} is deprecated, use {declaration.name} instead.")
            value = declaration.convert(invocation)
            inner = declaration.store(scope, invocation, value)
        except DirectiveError as e:
            raise ConfigError(e.message, node.file, node.line) from None
        if isinstance(node, Section):
            assert inner is not None
            _walk(node.children, inner, root, warnings)


def _check_context(declaration: Declaration, context: Context, name: str) -> None:
    """httpd's ``ap_check_cmd_context`` and ``invoke_cmd`` override wording."""
    if context in declaration.contexts:
        return
    if context is Context.VIRTUALHOST:
        if declaration.section and declaration.name == "VirtualHost":
            raise DirectiveError("<VirtualHost> doesn't nest!")
        raise DirectiveError(f"{name} cannot occur within <VirtualHost> section")
    if declaration.section:
        raise DirectiveError(f"{name} cannot occur within <Directory/Location/Files> section")
    raise DirectiveError(f"{name} not allowed here")


# ---------------------------------------------------------------------------
# Building hosts


def _balancers(server: ServerScope) -> dict[str, Balancer]:
    return {
        name: Balancer(name, tuple(b.members), BalancerSettings(**b.settings),  # type: ignore[arg-type]
                       b.where)
        for name, b in server.balancers.items()
    }


def _build_host(
    scope: HostScope, main_scope: HostScope | None, main: HostConfig | None, root: str,
    balancers: dict[str, Balancer] | None = None,
) -> HostConfig:
    """Freeze one host; a vhost (``main`` given) takes unset values from ``main``."""
    base = main or HostConfig(error_log=os.path.join(root, DEFAULT_ERROR_LOG))
    inherited = {f: scope.settings.get(f, getattr(base, f)) for f in _INHERITED}
    stages = scope.settings.get("read_timeout")  # only the stages this host names
    inherited["read_timeout"] = dataclasses.replace(base.read_timeout, **stages or {})
    return HostConfig(
        server_aliases=tuple(scope.aliases),
        routes=_routes(scope, main_scope),
        reverse_rules=_reverse_rules(scope, main_scope, balancers or {}),
        tls=dataclasses.replace(base.tls, **scope.tls),  # type: ignore[arg-type]
        proxy_tls=dataclasses.replace(base.proxy_tls, **scope.proxy_tls),  # type: ignore[arg-type]
        custom_logs=_custom_logs(scope, main_scope, main),
        header_rules=(*(main.header_rules if main else ()), *scope.header_rules),
        location_header_rules=_location_header_rules(scope, main_scope),
        handlers=_handlers(scope, main_scope),
        where=scope.where,
        **inherited,  # type: ignore[arg-type]
    )


def _location_header_rules(
    scope: HostScope, main: HostScope | None
) -> tuple[tuple[bytes, tuple[HeaderRule, ...]], ...]:
    """Locations with header rules, in httpd's merge order: the main server's
    sections first, then the vhost's (core's merge appends ``sec_url``)."""
    hosts = [scope] if main is None else [main, scope]
    return tuple((loc.path.encode("latin-1"), tuple(loc.header_rules))
                 for h in hosts for loc in h.locations if loc.header_rules)


def _location_routes(scope: HostScope) -> list[ProxyRoute]:
    # httpd merges matching <Location>s in config order, so the last one wins:
    # tried first-match, they go in reverse.
    return [dataclasses.replace(loc.route, access=_access(loc.require)) if loc.require
            else loc.route
            for loc in reversed(scope.locations) if loc.route is not None]


def _access(rules: list[Access]) -> Access | None:
    """Several Require lines: one Access that grants if any of them does."""
    if not rules:
        return None
    return Access(
        all_granted=any(r.all_granted for r in rules),
        local=any(r.local for r in rules),
        networks=tuple(n for r in rules for n in r.networks),
        where=rules[0].where,
    )


def _handlers(scope: HostScope, main: HostScope | None) -> tuple[HandlerLocation, ...]:
    """SetHandler Locations in match order: the vhost's, then the main server's, each
    last-first (httpd merges the main server's Locations into every vhost)."""
    hosts = [scope] if main is None else [scope, main]
    return tuple(
        HandlerLocation(loc.path, loc.handler, _access(loc.require), loc.handler_where)
        for h in hosts for loc in reversed(h.locations) if loc.handler is not None
    )


def _check_locations(scope: HostScope, warnings: list[str]) -> None:
    for loc in scope.locations:
        if loc.handler is not None and loc.route is not None:
            file, line = _split_where(loc.handler_where)
            raise ConfigError(f"SetHandler and ProxyPass (at {loc.route.where}) in the same "
                              f"<Location {loc.path}>: choose one", file, line)
        if loc.require and loc.handler is None and loc.route is None:
            file, line = _split_where(loc.require[0].where)
            raise ConfigError(f"Require in <Location {loc.path}> protects nothing: proxympm "
                              "applies it to the Location's SetHandler or ProxyPass, and "
                              "this one has neither", file, line)
        if loc.handler is not None and not loc.require:
            warnings.append(f"<Location {loc.path}> (SetHandler {loc.handler}) has no "
                            f"Require: it is open to every client ({loc.handler_where})")


def _routes(scope: HostScope, main: HostScope | None) -> tuple[ProxyRoute, ...]:
    """Match order: Location rules, then server rules (a vhost's after the main's)."""
    if main is None:
        return (*_location_routes(scope), *scope.routes)
    inherit = scope.inherit_routes
    if inherit is None:
        inherit = main.inherit_routes is not False
    server_level = [*main.routes, *scope.routes] if inherit else scope.routes
    return (*_location_routes(scope), *_location_routes(main), *server_level)


def _reverse_rules(
    scope: HostScope, main: HostScope | None, balancers: dict[str, Balancer]
) -> tuple[ReverseRule, ...]:
    hosts = [scope] if main is None else [main, scope]
    rules = [r for h in hosts for r in h.reverse_rules]
    rules += [r for h in hosts for loc in h.locations for r in loc.reverse_rules]
    return tuple(x for r in rules for x in _expand_balancer(r, balancers))


def _expand_balancer(rule: ReverseRule, balancers: dict[str, Balancer]) -> list[ReverseRule]:
    """``ProxyPassReverse /p balancer://name/x`` means one rule per member URL + ``/x``
    (httpd's ``ap_proxy_location_reverse_map`` walks the members the same way)."""
    if rule.url[:11].lower() != "balancer://":
        return [rule]
    name, _, rest = rule.url[11:].partition("/")
    balancer = balancers.get("balancer://" + name.lower())
    if balancer is None or not balancer.members:
        return [rule]
    return [dataclasses.replace(rule, url=f"{m.url}/{rest}" if rest or rule.url.endswith("/")
                                else m.url)
            for m in balancer.members]


def _custom_logs(
    scope: HostScope, main_scope: HostScope | None, main: HostConfig | None
) -> tuple[CustomLog, ...]:
    """Access logs with nicknames resolved (mod_log_config's ``open_multi_logs``)."""
    if not scope.logs and main is not None:
        return main.custom_logs
    formats = dict(PREDEFINED_FORMATS)
    default = scope.default_format
    if main_scope is not None:
        formats.update(main_scope.formats)
        default = default or main_scope.default_format
    formats.update(scope.formats)
    logs = []
    for entry in scope.logs:
        wanted = entry.format if entry.format is not None else default
        fmt = COMMON_LOG_FORMAT if wanted is None else formats.get(wanted, wanted)
        logs.append(CustomLog(target=entry.target, format=fmt, where=entry.where))
    return tuple(logs)


# ---------------------------------------------------------------------------
# Cross-checks


def _split_where(where: str) -> tuple[str, int]:
    file, _, line = where.rpartition(":")
    return file, int(line)


def _address(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else (host or "*")
    return f"{shown}:{port}"


def vhost_address(host: str, port: int) -> str:
    """``<VirtualHost>`` address as written back: port 0 is ``*``."""
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port or '*'}"


def _overlaps(a: Listen, b: Listen) -> bool:
    """Two listeners that cannot both bind: same port, one a wildcard covering the other."""
    if a.port != b.port:
        return False
    hosts = {a.host, b.host}
    if "" in hosts:
        return True
    if "0.0.0.0" in hosts:
        return all(":" not in h for h in hosts)
    if "::" in hosts:
        return all(":" in h for h in hosts)
    return False


def _check_listeners(listens: list[Listen], config_file: str, last_line: int) -> None:
    if not listens:
        raise ConfigError(
            "no listening sockets available, shutting down", config_file, max(last_line, 1)
        )
    for index, later in enumerate(listens):
        for earlier in listens[:index]:
            if _overlaps(earlier, later):
                file, line = _split_where(later.where)
                raise ConfigError(
                    "(98)Address already in use: AH00072: make_sock: could not bind to "
                    f"address {_address(later.host, later.port)} (Listen "
                    f"{_address(earlier.host, earlier.port)} at {earlier.where} covers it)",
                    file,
                    line,
                )


def _mark_proxy_protocol(listens: list[Listen], main: HostConfig,
                         vhosts: tuple[VirtualHost, ...]) -> tuple[Listen, ...]:
    """RemoteIPProxyProtocol is per address (httpd 2.4.31+): a Listen needs the PROXY
    header when a host that may answer on it has it on. A host answers on a Listen
    when it is a vhost whose address covers it, or the main server when none does."""
    marked = []
    for spec in listens:
        ip = spec.family_host
        bound = [v.host for v in vhosts
                 if any(p in (0, spec.port)
                        and (not spec.host or h in ("*", "_default_", "", spec.host, ip))
                        for h, p in v.addresses)]
        hosts = [h for h in (bound or [main]) if h.proxy_protocol]
        exceptions = tuple(dict.fromkeys(n for h in hosts for n in h.proxy_protocol_exceptions))
        marked.append(dataclasses.replace(spec, proxy_protocol=True, proxy_exceptions=exceptions)
                      if hosts else spec)
    return tuple(marked)


def _check_certificates(
    server: ServerScope, main: HostConfig, vhosts: tuple[VirtualHost, ...]
) -> None:
    """mod_ssl's AH02572: every host with SSLEngine on needs a certificate."""
    hosts = [(main, server.main.set_at.get("tls.engine", ""), "the main server")]
    hosts += [
        (v.host, v.host.where, " ".join(vhost_address(h, p) for h, p in v.addresses))
        for v in vhosts
    ]
    for host, where, label in hosts:
        if host.tls.engine and not host.tls.certificate_file:
            file, line = _split_where(where)
            name = host.server_name or label
            raise ConfigError(
                f"AH02572: Failed to configure at least one certificate and key for {name}: "
                "SSLEngine is on but no SSLCertificateFile is set",
                file,
                line,
            )


def _check_hc_exprs(balancers: dict[str, Balancer], exprs: dict[str, str]) -> None:
    """A member's ``hcexpr=NAME`` must name a ProxyHCExpr (httpd: AH03239)."""
    for balancer in balancers.values():
        for member in balancer.members:
            name = member.params.hcexpr
            if name and name not in exprs:
                file, line = _split_where(member.where)
                raise ConfigError(f"BalancerMember hcexpr '{name}' is not defined by a "
                                  "ProxyHCExpr", file, line)
            if name and not member.params.hcmethod:
                file, line = _split_where(member.where)
                raise ConfigError("BalancerMember hcexpr needs hcmethod GET, HEAD or "
                                  "OPTIONS (health checks are off without hcmethod)",
                                  file, line)


def _check_proxy_tls(main: HostConfig, vhosts: tuple[VirtualHost, ...],
                     balancers: dict[str, Balancer] | None = None) -> None:
    """An ``https://`` ProxyPass needs SSLProxyEngine on in the host that uses it.

    httpd starts with such a config and answers 500 (AH00961) to every request for
    the route; proxympm refuses it at the ProxyPass line instead. A vhost inherits
    the main server's routes (ProxyPassInherit) and its SSLProxyEngine, so an
    inherited route is checked against the vhost's own setting.
    """
    hosts = [(main, "the main server")]
    hosts += [
        (
            v.host,
            f"<VirtualHost {' '.join(vhost_address(h, p) for h, p in v.addresses)}> "
            f"at {v.host.where}",
        )
        for v in vhosts
    ]
    for host, label in hosts:
        if host.proxy_tls.engine:
            continue
        for route in host.routes:
            urls = [route.url] if route.url is not None else []
            if route.url is not None and route.url[:11].lower() == "balancer://":
                name = "balancer://" + route.url[11:].split("/", 1)[0].lower()
                found = (balancers or {}).get(name)
                urls = [m.url for m in found.members] if found else []
            for url in urls:
                if url[:8].lower() != "https://":
                    continue
                file, line = _split_where(route.where)
                raise ConfigError(
                    f"AH00961: ProxyPass to {url} needs SSLProxyEngine on in "
                    f"{label} (httpd would answer 500 to every request for it)",
                    file,
                    line,
                )
