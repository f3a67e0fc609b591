"""``proxympm -S``: a loaded configuration, written out for a human, like ``httpd -S``.

Shows what will happen, not what was written: listeners, each host with its
names, its routes in the order they are matched (inherited ones included) with
their non-default worker parameters, its reverse rules and TLS, and the MPM
numbers after mpm_event's corrections.
"""

from __future__ import annotations

import dataclasses

from proxympm.config.loader import vhost_address
from proxympm.config.model import (
    Access,
    Balancer,
    HostConfig,
    Listen,
    ProxyRoute,
    ServerConfig,
    WorkerParams,
)

_DEFAULT_PARAMS = WorkerParams()


def _listen(listen: Listen) -> str:
    host = f"[{listen.host}]" if ":" in listen.host else (listen.host or "*")
    pp = ", PROXY protocol required" if listen.proxy_protocol else ""
    return f"{host}:{listen.port} {listen.protocol}{pp}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _params(params: WorkerParams) -> str:
    shown = []
    for f in dataclasses.fields(WorkerParams):
        value = getattr(params, f.name)
        if value == getattr(_DEFAULT_PARAMS, f.name):
            continue
        if isinstance(value, bool):
            shown.append(f"{f.name}={'On' if value else 'Off'}")
        elif isinstance(value, str):
            shown.append(f"{f.name}={value}")
        else:
            shown.append(f"{f.name}={_number(value)}")
    return " ".join(shown)


def _route(route: ProxyRoute) -> str:
    if route.url is None:
        text = f"{route.path} -> ! (not proxied)"
    else:
        text = f"{route.path} -> {route.url}"
        params = _params(route.params)
        if params:
            text += f" {params}"
    return f"{text}  ({route.where})" if route.where else text


def _require(access: Access | None) -> str:
    """A Location's Require lines, written back (RequireAny)."""
    if access is None:
        return "open to all"
    words = []
    if access.all_granted:
        words.append("all granted")
    if access.local:
        words.append("local")
    if access.networks:
        words.append("ip " + " ".join(access.networks))
    return "Require " + (" | ".join(words) if words else "all denied")


def _host_lines(host: HostConfig, indent: str) -> list[str]:
    lines = [f"{indent}ServerName: {host.server_name or '(none)'}"]
    if host.server_aliases:
        lines.append(f"{indent}ServerAlias: {' '.join(host.server_aliases)}")
    for h in host.handlers:
        lines.append(f"{indent}Handler: {h.path} -> {h.handler}, {_require(h.access)}  "
                     f"({h.where})")
    if host.routes:
        lines.append(f"{indent}Routes, in match order:")
        lines += [f"{indent}  {_route(r)}" + (f"  [{_require(r.access)}]" if r.access else "")
                  for r in host.routes]
    else:
        lines.append(f"{indent}Routes: none")
    for rule in host.reverse_rules:
        lines.append(f"{indent}ProxyPassReverse {rule.path} {rule.url}  ({rule.where})")
    tls = host.tls
    if tls.engine:
        lines.append(
            f"{indent}TLS: on, {' '.join(tls.protocols)}, certificate {tls.certificate_file}"
            + (f", key {tls.certificate_key_file}" if tls.certificate_key_file else "")
        )
    ptls = host.proxy_tls
    if ptls.engine:
        trust = ptls.ca_certificate_file or "system trust store"
        lines.append(
            f"{indent}TLS to backends: on, {' '.join(ptls.protocols)}, verify {ptls.verify} "
            f"({trust}), peer name check {'on' if ptls.check_peer_name else 'off'}"
            + (
                f", client certificate {ptls.machine_certificate_file}"
                if ptls.machine_certificate_file
                else ""
            )
        )
    if host.remote_ip_header:
        proxies = ", ".join(f"{net}{' (internal)' if internal else ''}"
                            for net, internal in host.remote_ip_proxies) or "every peer"
        lines.append(f"{indent}Client address from {host.remote_ip_header}, believed from: "
                     f"{proxies}")
    if host.add_forwarded:
        lines.append(f"{indent}Forwarded (RFC 7239) sent to backends")
    rules = [("", r) for r in host.header_rules]
    rules += [(f" in <Location {p.decode('latin-1')}>", r)
              for p, rs in host.location_header_rules for r in rs]
    for place, rule in rules:
        which = "RequestHeader" if rule.request else "Header always" if rule.always else "Header"
        what = (rule.name.decode("latin-1") if rule.name
                else repr(rule.pattern.pattern if rule.pattern else b""))
        lines.append(f"{indent}{which} {rule.action} {what}{place}  ({rule.where})")
    timeouts = f"Timeout {_number(host.timeout)}"
    if host.proxy_timeout is not None:
        timeouts += f", ProxyTimeout {_number(host.proxy_timeout)}"
    if host.websocket_idle_timeout:
        timeouts += f", ProxyWebsocketIdleTimeout {_number(host.websocket_idle_timeout)}"
    keepalive = (
        f"KeepAlive On ({_number(host.keepalive_timeout)}s, "
        f"{host.max_keepalive_requests or 'unlimited'} requests)"
        if host.keepalive
        else "KeepAlive Off"
    )
    lines.append(f"{indent}{timeouts}; {keepalive}")
    for log in host.custom_logs:
        lines.append(f'{indent}CustomLog {log.target} "{log.format}"')
    lines.append(f"{indent}ErrorLog {host.error_log}")
    return lines


