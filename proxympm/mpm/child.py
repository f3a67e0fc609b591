"""A child process: one listener thread plus ThreadsPerChild worker threads.

The child's main thread builds everything from the (immutable) config, starts the
threads, then only waits: for a stop signal from the arbiter (TERM: stop now;
USR1/WINCH: graceful, finish in-flight requests) or for the arbiter's death,
seen as EOF on the pipe whose write end only the arbiter holds. It never serves
a request itself.
"""

from __future__ import annotations

import functools
import gc
import os
import queue
import select
import signal
import socket
import threading
import time

from proxympm.config.model import Listen, ServerConfig
from proxympm.http.errors import HTTPError
from proxympm.http.request import Limits
from proxympm.log import AccessLog, ErrorLog, parse_log_level, setup_error_log
from proxympm.mpm.balance import AcceptBalance
from proxympm.mpm.connection import Connection, State
from proxympm.mpm.listener import Listener
from proxympm.mpm.memtrim import MemoryTrimmer
from proxympm.mpm.scoreboard import MAX_BACKENDS, Scoreboard, WorkerScore
from proxympm.mpm.worker import Worker, log_request_error
from proxympm.proxy.backend_table import BackendTable
from proxympm.proxy.balancer import Balancers
from proxympm.proxy.client_address import believe
from proxympm.proxy.exchange import Exchange
from proxympm.proxy.metrics import B_POOL_IDLE, B_QUEUED, BackendStats, member_key
from proxympm.proxy.pool import Pool
from proxympm.proxy.resolver import Resolver
from proxympm.proxy.routing import HostTable, Router
from proxympm.tls import TLSMaterial

ChildSockets = list[tuple[socket.socket, Listen]]
REPORT_EVERY = 0.25  # seconds between scoreboard updates
CHILD_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH}


