"""The watchdog: one process per server for the control-plane work of DESIGN.md.

The arbiter forks it (when the configuration gives it something to do) next to
the serving children and forks it again if it dies. It runs one asyncio loop with
its duties, today the active health checks of ``proxympm.proxy.health``, and
writes their results into the shared backend table that every child reads. It
never serves a request and holds no listening socket. It exits when told (TERM)
or when the arbiter is gone (EOF on its pipe of death).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl

from proxympm.config.model import ServerConfig
from proxympm.log import parse_log_level, setup_error_log
from proxympm.proxy.backend_table import BackendTable
from proxympm.proxy.health import Check, HealthChecker, default_check, parse_hc_expr
from proxympm.proxy.routing import parse_target


def health_checks(config: ServerConfig, table: BackendTable) -> list[Check]:
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
            tls = None
            if target.scheme == "https":
                tls = ssl.create_default_context()
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE  # a liveness probe, not a trust decision
            checks.append(Check(
                index=table.index(balancer.name, member.url), name=member.url,
                scheme=target.scheme, host=target.host, port=target.port, method=p.hcmethod,
                path=path, host_header=target.host_header, interval=p.hcinterval,
                passes=p.hcpasses, fails=p.hcfails, timeout=max(0.05, timeout),
                passes_if=parse_hc_expr(exprs[p.hcexpr]) if p.hcexpr else default_check,
                tls=tls))
    return checks


def needed(config: ServerConfig) -> bool:
    return any(m.params.hcmethod for b in config.balancers for m in b.members)


def run_watchdog(config: ServerConfig, table: BackendTable, pod_r: int,
                 close_fds: list[int]) -> None:
    """Entry point right after fork(). Never returns: exits the process."""
    code = 0
    try:
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        log = setup_error_log(config.error_log, *parse_log_level(config.log_level))
        checks = health_checks(config, table)
        log.info("watchdog", f"watchdog {os.getpid()} running {len(checks)} health checks")
        asyncio.run(_main(config, table, checks, pod_r, log))
    except BaseException:  # noqa: BLE001 - report and exit, never fall back into the arbiter
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


async def _main(config: ServerConfig, table: BackendTable, checks: list[Check], pod_r: int,
                log: object) -> None:
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
    addresses = await _resolve(checks)
    checker = HealthChecker(table, checks,
                            resolve=lambda host, port: addresses.get((host, port), []),
                            log=lambda message: log.error("proxy_hcheck", message))  # type: ignore[attr-defined]
    task = asyncio.ensure_future(checker.run())
    await asyncio.wait([stop, task], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()


async def _resolve(checks: list[Check]) -> dict[tuple[str, int], list]:
    """Names once, at start (the DNS refresh of the watchdog is another duty)."""
    loop = asyncio.get_running_loop()
    out: dict[tuple[str, int], list] = {}
    for c in checks:
        if (c.host, c.port) in out:
            continue
        try:
            infos = await loop.getaddrinfo(c.host, c.port, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        out[(c.host, c.port)] = [(family, addr) for family, _, _, _, addr in infos]
    return out