def _balancer_lines(balancer: Balancer) -> list[str]:
    settings = balancer.settings
    shown = [f"lbmethod={settings.lbmethod}", f"timeout={_number(settings.timeout)}"]
    if settings.maxattempts is not None:
        shown.append(f"maxattempts={settings.maxattempts}")
    if settings.nofailover:
        shown.append("nofailover=On")
    if settings.failonstatus:
        shown.append("failonstatus=" + ",".join(map(str, settings.failonstatus)))
    if settings.failontimeout:
        shown.append("failontimeout=On")
    if not settings.forcerecovery:
        shown.append("forcerecovery=Off")
    if settings.stickysession:
        shown.append(f"stickysession={settings.stickysession}")
        if settings.stickysessionsep != ".":
            shown.append(f"stickysessionsep={settings.stickysessionsep or 'Off'}")
        if settings.scolonpathdelim:
            shown.append("scolonpathdelim=On")
    where = f"  ({balancer.where})" if balancer.where else ""
    lines = [f"Balancer {balancer.name}: {' '.join(shown)}{where}"]
    for m in balancer.members:
        params = _params(m.params)
        lines.append(f"  BalancerMember {m.url}{' ' + params if params else ''}  ({m.where})")
        if m.params.hcmethod:
            p = m.params
            lines.append(f"    health check: {p.hcmethod} {p.hcuri or '(member URL)'} every "
                         f"{_number(p.hcinterval)}s, out after {p.hcfails} failed, back "
                         f"after {p.hcpasses} good" + (f", passes if {p.hcexpr}" if p.hcexpr
                                                       else ", passes on 2xx/3xx"))
    if not balancer.members:
        lines.append("  (no members: requests get 503)")
    return lines


def describe(config: ServerConfig) -> str:
    """The configuration as ``proxympm -S`` prints it."""
    lines = [
        f'ServerRoot: "{config.server_root}"',
        f'Main config: "{config.config_file}"',
        f'PidFile: "{config.pid_file}"',
        f'ErrorLog: "{config.error_log}", LogLevel {config.log_level}'
        + "".join(f" {m}:{level}" for m, level in config.module_log_levels),
    ]
    if config.defines:
        lines.append(f"Define: {' '.join(config.defines)}")
    lines.append("Listen:")
    lines += [f"  {_listen(listen)}  ({listen.where})" for listen in config.listens]
    lines.append("Main server:")
    lines += _host_lines(config.main, "  ")
    if config.vhosts:
        lines.append("VirtualHost configuration:")
    for vhost in config.vhosts:
        addresses = " ".join(vhost_address(h, p) for h, p in vhost.addresses)
        lines.append(f"  <VirtualHost {addresses}>  ({vhost.host.where})")
        lines += _host_lines(vhost.host, "    ")
    for balancer in config.balancers:
        lines += _balancer_lines(balancer)
    for name, expr in config.hc_exprs:
        lines.append(f"ProxyHCExpr {name} {{{expr}}}")
    servers = " ".join(config.dns_servers) or "from /etc/resolv.conf"
    lines.append(f"Upstream DNS: servers {servers}, TTL floor "
                 f"{_number(config.dns_ttl_floor)}s, ceiling {_number(config.dns_ttl_ceiling)}s")
    processes = config.max_request_workers // config.threads_per_child
    lines += [
        "MPM event:",
        f"  StartServers {config.start_servers}, ServerLimit {config.server_limit}, "
        f"ThreadsPerChild {config.threads_per_child}, ThreadLimit {config.thread_limit}",
        f"  MaxRequestWorkers {config.max_request_workers} (at most {processes} child processes)",
        f"  MinSpareThreads {config.min_spare_threads}, MaxSpareThreads {config.max_spare_threads}",
        f"  MaxConnectionsPerChild {config.max_connections_per_child or '0 (unlimited)'}, "
        f"AsyncRequestWorkerFactor {_number(config.async_request_worker_factor)}, "
        f"ListenBacklog {config.listen_backlog}",
        f"  GracefulShutdownTimeout {_number(config.graceful_shutdown_timeout)}"
        + (" (wait indefinitely)" if not config.graceful_shutdown_timeout else ""),
    ]
    if config.warnings:
        lines.append("Warnings:")
        lines += [f"  {w}" for w in config.warnings]
    return "\n".join(lines) + "\n"