def run_child(config: ServerConfig, hosts: HostTable, tls: TLSMaterial,
              sockets: ChildSockets, pod_r: int, slot: int,
              scoreboard: Scoreboard | None = None,
              backends: BackendTable | None = None,
              balance: AcceptBalance | None = None) -> None:
    """Entry point right after fork(). Never returns: exits the process."""
    code = 0
    try:
        if config.cpu_affinity:
            pin_to_cpu(slot)
        Child(config, hosts, tls, sockets, pod_r, scoreboard, slot, backends, balance).run()
    except BaseException:  # noqa: BLE001 - report and exit, never fall back into the arbiter
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def pin_to_cpu(slot: int) -> None:
    """ChildCPUAffinity: run this child (and the threads it will start) on one CPU,
    so the interpreter lock is never handed across CPUs."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[slot % len(cpus)]})


class Child:
    def __init__(self, config: ServerConfig, hosts: HostTable, tls: TLSMaterial,
                 sockets: ChildSockets, pod_r: int, scoreboard: Scoreboard | None = None,
                 slot: int = 0, backends: BackendTable | None = None,
                 balance: AcceptBalance | None = None) -> None:
        self.config = config
        self.pod_r = pod_r
        self.scoreboard = scoreboard
        self.slot = slot
        self.stop_request: str | None = None  # "graceful" or "now"
        self.scores_by_thread: dict[int | None, WorkerScore] = {}
        self.error_log: ErrorLog = setup_error_log(config.error_log,
                                                   *parse_log_level(config.log_level))
        self.hosts = hosts
        all_hosts = config.all_hosts()
        if backends is not None:
            backends.attach(slot, backends.wake_fds, backends.wake_reads[slot])
        # One registry per child, shared by every host; the state is server-wide.
        # The status page reads it with ``self.balancers.table.snapshot()`` (a list
        # of per-member dicts; see BackendTable.snapshot for the keys).
        self.balancers = balancers = Balancers(config.balancers, backends)
        self.routers = {id(h): Router(h.routes, balancers, h.handlers) for h in all_hosts}
        self.access_logs = self._open_access_logs()
        # Upstream names: resolved by this child's ``dns`` thread, which keeps them
        # fresh in the background; serving starts once the first answers are in (or
        # after resolver.STARTUP_WAIT: a name that does not resolve is retried).
        pool = Pool()
        resolver = Resolver(config.dns_servers, config.dns_ttl_floor, config.dns_ttl_ceiling,
                            self.error_log)
        resolver.on_removed = pool.drop_addresses
        for router in self.routers.values():
            for t in router.backends():
                resolver.address_set(t.host, t.port, t.srv)
        resolver.start()
        limits = {id(h): Limits(h.limit_request_line, h.limit_request_fields,
                                h.limit_request_field_size, h.limit_request_body)
                  for h in all_hosts}
        self.work_queue: queue.SimpleQueue = queue.SimpleQueue()
        listeners = []
        for sock, spec in sockets:
            ip = spec.family_host
            default_host = self.hosts.default(ip, spec.port)
            ctx = tls.listeners.get((spec.host, spec.port))
            if spec.protocol == "https" and ctx is None:
                raise RuntimeError(f"Listen {spec.port} https has no TLS virtual host")
            listeners.append((sock, spec, default_host, ctx))
        self.workers: list[Worker] = []
        self.listener = Listener(
            config, listeners, self.work_queue,
            done_counters=lambda: sum(w.done for w in self.workers),
            log_error=self._request_error,
            limits_for=lambda h: limits[id(h)],
            error_log=self.error_log,
            wants_buffering=self._wants_buffering,
            will_forward=self._will_forward,
            client_of=self._client_of,
        )
        if balance is not None and config.server_limit > 1:
            balance.attach(slot)
            self.listener.attach_balance(balance)
        if backends is not None and any(s.max is not None for s in backends.specs):
            # requests waiting for a ``max`` slot wait in the listener, not a worker
            # (without any ``max`` nothing queues: the listener's loop stays as it is)
            self.listener.attach_table(backends)
        server_name = (config.main.server_name or socket.gethostname()).encode("ascii", "replace")
        self.stats = self._backend_stats()
        self.exchange = Exchange(pool, resolver, self.error_log, server_name, tls.client,
                                 self.stats)
        status_page = None
        if scoreboard is not None and any(h.handlers for h in all_hosts):
            from proxympm.status import StatusPage

            table = balancers.table
            status_page = StatusPage(scoreboard, config, server_name.decode("ascii"),
                                     members=table.snapshot if table.specs else None,
                                     errors=table.plain_errors if table.specs else None)
        self.workers.extend(
            Worker(i, self.work_queue, self.listener, self.exchange, self.hosts, self.routers,
                   self.access_logs, self.error_log,
                   scoreboard.worker(slot, i) if scoreboard is not None else None, status_page)
            for i in range(config.threads_per_child)
        )
        # The listener forwards small requests itself (no thread hand-off) when it can.
        self.listener.inline = Worker(-1, self.work_queue, self.listener, self.exchange,
                                      self.hosts, self.routers, self.access_logs,
                                      self.error_log, status_page=status_page)
        if scoreboard is not None:  # the listener's inline requests count in its words
            self.listener.inline.count_inline = functools.partial(
                scoreboard.count_rejected, slot)
            # and so do the bytes it relays after a tunnel or stream hand-off
            self.listener.tunnels.count_sent = (
                lambda sent: scoreboard.count_listener_bytes(slot, sent))

    def _backend_stats(self) -> BackendStats | None:
        """Per-backend counters, one row per backend, balancer member and balancer,
        continuing the rows a previous child of this slot left in the scoreboard."""
        if self.scoreboard is None:
            return None
        names: list[str] = []
        for router in self.routers.values():
            for route in router.routes:
                target = route.target
                if target is None:
                    continue
                balancer = target.balancer
                if balancer is None:
                    keys = [target.name]
                else:
                    keys = [balancer.name] + [member_key(balancer.name, m.target.name)
                                              for m in balancer.members]
                names.extend(k for k in keys if k not in names)
        if len(names) > MAX_BACKENDS:
            self.error_log.warn("status", f"{len(names)} backends: server-status counts "
                                f"the first {MAX_BACKENDS} only")
            names = names[:MAX_BACKENDS]
        self.backend_rows = self.scoreboard.backend_rows(self.slot, names)
        self.backend_base = [self.scoreboard.backend_counters(self.slot, r) if r >= 0 else []
                             for r in self.backend_rows]
        return BackendStats(names, self.config.threads_per_child + 1)

    def _request_error(self, exc: HTTPError, conn: Connection) -> None:
        """Listener thread: a request it answered itself (400, 408, 413 ...): logged,
        and counted in the scoreboard as an access, as httpd counts it."""
        log_request_error(self.access_logs, self.error_log, exc, conn, self._client_of(conn))
        if self.scoreboard is None:
            return
        # a worker thread, for a bad request pipelined behind one it served: its own
        # slot counts it (one writer per word)
        score = self.scores_by_thread.get(threading.get_ident())
        if score is not None:
            score.count_rejected()
        else:
            self.scoreboard.count_rejected(self.slot)

    def _wants_buffering(self, conn: Connection) -> bool:
        """Listener thread: does this request's route buffer its body (the default)?
        Routers and host tables are read-only, so this lookup needs no lock."""
        req = conn.request
        assert req is not None
        host = self.hosts.by_name(conn.local[0], conn.local[1], req.host)
        match = self.routers[id(host)].match(b"/" if req.path == b"*" else req.path)
        if match is None or match[0].target is None:
            return False  # answered without an upstream: no point reading the body
        return match[0].params.request_buffering

    def _will_forward(self, conn: Connection) -> bool:
        """Listener thread (or the worker owning ``conn``), for a request that asks
        for 100 Continue: will its body go upstream? One answered without it (no
        route: 404, a handler, ``Require`` denies: 403, a misdirected request: 421)
        gets its final status without a 100 first, as in httpd and nginx, so the
        client never sends the body. The same lookups as Worker.serve_one, without
        its side effects."""
        req = conn.request
        assert req is not None
        host = self.hosts.by_name(conn.local[0], conn.local[1], req.host)
        if conn.sni_host is not None and host is not conn.sni_host:
            return False
        match = self.routers[id(host)].match(b"/" if req.path == b"*" else req.path)
        if match is None or match[0].target is None:
            return False
        access = match[0].access
        return access is None or access.allows(self._client_of(conn)[0], conn.local[0])

    def _client_of(self, conn: Connection) -> tuple[str, int]:
        """Listener thread (or the worker owning ``conn``): the client a line about
        the current request names, as the worker's lines do: the one mod_remoteip
        believes once the head is parsed, the TCP peer before. Kept on the
        connection for the rest of this request (the worker sets it anew)."""
        if conn.client_addr is not None:
            return conn.client
        req = conn.request
        if req is None:
            return conn.peer
        host = self.hosts.by_name(conn.local[0], conn.local[1], req.host)
        if not host.remote_ip_header:
            return conn.peer
        # believe() on a copy of the fields: the worker applies it to the request
        conn.client_addr = believe(host, conn.peer, _HeadersOnly(req.headers))
        return conn.client

    def _open_access_logs(self) -> dict[int, list[AccessLog]]:
        shared: dict[tuple[str, str], AccessLog] = {}
        out: dict[int, list[AccessLog]] = {}
        for host in self.config.all_hosts():
            logs = []
            for cl in host.custom_logs:
                key = (cl.target, cl.format)
                if key not in shared:
                    shared[key] = AccessLog(cl.target, cl.format)
                logs.append(shared[key])
            out[id(host)] = logs
        return out

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_request = "now" if signum in (signal.SIGTERM, signal.SIGHUP) else "graceful"

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the arbiter handles ^C for the group
        for w in self.workers:
            w.thread.start()
        self.scores_by_thread = {w.thread.ident: w.score for w in self.workers
                                 if w.score is not None}
        self.listener.thread.start()
        # The arbiter forked us with the stop signals blocked; the threads keep them
        # blocked (so they reach this thread), and one that came early arrives now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)
        gc.collect()
        gc.freeze()  # long-lived setup objects leave the collector's generations
        self.error_log.info("mpm", f"child {os.getpid()} serving with "
                            f"{len(self.workers)} worker threads on {self.listener.poller.name}")
        listener = self.listener
        # requests finished: by workers, and inline by the listener (most small ones)
        trimmer = MemoryTrimmer(lambda: listener.done_counters() + listener.inline_done,
                                time.monotonic())
        while self.stop_request is None and self.listener.thread.is_alive():
            self._report()
            if trimmer.tick(listener.outstanding() + len(listener.upstreams),
                            time.monotonic()):
                self.error_log.debug("mpm", f"free memory returned to the system "
                                     f"(malloc_trim, {trimmer.trims} so far)")
            try:
                ready, _, _ = select.select([self.pod_r, wake_r], [], [], REPORT_EVERY)
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            if self.pod_r in ready:
                self.error_log.notice("mpm", "parent process gone; child exiting")
                self.stop_request = "now"
        # the listener thread ended without being asked to stop (MaxConnectionsPerChild
        # asks it itself): it crashed
        died = self.stop_request is None and not self.listener.stopping
        self._shutdown(self.stop_request == "graceful" or died)
        if died:
            # a non-zero exit: the arbiter's crash back-off applies, no respawn hot loop
            raise RuntimeError("the listener thread died; child exiting")

    def _report(self, stopping: bool = False) -> None:
        """Main thread: this child's numbers into its scoreboard slot. The counters
        are read without a lock; a value one update old is good enough."""
        if self.scoreboard is None:
            return
        listener = self.listener
        tpc = len(self.workers)
        # An inline exchange in flight is a request being served, as a worker's is
        # (httpd counts requests in progress): load spawns children the same way.
        busy = min(tpc, max(0, listener.outstanding()) + len(listener.upstreams))
        stopping = stopping or listener.stopping
        idle = tpc - busy if listener.accepting and not stopping else 0
        writing = keepalive = closing = 0
        for conn in list(listener.conns.values()):  # a copy: the listener owns the dict
            state = conn.state
            if state == State.KEEPALIVE:
                keepalive += 1
            elif state == State.WRITE_COMPLETION:
                writing += 1
            elif state == State.LINGER:
                closing += 1
        times = os.times()
        self.scoreboard.report(self.slot, busy, idle, len(listener.conns), stopping,
                               writing, keepalive, closing, listener.accepting,
                               (times.user, times.system))
        self._publish_backends()

    def _publish_backends(self) -> None:
        """Main thread: the workers' per-backend counters, summed, into this slot."""
        stats, board = self.stats, self.scoreboard
        if stats is None or board is None:
            return
        totals = stats.totals()
        idle = self.exchange.pool.idle_counts()
        queued = {b.name: b.queued for b in self.balancers}
        for name, row, base, values in zip(stats.names, self.backend_rows, self.backend_base,
                                           totals, strict=False):
            if row < 0:
                continue
            balancer, sep, backend = name.partition("|")
            values[B_POOL_IDLE] = idle.get(backend if sep else name, 0)
            values[B_QUEUED] = 0 if sep else queued.get(name, 0)
            board.publish_backend(self.slot, row, base, values)

    def _shutdown(self, graceful: bool) -> None:
        self._report(stopping=True)
        listener = self.listener
        listener.stop(graceful)
        # Graceful (restart, retirement or graceful-stop): no time limit here, as in
        # httpd. GracefulShutdownTimeout is the arbiter's, for graceful-stop only: it
        # sends TERM when it passes. A graceful restart lets requests run their course.
        limit = None if graceful else 2.0
        deadline = time.monotonic() + limit if limit else None
        while listener.thread.is_alive():
            listener.thread.join(0.2)
            if self.stop_request == "now" and graceful:
                break  # a TERM after a graceful request: stop now
            if deadline is not None and time.monotonic() > deadline:
                break
        for _ in self.workers:
            self.work_queue.put(None)
        # After a graceful stop that ran its course the workers are idle and leave
        # at once; after a cut one (timeout, or TERM) in-flight requests are dropped.
        cut = listener.thread.is_alive() or self.stop_request == "now"
        end = time.monotonic() + (0.5 if cut or not graceful else 5.0)
        for w in self.workers:
            while w.thread.is_alive() and time.monotonic() < end:
                w.thread.join(0.1)
                if graceful and self.stop_request == "now":
                    end = min(end, time.monotonic() + 0.5)
        self._publish_backends()  # the last counts, for the next child of this slot
        self.exchange.pool.close_all()
        threading.enumerate()  # nothing else to wait for; daemon threads die with us


class _HeadersOnly:
    """What believe() reads and rewrites of a request, so that a look-ahead leaves
    the request itself as it was."""

    __slots__ = ("headers", "lnames")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.lnames: list[bytes] = []
