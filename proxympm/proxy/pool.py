"""Upstream connections: one pool per backend origin, per child process.

Rules (DESIGN.md, nginx/HAProxy practice): LIFO reuse so the warmest connection is
taken and cold ones age out; an idle ``ttl`` (kept below the backend's own
keep-alive timeout); an EOF check right before reuse; and only a connection whose
request and response were both exchanged completely is ever put back.

A backend name with several addresses (DNS) keeps its connections in one stack,
each tagged with its address; a worker asks for one to the address the rotation
chose (``take_idle(..., addr)``), so requests, not only new connections, are spread
over the addresses.

Thread model: any worker thread calls ``take_idle``/``release``; the DNS thread calls
``drop_addresses``; the idle stack is guarded by one small lock per backend, held
only for a list push, pop or filter.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxympm.proxy.routing import Target
from proxympm.proxy.upstream import still_open_tls

# Without a ttl, a pooled connection idle longer than this is not trusted; kept
# under common app-server keep-alive timeouts would be too short for a default
# (gunicorn uses 2 s), so the EOF check and the retry-once rule cover the race.
DEFAULT_IDLE_LIMIT = 60.0
MAX_IDLE_PER_BACKEND = 256


@dataclass(slots=True)
class Upstream:
    """One connection to a backend."""

    sock: socket.socket
    target: Target
    reused: int = 0  # requests already completed on it
    idle_since: float = 0.0
    addr: tuple | None = None  # the socket address it is connected to (one of the name's)
    # In the listener's poller, edge-triggered, from its first inline exchange until
    # it goes to a worker: idle, it waits in ``BackendState.watched`` (Pool.release).
    watched: bool = False


class BackendState:
    """One backend origin's idle connections in this child (its error state is
    server-wide: ``Target.errors``)."""

    __slots__ = ("target", "lock", "idle", "watched")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.idle: list[Upstream] = []
        # The listener's idle connections: still in its poller, so an EOF or stray
        # bytes while idle reach it as an event (``Pool.drop_watched``) and taking
        # one (``take_watched``) needs no EOF check; only the listener takes them.
        self.watched: list[Upstream] = []


class Pool:
    __slots__ = ("_backends", "_lock", "watched_fds")

    def __init__(self) -> None:
        self._backends: dict[str, BackendState] = {}
        self._lock = threading.Lock()
        # Listener thread only: fd -> the idle watched connection it belongs to. An
        # entry whose socket was closed meanwhile (``drop_addresses``, ``close_all``)
        # is found by its fileno() and dropped by the listener.
        self.watched_fds: dict[int, tuple[BackendState, Upstream]] = {}

    def backend(self, target: Target, variant: str = "") -> BackendState:
        """The state of one backend origin; ``variant`` separates connections that
        may not serve each other's requests (TLS: SNI and client context)."""
        key = f"{target.name}|{variant}" if variant else target.name
        state = self._backends.get(key)
        if state is None:
            with self._lock:
                state = self._backends.setdefault(key, BackendState(target))
        return state

    def take_idle(self, state: BackendState, ttl: float | None,
                  addr: tuple | None = None) -> Upstream | None:
        """Most recently used live idle connection (to ``addr``, if given), or None."""
        return self._take(state, ttl, addr, watched=False)

    def take_watched(self, state: BackendState, ttl: float | None,
                     addr: tuple | None = None) -> Upstream | None:
        """Listener thread: ``take_idle`` among its watched connections. No EOF check:
        one that saw EOF or bytes while idle was reported and dropped already (one
        whose EOF is still on its way fails like any stale connection: the request
        is retried once on a fresh one)."""
        return self._take(state, ttl, addr, watched=True)

    def _take(self, state: BackendState, ttl: float | None, addr: tuple | None,
              watched: bool) -> Upstream | None:
        limit = ttl if ttl is not None else DEFAULT_IDLE_LIMIT
        now = time.monotonic()
        while True:
            with state.lock:
                up = _pop(state.watched if watched else state.idle, addr)
            if up is None:
                return None
            sock = up.sock
            if watched:
                self.watched_fds.pop(sock.fileno(), None)
                alive = True
            else:
                alive = (still_open_tls(sock) if isinstance(sock, ssl.SSLSocket)
                         else _still_open(sock))
            if now - up.idle_since < limit and alive:
                return up
            sock.close()

    def drop_watched(self, fd: int) -> bool:
        """Listener thread: ``fd`` of an idle watched connection was reported (EOF or
        bytes it should not have sent; poll confirms, since the event may be the tail
        of its last response): it is closed. False: ``fd`` is not one any more (its
        socket was closed meanwhile, the number may be another socket's now)."""
        state, up = self.watched_fds.pop(fd)
        if up.sock.fileno() != fd:
            return False
        if _still_open(up.sock):
            self.watched_fds[fd] = (state, up)
            return True
        with state.lock:
            if up in state.watched:
                state.watched.remove(up)
        up.sock.close()
        return True

    def release(self, state: BackendState, up: Upstream,
                listed: Callable[[tuple | None], bool] | None = None) -> None:
        """Keep ``up`` for reuse; ``listed`` says whether its address is still one of
        the backend name's (checked under the lock that ``drop_addresses`` takes, so a
        connection is never kept after its address was dropped). A watched one (only
        the listener has those) waits among the listener's."""
        up.reused += 1
        up.idle_since = time.monotonic()
        with state.lock:
            if len(state.idle) + len(state.watched) < MAX_IDLE_PER_BACKEND and (
                    listed is None or listed(up.addr)):
                if up.watched:
                    state.watched.append(up)
                    self.watched_fds[up.sock.fileno()] = (state, up)
                else:
                    state.idle.append(up)
                return
        up.sock.close()

    def drop_addresses(self, host: str, port: int, addrs: list[tuple]) -> None:
        """DNS thread: ``host:port`` no longer stands for ``addrs``; close the idle
        connections to them (those in use close when their request is done)."""
        gone = set(addrs)
        with self._lock:
            states = [s for s in self._backends.values()
                      if s.target.host.lower() == host and s.target.port == port]
        for state in states:
            with state.lock:
                doomed = [up for up in state.idle + state.watched if up.addr in gone]
                if doomed:
                    state.idle = [up for up in state.idle if up.addr not in gone]
                    state.watched = [up for up in state.watched if up.addr not in gone]
            for up in doomed:
                up.sock.close()

    def idle_counts(self) -> dict[str, int]:
        """Idle connections per backend origin (any thread; a count, no lock)."""
        counts: dict[str, int] = {}
        for state in list(self._backends.values()):
            name = state.target.name
            counts[name] = counts.get(name, 0) + len(state.idle) + len(state.watched)
        return counts

    def put_back(self, state: BackendState, up: Upstream) -> None:
        """An idle connection taken but not used: back on top, unchanged."""
        with state.lock:
            if up.watched:
                state.watched.append(up)
                self.watched_fds[up.sock.fileno()] = (state, up)
            else:
                state.idle.append(up)

    def close_all(self) -> None:
        for state in list(self._backends.values()):
            with state.lock:
                idle, state.idle = state.idle + state.watched, []
                state.watched = []
            for up in idle:
                up.sock.close()


def _pop(idle: list[Upstream], addr: tuple | None) -> Upstream | None:
    """The most recently used of ``idle`` (to ``addr``, if given: a backend name with
    several addresses is LIFO per address), taken off it; the caller holds the lock."""
    if not idle:
        return None
    if addr is None or idle[-1].addr == addr:
        return idle.pop()
    for i in range(len(idle) - 2, -1, -1):
        if idle[i].addr == addr:
            return idle.pop(i)
    return None


def _still_open(sock: socket.socket) -> bool:
    """A pooled connection is usable only if it has neither EOF nor stray bytes:
    readable while idle means one or the other (mod_proxy's check, poll(0) first
    because the socket carries a timeout and a plain recv would wait on it)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)
