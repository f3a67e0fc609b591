"""The watchdog: one process per server for the control-plane work of DESIGN.md.

The arbiter forks it (when the configuration gives it something to do) next to
the serving children and forks it again if it dies. It runs one asyncio loop with
its duties, today the active health checks of ``proxympm.proxy.health``, and
writes their results into the shared backend table that every child reads. The
checked members' names are resolved by a ``Resolver`` of its own (the children's
code, in a ``dns`` thread of this process), so it checks the addresses the
children use; https members are checked with the client SSLContext the arbiter
built for their requests. It
never serves a request and holds no listening socket. It exits when told (TERM)
or when the arbiter is gone (EOF on its pipe of death).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl

from proxympm.config.model import ServerConfig
from proxympm.log import parse_log_level, setup_error_log
from proxympm.proxy.backend_table import BackendTable
from proxympm.proxy.health import Check, HealthChecker, default_check, parse_hc_expr
from proxympm.proxy.resolver import AddressSet, Resolver
from proxympm.proxy.routing import parse_target
from proxympm.tls import ClientContexts, build_client_context


def health_checks(config: ServerConfig, table: BackendTable,
                  tls: ClientContexts | None = None) -> list[Check]:
    """One Check per BalancerMember with an ``hcmethod``."""
    exprs = dict(config.hc_exprs)
    checks = []
    for balancer in config.balancers:
        if balancer.name not in table.groups:
            continue
        for member in balancer.members:
            p = member.params
            if not p.hcmethod:
                continue
            target = parse_target(member.url)
            base = target.base_path.rstrip(b"/")
            uri = p.hcuri.encode("ascii", "replace")
            path = base + (uri if uri.startswith(b"/") or not uri else b"/" + uri) or b"/"
            timeout = min(p.hcinterval, p.connectiontimeout or p.timeout
                          or config.main.proxy_timeout or config.main.timeout)
            checks.append(Check(
                index=table.index(balancer.name, member.url), name=member.url,
                scheme=target.scheme, host=target.host, port=target.port, method=p.hcmethod,
                path=path, host_header=target.host_header, interval=p.hcinterval,
                passes=p.hcpasses, fails=p.hcfails, timeout=max(0.05, timeout),
                passes_if=parse_hc_expr(exprs[p.hcexpr]) if p.hcexpr else default_check,
                tls=_client_context(config, tls, balancer.name)
                if target.scheme == "https" else None,
                sni=target.origin_host, srv=target.srv))
    return checks


def _client_context(config: ServerConfig, tls: ClientContexts | None,
                    balancer: str) -> ssl.SSLContext:
    """The context a member's proxied requests use: that of the first host (main
    server, then vhosts) with a route to its balancer, so a check trusts exactly the
    certificates a request would."""
    hosts = config.all_hosts()
    using = [h for h in hosts for r in h.routes
             if r.url and r.url[:11].lower() == "balancer://"
             and "balancer://" + r.url[11:].split("/", 1)[0].lower() == balancer]
    host = using[0] if using else config.main
    if tls is not None:
        try:
            return tls.for_host(host)
        except KeyError:
            pass
    return build_client_context(host.proxy_tls)


def needed(config: ServerConfig) -> bool:
    return any(m.params.hcmethod for b in config.balancers for m in b.members)


def run_watchdog(config: ServerConfig, table: BackendTable, pod_r: int,
                 close_fds: list[int], tls: ClientContexts | None = None) -> None:
    """Entry point right after fork(). Never returns: exits the process."""
    code = 0
    try:
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        log = setup_error_log(config.error_log, *parse_log_level(config.log_level))
        checks = health_checks(config, table, tls)
        log.info("watchdog", f"watchdog {os.getpid()} running {len(checks)} health checks")
        # the members' names, resolved as the children resolve them (same code, same
        # name servers, kept fresh by a ``dns`` thread of this process); its lookups
        # are not logged: every child logs its own about the same names already
        resolver = Resolver(config.dns_servers, config.dns_ttl_floor, config.dns_ttl_ceiling)
        sets = {c.index: resolver.address_set(c.host, c.port, c.srv) for c in checks}
        resolver.start()
        asyncio.run(_main(config, table, checks, sets, pod_r, log))
    except BaseException:  # noqa: BLE001 - report and exit, never fall back into the arbiter
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


async def _main(config: ServerConfig, table: BackendTable, checks: list[Check],
                sets: dict[int, AddressSet], pod_r: int, log: object) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH):
        loop.add_signal_handler(sig, finish)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the arbiter handles ^C for the group
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGHUP,
                                                signal.SIGUSR1, signal.SIGWINCH})
    loop.add_reader(pod_r, finish)  # EOF: the arbiter is gone
    checker = HealthChecker(table, checks,
                            resolve=lambda c: [(e.family, e.sockaddr)
                                               for e in sets[c.index].endpoints],
                            log=lambda message: log.error("proxy_hcheck", message))  # type: ignore[attr-defined]
    task = asyncio.ensure_future(checker.run())
    await asyncio.wait([stop, task], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
