"""The arbiter: the single-threaded parent that never serves a request.

It validates the config, opens the listening sockets, writes the PidFile, forks
children and supervises them, mapping signals as httpd does:
TERM stop, HUP restart, USR1 graceful restart, WINCH graceful stop.
It keeps no threads and no event loop, so fork() stays safe; signals are turned
into flags by tiny handlers and handled in the main loop, which wakes once a
second (as httpd's parent does) or when a signal arrives.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from dataclasses import dataclass

from proxympm.config.model import Listen, ServerConfig
from proxympm.log import ErrorLog, parse_log_level, setup_error_log
from proxympm.mpm import watchdog
from proxympm.mpm.balance import AcceptBalance
from proxympm.mpm.child import run_child
from proxympm.mpm.listener import connection_cap
from proxympm.mpm.scoreboard import (
    G_CONFIG_GENERATION,
    G_GENERATION,
    STATE,
    STOPPING,
    Scoreboard,
)
from proxympm.proxy.backend_table import QUEUE_LIMIT, BackendTable, make_wake_pipes
from proxympm.proxy.balancer import table_for
from proxympm.proxy.routing import HostTable
from proxympm.tls import TLSMaterial, validate_tls


class ConfigRefused(Exception):
    """The new configuration cannot be served (its TLS material does not load)."""


def prepare(config: ServerConfig) -> tuple[HostTable, TLSMaterial]:
    """Everything a generation of children shares, built before forking."""
    errors = validate_tls(config)
    if errors:
        raise ConfigRefused("\n".join(errors))
    hosts = HostTable(config.main, config.vhosts)
    return hosts, TLSMaterial(config, hosts)

CHILD_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH}
CRASH_WINDOW = 2.0  # a child that dies sooner than this after start counts as a crash
MAX_BACKOFF = 30.0
MAX_SPAWN_RATE = 32  # children forked per second at most (httpd's MAX_SPAWN_RATE)
GRACEFUL_HOLD_OFF = 10  # spawning rounds without doubling after a graceful restart


@dataclass(slots=True)
class ChildProc:
    pid: int
    generation: int
    slot: int
    started: float
    pod_w: int  # write end of the child's pipe of death (EOF = arbiter gone)
    retiring: bool = False  # told to stop gracefully for low load: not replaced


def open_listener(spec: Listen, backlog: int) -> socket.socket:
    host = spec.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), spec.port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"AH00072: make_sock: could not bind to address "
                      f"{host or '0.0.0.0'}:{spec.port}: {exc.strerror}") from None
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        # httpd's default AcceptFilter "http data": accept once the request is here.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class Arbiter:
    def __init__(self, config: ServerConfig, config_path: str, defines: list[str],
                 server_root: str | None) -> None:
        self.config = config
        self.hosts, self.tls = prepare(config)
        self.config_path = config_path
        self.defines = defines
        self.server_root = server_root
        self.log: ErrorLog = setup_error_log(config.error_log, *parse_log_level(config.log_level))
        self.sockets: dict[tuple[str, int], tuple[socket.socket, Listen]] = {}
        self.children: dict[int, ChildProc] = {}
        self.generation = 0
        self.pending: list[int] = []
        self.backoff = 0.0
        self.next_spawn = 0.0
        # ServerLimit sizes the scoreboard once, for the server's lifetime (as httpd);
        # twice over, so that a whole generation can finish gracefully beside the next.
        self.scoreboard = Scoreboard(2 * max(1, config.server_limit), config.thread_limit)
        self.scoreboard.set_header(G_CONFIG_GENERATION, 1)
        self.scoreboard.use_threads(config.threads_per_child)
        # Server-wide backend state (max, queue, error and health state): one table
        # per generation, built before its children fork; one wake-up pipe per slot.
        self.wake_reads, self.wake_writes = make_wake_pipes(self.scoreboard.slots)
        # children keep their shares of the connections even (balance.py)
        self.balance = AcceptBalance(self.scoreboard)
        self.tables: dict[int, BackendTable] = {}
        self.watchdog_pid: int | None = None
        self.watchdog_pod = -1
        self.watchdog_next = 0.0
        self.watchdog_started = 0.0
        self.stopping = False
        self.wanted = 0  # children to fork as soon as allowed (start, replacements)
        self.spawn_rate = 1
        # httpd's hold_off_on_exponential_spawning: after a graceful restart the spawn
        # rate does not double for this many spawning rounds (the old generation's
        # exits make idle counts jump about meanwhile)
        self.hold_off = 0
        self.next_maintenance = 0.0
        self.said_full = False

    # -- signals -------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)

    def _install_signals(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                    signal.SIGWINCH, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        return wake_r

    # -- sockets and children ---------------------------------------------------------

    def _sync_listeners(self, config: ServerConfig) -> None:
        """Open what is new, keep what is unchanged, close what is gone."""
        wanted = {(spec.host, spec.port): spec for spec in config.listens}
        for key, spec in wanted.items():
            if key in self.sockets:
                sock = self.sockets[key][0]
                sock.listen(config.listen_backlog)  # a new ListenBacklog, same socket
                self.sockets[key] = (sock, spec)
            else:
                self.sockets[key] = (open_listener(spec, config.listen_backlog), spec)
        for key in list(self.sockets):
            if key not in wanted:
                self.sockets.pop(key)[0].close()

    def _spawn(self, slot: int) -> None:
        pod_r, pod_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(pod_w)
            for fd in [o.pod_w for o in self.children.values()] + [self.watchdog_pod]:
                try:
                    os.close(fd)
                except OSError:
                    pass
            # A stop signal that arrives before the child has its handlers must wait
            # for them, not kill it with the default action (the child unblocks).
            signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                        signal.SIGWINCH, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            run_child(self.config, self.hosts, self.tls, list(self.sockets.values()), pod_r,
                      slot, self.scoreboard, self.tables[self.generation], self.balance)
        os.close(pod_r)
        os.set_inheritable(pod_w, False)
        self.scoreboard.claim(slot, pid, self.generation, self.config.threads_per_child,
                              self.config.threads_per_child)
        self.children[pid] = ChildProc(pid, self.generation, slot, time.monotonic(), pod_w)

    def _current(self) -> list[ChildProc]:
        return [c for c in self.children.values() if c.generation == self.generation]

    def _active(self) -> list[ChildProc]:
        """Children of the current generation that were not told to retire."""
        return [c for c in self._current() if not c.retiring]

    def _max_active(self) -> int:
        """MaxRequestWorkers / ThreadsPerChild, within ServerLimit (httpd's rule)."""
        cfg = self.config
        return max(1, min(cfg.server_limit,
                          cfg.max_request_workers // max(1, cfg.threads_per_child)))

    def _free_slot(self) -> int | None:
        used = {c.slot for c in self.children.values()}
        for slot in range(self.scoreboard.slots):
            if slot not in used:
                return slot
        return None

    def _spawn_some(self, n: int) -> int:
        """Fork up to ``n`` children of the current generation; how many were."""
        done = 0
        while done < n and len(self._active()) < self._max_active():
            slot = self._free_slot()
            if slot is None:
                if not self.said_full:
                    self.said_full = True
                    self.log.error("mpm", "AH03490: scoreboard is full, not at "
                                   "MaxRequestWorkers. Increase ServerLimit.")
                break
            self._spawn(slot)
            done += 1
        return done

    def _table(self) -> BackendTable:
        """The current generation's backend table (made on first use). A graceful
        restart that keeps the same balancers and members keeps the same table, so
        ``max`` and the queue stay server-wide while the old generation finishes its
        requests; otherwise a new one, with error and health state carried over."""
        table = self.tables.get(self.generation)
        if table is None:
            cfg = self.config
            # a queued request holds a connection (not a thread): as many may wait as
            # the children can hold connections, up to QUEUE_LIMIT
            slots = self.scoreboard.slots
            table = table_for(cfg, slots, min(QUEUE_LIMIT, slots * connection_cap(
                max(1, cfg.threads_per_child))))
            previous = self.tables.get(self.generation - 1)
            if previous is not None and _same_layout(previous, table):
                table.close()
                table = previous
            else:
                table.wake_fds, table.wake_reads = self.wake_writes, self.wake_reads
                table.slot = -1  # the arbiter owns no slot
                if previous is not None:
                    table.carry_over(previous)
            self.tables[self.generation] = table
        return table

    def _drop_old_tables(self) -> None:
        live = {c.generation for c in self.children.values()} | {self.generation}
        kept = {id(t) for g, t in self.tables.items() if g in live}
        for gen in [g for g in self.tables if g not in live]:
            table = self.tables.pop(gen)
            if id(table) not in kept:  # a table can serve two generations
                table.close()

    # -- the watchdog ------------------------------------------------------------------

    def _keep_watchdog(self) -> None:
        """Fork the watchdog if the config needs one and it is not running."""
        if (self.stopping or self.watchdog_pid is not None
                or not watchdog.needed(self.config) or time.monotonic() < self.watchdog_next):
            return
        table = self._table()
        pod_r, pod_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(pod_w)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                        signal.SIGWINCH, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            close = [s.fileno() for s, _ in self.sockets.values()]
            close += [c.pod_w for c in self.children.values()]
            watchdog.run_watchdog(self.config, table, pod_r, close, self.tls.client)
        os.close(pod_r)
        os.set_inheritable(pod_w, False)
        self.watchdog_pid, self.watchdog_pod = pid, pod_w
        self.watchdog_started = time.monotonic()

    def _stop_watchdog(self, wait: bool = True) -> None:
        pid = self.watchdog_pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not wait:
            return
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.02)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self._watchdog_gone()

    def _watchdog_gone(self) -> None:
        if self.watchdog_pod >= 0:
            os.close(self.watchdog_pod)
        self.watchdog_pid, self.watchdog_pod = None, -1

    def _start_generation(self) -> None:
        self.scoreboard.set_header(G_GENERATION, self.generation)
        self._table()
        self._stop_watchdog()  # a new config: the new generation's checks
        self._keep_watchdog()
        self.wanted = min(max(1, self.config.start_servers), self._max_active())
        self.spawn_rate = 1
        self.backoff = self.next_spawn = 0.0
        self.next_maintenance = time.monotonic() + 1.0
        self._fill()

    def _fill(self) -> None:
        """Fork what is wanted now (StartServers, replacements), unless backing off."""
        if not self.wanted or time.monotonic() < self.next_spawn:
            return
        room = self._max_active() - len(self._active())
        self.wanted = min(self.wanted, max(0, room))
        self.wanted -= self._spawn_some(self.wanted)

    def _maintain(self) -> None:
        """httpd's perform_idle_server_maintenance, once a second: fork when idle
        threads are below MinSpareThreads (1, 2, 4 ... 32 children a second), retire
        one child gracefully when they are above MaxSpareThreads."""
        now = time.monotonic()
        if now < self.next_maintenance:
            return
        self.next_maintenance = now + 1.0
        for child in self._active():
            if self.scoreboard.get(child.slot, STATE) == STOPPING:
                # it stops on its own (MaxConnectionsPerChild): replace it now, not
                # when its last connection is done
                child.retiring = True
                self.wanted += 1
        self._fill()
        active = self._active()
        if self.backoff and any(now - c.started > CRASH_WINDOW for c in active):
            self.backoff = 0.0  # a child stayed up: the crash loop is over
        cfg = self.config
        idle = sum(self.scoreboard.idle(c.slot) for c in active)
        if idle > cfg.max_spare_threads and len(active) > 1:
            victim = max(active, key=lambda c: (c.started, c.slot))
            victim.retiring = True
            self.log.info("mpm", f"idle threads {idle} > MaxSpareThreads "
                          f"{cfg.max_spare_threads}: retiring child pid {victim.pid}")
            try:
                os.kill(victim.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
            self.spawn_rate = 1
        elif idle < cfg.min_spare_threads and not self.wanted:
            if len(active) >= self._max_active():
                if self.spawn_rate > 0:
                    self.log.error("mpm", "AH00484: server reached MaxRequestWorkers "
                                   "setting, consider raising the MaxRequestWorkers setting")
                self.spawn_rate = 0  # said once until there is room again
                return
            if now < self.next_spawn:
                return
            rate = max(1, self.spawn_rate)
            if rate >= 8:
                self.log.info("mpm", f"AH00486: server seems busy, (you may need to increase "
                              f"StartServers, ThreadsPerChild or Min/MaxSpareThreads), "
                              f"spawning {rate} children, there are around {idle} idle "
                              f"threads, and {len(active)} total children")
            self._spawn_some(rate)
            if self.hold_off:
                self.hold_off -= 1
            else:
                self.spawn_rate = min(MAX_SPAWN_RATE, rate * 2)
        else:
            self.spawn_rate = 1

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.watchdog_pid:
                self._watchdog_gone()
                if not self.stopping:
                    quick = time.monotonic() - self.watchdog_started < CRASH_WINDOW
                    self.watchdog_next = time.monotonic() + (1.0 if quick else 0.0)
                    self.log.error("mpm", f"watchdog pid {pid} exited "
                                   f"({_how(status)}); restarting it")
                continue
            child = self.children.pop(pid, None)
            if child is None:
                continue
            os.close(child.pod_w)
            self.scoreboard.release(child.slot)
            table = self.tables.get(child.generation)
            if table is not None:
                leaked = table.reap_child(child.slot)
                if leaked:
                    self.log.warn("proxy", f"child pid {pid} left {leaked} backend "
                                  "requests in flight; their slots are free again")
            self._drop_old_tables()
            self.said_full = False
            if child.generation != self.generation or child.retiring:
                continue
            how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit status {os.WEXITSTATUS(status)}")
            if self.stopping:  # told to go: nothing to replace
                if how != "exit status 0":
                    self.log.error("mpm", f"child pid {pid} exit {how} while stopping")
                continue
            self.wanted += 1  # it died or left on its own: replace it
            lived = time.monotonic() - child.started
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                self.log.info("mpm", f"child pid {pid} exited normally; replacing it")
                continue
            if lived < CRASH_WINDOW:
                self.backoff = min(MAX_BACKOFF, max(1.0, self.backoff * 2))
                self.next_spawn = time.monotonic() + self.backoff
                self.log.error("mpm", f"AH00052: child pid {pid} exit {how} after "
                               f"{lived:.1f}s; backing off {self.backoff:.0f}s before respawn")
            else:
                self.backoff = 0.0
                self.log.error("mpm", f"AH00052: child pid {pid} exit {how}; respawning")

    def _signal_children(self, sig: int, generation: int | None = None) -> None:
        for child in list(self.children.values()):
            if generation is None or child.generation == generation:
                try:
                    os.kill(child.pid, sig)
                except ProcessLookupError:
                    pass

    def _wait_children(self, timeout: float = 9.0) -> None:
        """httpd's reclaim after a TERM: TERM again at 3, 5 and 7 s, KILL at ``timeout``."""
        start = time.monotonic()
        resend = [3.0, 5.0, 7.0]
        while self.children and time.monotonic() - start < timeout:
            self._reap()
            if resend and time.monotonic() - start >= resend[0]:
                resend.pop(0)
                self._signal_children(signal.SIGTERM)
            time.sleep(0.05)
        self._reap()
        if self.children:
            self.log.error("mpm", f"AH00045: {len(self.children)} children did not exit; "
                           "sending SIGKILL")
            self._signal_children(signal.SIGKILL)
            while self.children:
                try:
                    pid, _ = os.waitpid(-1, 0)
                except ChildProcessError:
                    break
                child = self.children.pop(pid, None)
                if child is not None:
                    os.close(child.pod_w)

    def _graceful_stop(self, wake_r: int) -> None:
        """WINCH: children finish what they have; after GracefulShutdownTimeout (0:
        no limit) they are sent TERM. A TERM to the arbiter meanwhile stops now."""
        timeout = self.config.graceful_shutdown_timeout
        deadline = time.monotonic() + timeout if timeout else None
        while self.children:
            self._sleep(wake_r, 0.1)
            self._reap()
            if any(sig in (signal.SIGTERM, signal.SIGINT) for sig in self.pending):
                self.log.notice("mpm", "AH00491: caught SIGTERM, shutting down")
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.log.notice("mpm", f"AH00494: GracefulShutdownTimeout ({timeout:g}s) "
                                f"passed; terminating {len(self.children)} children")
                break
        if self.children:
            self._signal_children(signal.SIGTERM)
            self._wait_children()

    @staticmethod
    def _sleep(wake_r: int, timeout: float) -> None:
        """Wait for a signal (the wake-up pipe) or ``timeout``; drain the pipe."""
        try:
            select.select([wake_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # -- pid file --------------------------------------------------------------------

    def _write_pidfile(self) -> None:
        path = self.config.pid_file
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)

    def _remove_pidfile(self) -> None:
        try:
            os.unlink(self.config.pid_file)
        except FileNotFoundError:
            pass

    # -- restarts --------------------------------------------------------------------

    def _reload(self) -> bool:
        from proxympm.config import ConfigError, load_config

        try:
            config = load_config(self.config_path, self.defines, self.server_root)
            hosts, tls = prepare(config)
            self._sync_listeners(config)
        except (ConfigError, ConfigRefused, OSError) as exc:
            self.log.error("mpm", f"AH00526: new configuration refused, keeping the old "
                           f"one: {exc}".replace("\n", " "))
            return False
        for w in config.warnings:
            self.log.warn("core", w)
        self.config, self.hosts, self.tls = config, hosts, tls
        self.scoreboard.set_header(G_CONFIG_GENERATION,
                                   self.scoreboard.header(G_CONFIG_GENERATION) + 1)
        self.scoreboard.use_threads(config.threads_per_child)
        self.log.reopen()
        return True

    # -- main loop -------------------------------------------------------------------

    def run(self) -> int:
        raise_fd_limit()
        self._sync_listeners(self.config)
        self._write_pidfile()
        wake_r = self._install_signals()
        for w in self.config.warnings:
            self.log.warn("core", w)
        self.log.notice("mpm", f"AH00489: proxympm configured -- resuming normal operations "
                        f"(pid {os.getpid()})")
        try:
            self._start_generation()
            while True:
                self._sleep(wake_r, 1.0)
                self._reap()
                pending, self.pending = self.pending, []
                for sig in pending:
                    if sig in (signal.SIGTERM, signal.SIGINT):
                        self.log.notice("mpm", "AH00491: caught SIGTERM, shutting down")
                        self.stopping = True
                        self._stop_watchdog(wait=False)
                        self._signal_children(signal.SIGTERM)
                        self._wait_children()
                        return 0
                    if sig == signal.SIGWINCH:
                        self.log.notice("mpm", "AH00492: caught SIGWINCH, shutting down "
                                        "gracefully")
                        self._remove_pidfile()
                        for sock, _ in self.sockets.values():
                            sock.close()
                        self.sockets.clear()
                        self.stopping = True
                        self._stop_watchdog(wait=False)
                        self._signal_children(signal.SIGWINCH)
                        self._graceful_stop(wake_r)
                        return 0
                    if sig == signal.SIGUSR1:
                        self.log.notice("mpm", "AH00493: SIGUSR1 received.  Doing graceful "
                                        "restart")
                        old = self.generation
                        if self._reload():
                            # the new generation first: queued clients wait less
                            self.generation += 1
                            self._start_generation()
                            self.hold_off = GRACEFUL_HOLD_OFF
                            self._signal_children(signal.SIGUSR1, old)
                    elif sig == signal.SIGHUP:
                        self.log.notice("mpm", "AH00494: SIGHUP received.  Attempting to "
                                        "restart")
                        if self._reload():
                            self._signal_children(signal.SIGTERM)
                            self._wait_children()
                            self.scoreboard.reset()  # httpd: a restart resets statistics
                            self.generation += 1
                            self._start_generation()
                self._fill()
                self._maintain()
                self._keep_watchdog()
        finally:
            self.stopping = True
            self._stop_watchdog()
            self._remove_pidfile()
            for sock, _ in self.sockets.values():
                sock.close()


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def raise_fd_limit() -> None:
    """Idle keep-alive connections cost a descriptor each: take the hard limit
    (containers often start with a soft limit of 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _same_layout(old: BackendTable, new: BackendTable) -> bool:
    """Whether ``new`` would hold the same workers, slots and queues as ``old``."""
    return (old.specs == new.specs and old.slots == new.slots
            and [g.qcap for g in old.groups.values()] == [g.qcap for g in new.groups.values()])
