"""Upstream name resolution with aiodns, in the background, never on a request's path.

Theory of operation
-------------------
Every upstream origin a child may use (ProxyPass and BalancerMember URLs) has an
``AddressSet``: the addresses its name stands for right now, and the rotation that
spreads requests over them. An IP literal gets a fixed set and never touches DNS.

Names are looked up by one daemon thread per child (``dns``) that runs an asyncio
loop with aiodns. A host name is asked for its A and AAAA records together
(c-ares' getaddrinfo, so ``/etc/hosts`` is read first as the system resolver would);
an SRV name (``srv=on``) for its SRV records, whose targets' addresses come from
the answer's additional section when there, else from their own lookups. Each
answer is used for its smallest TTL, clamped to [ProxyDNSTTLFloor,
ProxyDNSTTLCeiling], then asked again. Each round uses a fresh c-ares channel:
c-ares keeps a query cache for the full TTL, which would defeat the ceiling, and a
fresh channel also picks up a changed resolv.conf.

Failures never empty a set: a timeout, SERVFAIL, REFUSED or an unreachable name
server keeps the last good answer (logged once, and once more on recovery) and is
retried after the floor, doubling up to ``RETRY_CAP``. NXDOMAIN or an empty answer
is an answer: the name is gone. Its last good addresses are still used until they
are older than the ceiling (HAProxy's ``hold nx``), then dropped.

When an address leaves a set, ``on_removed`` is told (the child closes the idle
pooled connections to it); the pool also refuses to keep a connection whose address
is no longer listed, so requests in flight on it finish and the connection closes.

Why a thread in every child rather than DESIGN.md's watchdog process: there is no
shared backend table yet to publish variable-length address sets into, and a
child's own view keeps its pools and its rotation consistent without any
cross-process state. The cost is one small query per name per TTL per child.
The watchdog runs one more ``Resolver`` for the members it health-checks, so it
checks the addresses the children use. What is shared between children is per
address state, not the answers: the addresses that refused a connection and those
the checks took out (``backend_table``'s address lists, passed to ``order``).

Thread model: ``AddressSet.order`` and ``listed`` run in worker
threads; ``AddressSet.replace`` and everything named ``_refresh``/``_lookup`` run in
the ``dns`` thread. An AddressSet's mutable state is guarded by its own lock (held
for a short list walk); ``endpoints`` and the listed set are immutable tuples and
frozensets swapped whole, so a reader never sees half an update.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiodns
import pycares

from proxympm.config.model import DEFAULT_DNS_TTL_CEILING, DEFAULT_DNS_TTL_FLOOR

STARTUP_WAIT = 5.0  # seconds a child waits for its first answers before serving
QUERY_TIMEOUT = 1.0  # c-ares per-try timeout (seconds) ...
QUERY_TRIES = 2  # ... and tries per name server
LOOKUP_DEADLINE = 10.0  # an upper bound on one lookup, whatever c-ares does
RETRY_CAP = 30.0  # longest wait between retries of a failing name
BATCH = 0.05  # names due within this many seconds are refreshed in the same round
# NXDOMAIN and "no data": the name has no such records (an answer, not a failure)
_NX = frozenset({pycares.errno.ARES_ENOTFOUND, pycares.errno.ARES_ENODATA})


class ErrorLogger(Protocol):
    def error(self, module: str, message: str, client: tuple[str, int] | None = None) -> None: ...
    def notice(self, module: str, message: str, client: tuple[str, int] | None = None) -> None: ...
    def info(self, module: str, message: str, client: tuple[str, int] | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address to connect to, with its SRV priority and weight (0 and 1 for A)."""

    family: socket.AddressFamily
    sockaddr: tuple
    priority: int = 0
    weight: int = 1

    @property
    def shown(self) -> str:
        ip, port = self.sockaddr[0], self.sockaddr[1]
        return f"[{ip}]:{port}" if self.family == socket.AF_INET6 else f"{ip}:{port}"


class AddressSet:
    """The addresses one upstream (host and port, or SRV name) stands for in a child.

    ``order()`` gives, for one new attempt, the address to use first and the others
    to fall back on: among the lowest SRV priority that has an address not marked
    down, a smooth weighted round robin pick (plain round robin for A/AAAA records),
    then the rest of the usable ones by priority, then those marked down."""

    __slots__ = ("label", "endpoints", "_listed", "_lock", "_credit")

    def __init__(self, label: str, endpoints: Iterable[Endpoint] = ()) -> None:
        self.label = label
        self._lock = threading.Lock()
        self._credit: dict[tuple, int] = {}
        self.endpoints: tuple[Endpoint, ...] = ()
        self._listed: frozenset[tuple] = frozenset()
        self.replace(endpoints)

    # -- worker threads ------------------------------------------------------------

    def order(self, skip: frozenset[tuple[str, int]] | None = None,
              down: frozenset[tuple[str, int]] | None = None) -> Sequence[Endpoint]:
        """``skip``: (ip, port) addresses the health checks took out, left out
        altogether unless that would leave none; ``down``: addresses that refused a
        connection within ``retry`` (server-wide, ``backend_table.AddressMarks``),
        offered last."""
        eps = self.endpoints
        if len(eps) <= 1:
            return eps
        with self._lock:
            eps = self.endpoints
            if skip:
                eps = tuple(e for e in eps if e.sockaddr[:2] not in skip) or eps
                if len(eps) == 1:
                    return eps
            usable = [e for e in eps if e.sockaddr[:2] not in down] if down else list(eps)
            pool = usable or list(eps)  # all down: try them all anyway
            top = min(e.priority for e in pool)
            chosen = self._pick([e for e in pool if e.priority == top])
        rest = sorted((e for e in pool if e is not chosen), key=lambda e: e.priority)
        if len(pool) < len(eps):
            rest.extend(e for e in eps if e not in pool)
        return [chosen, *rest]

    def _pick(self, group: list[Endpoint]) -> Endpoint:
        """Smooth weighted round robin (lock held); all-zero weights count as equal."""
        if len(group) == 1:
            return group[0]
        weights = [e.weight for e in group]
        if not any(weights):
            weights = [1] * len(group)
        credit = self._credit
        best, best_credit = group[0], None
        for e, w in zip(group, weights, strict=True):
            c = credit.get(e.sockaddr, 0) + w
            credit[e.sockaddr] = c
            if best_credit is None or c > best_credit:
                best, best_credit = e, c
        assert best_credit is not None
        credit[best.sockaddr] = best_credit - sum(weights)
        return best

    def listed(self, sockaddr: tuple | None) -> bool:
        """Is ``sockaddr`` still one of the addresses (lock-free: a frozenset read)?"""
        return sockaddr in self._listed

    # -- dns thread ----------------------------------------------------------------

    def replace(self, endpoints: Iterable[Endpoint]) -> list[tuple]:
        """Publish a new answer; returns the socket addresses that left the set."""
        new = tuple(dict.fromkeys(endpoints))
        listed = frozenset(e.sockaddr for e in new)
        with self._lock:
            old = self._listed
            self.endpoints = new
            self._listed = listed
            for key in [k for k in self._credit if k not in listed]:
                del self._credit[key]
        return [a for a in old if a not in listed]


def _literal(host: str) -> socket.AddressFamily | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _sockaddr(family: int, ip: str, port: int, v6: tuple = (0, 0)) -> tuple:
    return (ip, port) if family == socket.AF_INET else (ip, port, *v6)


class LookupFailed(Exception):
    """A lookup that gave no usable answer; ``nx`` when the name has no such records."""

    def __init__(self, reason: str, nx: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.nx = nx


# A host's addresses: (family, ip, ipv6 flow/scope); ports are the set's own.
_Hosts = tuple[tuple[int, str, tuple], ...]


class _Name:
    """One name to look up and the address sets built from its answer (dns thread,
    except creation under ``Resolver._lock``)."""

    __slots__ = ("qname", "srv", "sets", "next_at", "failures", "good_at", "failing",
                 "answer", "srv_targets", "bad_targets")

    def __init__(self, qname: str, srv: bool) -> None:
        self.qname = qname
        self.srv = srv
        self.sets: dict[int, AddressSet] = {}  # by port (an SRV name: one set, port 0)
        self.next_at = 0.0
        self.failures = 0
        self.good_at: float | None = None  # monotonic time of the last good answer
        self.failing = False  # a failure was logged and no success since
        self.answer: tuple[Endpoint, ...] = ()  # last good answer, ports 0 for A names
        self.srv_targets: dict[str, _Hosts] = {}  # SRV: last good addresses per target
        self.bad_targets: set[str] = set()  # SRV targets whose failure was logged


class Resolver:
    """Every upstream name of one child: address sets for the workers, refreshed by
    the ``dns`` thread (``start``)."""

    def __init__(self, servers: Sequence[str] = (), ttl_floor: float = DEFAULT_DNS_TTL_FLOOR,
                 ttl_ceiling: float = DEFAULT_DNS_TTL_CEILING,
                 log: ErrorLogger | None = None) -> None:
        self.servers = tuple(servers)
        self.floor = ttl_floor
        self.ceiling = max(ttl_ceiling, ttl_floor)
        self.log = log
        # told (from the dns thread) when addresses leave a set: (host, port, sockaddrs)
        self.on_removed: Callable[[str, int, list[tuple]], None] | None = None
        self.failures: dict[str, str] = {}  # name -> why its last lookup failed
        self._sets: dict[tuple[str, int], AddressSet] = {}
        self._names: dict[tuple[str, bool], _Name] = {}
        self._lock = threading.Lock()  # guards the two tables above while they grow
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._first_round = threading.Event()
        self._stopping = False

    # -- any thread -------------------------------------------------------------------

    def address_set(self, host: str, port: int, srv: bool = False) -> AddressSet:
        """The set for ``host:port`` (an SRV name: ``port`` 0), made on first use.
        A host that starts with ``_`` is an SRV name (the config allows it only so)."""
        found = self._sets.get((host, port))  # URL hosts come lower-cased already
        if found is not None:
            return found
        key = (host.lower(), port)
        srv = srv or host.startswith("_")
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                return found
            family = _literal(host)
            if family is not None:
                found = AddressSet(host, [Endpoint(family, _sockaddr(family, host, port))])
            else:
                label = host if srv else f"{host}:{port}"
                found = AddressSet(label)
                name = self._names.get((key[0], srv))
                if name is None:
                    name = self._names[(key[0], srv)] = _Name(key[0], srv)
                name.sets[port] = found
                if name.answer:
                    found.replace(self._endpoints(name, port))
            self._sets[key] = self._sets[(host, port)] = found
        if family is None:
            self._poke()
        return found

    def start(self, wait: float = STARTUP_WAIT) -> None:
        """Start the ``dns`` thread; return once the first round is done, or after
        ``wait`` seconds (the names still missing keep being tried)."""
        with self._lock:
            if not self._names or self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="dns", daemon=True)
        self._thread.start()
        self._first_round.wait(wait)

    def stop(self) -> None:
        self._stopping = True
        self._poke()
        if self._thread is not None:
            self._thread.join(LOOKUP_DEADLINE)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop is closed: the thread is gone
                pass

    # -- dns thread --------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            self._loop = None
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wake = asyncio.Event()
        self._loop = loop
        while not self._stopping:
            now = time.monotonic()
            with self._lock:
                names = list(self._names.values())
            due = [n for n in names if n.next_at <= now + BATCH]
            if due:
                await self._round(due)
            self._first_round.set()
            now = time.monotonic()
            upcoming = min((n.next_at for n in names), default=now + 3600.0)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, upcoming - now))
            except TimeoutError:
                pass
            self._wake.clear()

    async def _round(self, due: list[_Name]) -> None:
        # A fresh channel per round: c-ares would otherwise answer from its own
        # cache for the whole TTL, whatever our ceiling says.
        dns = aiodns.DNSResolver(nameservers=list(self.servers) or None,
                                 timeout=QUERY_TIMEOUT, tries=QUERY_TRIES)
        try:
            await asyncio.gather(*(self._refresh(dns, n) for n in due))
        finally:
            await dns.close()

    async def _refresh(self, dns: aiodns.DNSResolver, name: _Name) -> None:
        try:
            lookup = self._lookup_srv(dns, name) if name.srv else self._lookup_host(dns,
                                                                                  name.qname)
            answer, ttl = await asyncio.wait_for(lookup, LOOKUP_DEADLINE)
            if not answer:
                raise LookupFailed("no address records", nx=True)
        except Exception as exc:  # noqa: BLE001 - whatever happens, the loop lives on
            self._failed(name, exc if isinstance(exc, LookupFailed) else _failure(exc))
            return
        now = time.monotonic()
        if name.failing and self.log is not None:
            self.log.notice("proxy", f"DNS lookup for {name.qname} works again")
        name.failing = False
        name.failures = 0
        self.failures.pop(name.qname, None)
        name.good_at = now
        name.next_at = now + min(max(ttl, self.floor), self.ceiling)
        self._publish(name, answer)

    def _failed(self, name: _Name, exc: LookupFailed) -> None:
        now = time.monotonic()
        name.failures += 1
        name.next_at = now + min(self.floor * 2 ** (name.failures - 1), RETRY_CAP,
                                 self.ceiling)
        self.failures[name.qname] = exc.reason
        kept = ", ".join(e.shown for e in self._all_endpoints(name))
        if exc.nx and name.answer and (name.good_at is None
                                       or now - name.good_at >= self.ceiling):
            if self.log is not None:
                self.log.error("proxy", f"AH00898: DNS lookup failure for: {name.qname} "
                               f"({exc.reason}) for {self.ceiling:g}s: dropping its addresses "
                               f"{kept}")
            self._publish(name, ())
            name.failing = True
            return
        if name.failing:
            return
        name.failing = True
        if self.log is not None:
            tail = (f"; keeping the last good answer ({kept})" if kept
                    else "; requests for it get 503 until it resolves")
            self.log.error("proxy", f"AH00898: DNS lookup failure for: {name.qname} "
                           f"({exc.reason}){tail}")

    def _publish(self, name: _Name, answer: tuple[Endpoint, ...]) -> None:
        before = self._all_endpoints(name)
        name.answer = answer
        with self._lock:
            sets = list(name.sets.items())
        for port, aset in sets:
            removed = aset.replace(self._endpoints(name, port))
            if removed and self.on_removed is not None:
                host = name.qname
                self.on_removed(host, port, removed)
        after = self._all_endpoints(name)
        if before != after and self.log is not None:
            self.log.info("proxy", f"DNS: {name.qname} now resolves to "
                          f"{', '.join(e.shown for e in after) or 'nothing'}")

    def _endpoints(self, name: _Name, port: int) -> list[Endpoint]:
        if name.srv:
            return list(name.answer)
        return [Endpoint(e.family, (e.sockaddr[0], port, *e.sockaddr[2:])) for e in name.answer]

    def _all_endpoints(self, name: _Name) -> tuple[Endpoint, ...]:
        if name.srv or not name.answer:
            return name.answer
        port = min(name.sets, default=0)
        return tuple(self._endpoints(name, port))

    async def _lookup_host(self, dns: aiodns.DNSResolver,
                           host: str) -> tuple[tuple[Endpoint, ...], float]:
        hosts, ttl = await self._host_addresses(dns, host)
        return tuple(Endpoint(socket.AddressFamily(f), _sockaddr(f, ip, 0, v6))
                     for f, ip, v6 in hosts), ttl

    async def _host_addresses(self, dns: aiodns.DNSResolver, host: str) -> tuple[_Hosts, float]:
        try:
            result = await dns.getaddrinfo(host, type=socket.SOCK_STREAM)
        except aiodns.error.DNSError as exc:
            raise _failure(exc) from None
        found: dict[tuple[int, str], tuple] = {}
        ttls = [c.ttl for c in result.cnames]
        for node in result.nodes:
            ip = node.addr[0].decode("ascii") if isinstance(node.addr[0], bytes) else node.addr[0]
            found.setdefault((node.family, ip), tuple(node.addr[2:4]))
            ttls.append(node.ttl)
        if not found:
            raise LookupFailed("no address records", nx=True)
        return tuple((f, ip, v6) for (f, ip), v6 in found.items()), float(min(ttls))

    async def _lookup_srv(self, dns: aiodns.DNSResolver,
                          name: _Name) -> tuple[tuple[Endpoint, ...], float]:
        try:
            result = await dns.query_dns(name.qname, "SRV")
        except aiodns.error.DNSError as exc:
            raise _failure(exc) from None
        records = [r for r in result.answer if r.type == pycares.QUERY_TYPE_SRV]
        if not records:
            raise LookupFailed("no SRV records", nx=True)
        ttls = [float(r.ttl) for r in records]
        extra: dict[str, list[tuple[int, str, tuple]]] = {}
        for r in result.additional:
            if r.type in (pycares.QUERY_TYPE_A, pycares.QUERY_TYPE_AAAA):
                family = socket.AF_INET if r.type == pycares.QUERY_TYPE_A else socket.AF_INET6
                extra.setdefault(r.name.rstrip(".").lower(), []).append((family, r.data.addr,
                                                                         (0, 0)))
                ttls.append(float(r.ttl))
        targets = {r.data.target.rstrip(".").lower() for r in records}
        targets.discard("")  # target "." means "no such service here" (RFC 2782)
        missing = [t for t in targets if t not in extra]
        looked = await asyncio.gather(*(self._host_addresses(dns, t) for t in missing),
                                      return_exceptions=True)
        hosts: dict[str, _Hosts] = {t: tuple(extra[t]) for t in targets if t in extra}
        for target, got in zip(missing, looked, strict=True):
            if isinstance(got, BaseException):
                previous = name.srv_targets.get(target)
                if previous:
                    hosts[target] = previous  # keep that target's last good addresses
                    ttls.append(self.floor)  # and ask again soon
                elif self.log is not None and target not in name.bad_targets:
                    self.log.error("proxy", f"AH00898: DNS lookup failure for: {target} "
                                   f"(target of {name.qname}): {got}")
                name.bad_targets.add(target)
                continue
            name.bad_targets.discard(target)
            hosts[target] = got[0]
            ttls.append(got[1])
        name.srv_targets = hosts
        endpoints = []
        for r in sorted(records, key=lambda r: (r.data.priority, -r.data.weight)):
            for family, ip, v6 in hosts.get(r.data.target.rstrip(".").lower(), ()):
                endpoints.append(Endpoint(socket.AddressFamily(family),
                                          _sockaddr(family, ip, r.data.port, v6),
                                          r.data.priority, r.data.weight))
        return tuple(endpoints), min(ttls)


def _failure(exc: BaseException) -> LookupFailed:
    if isinstance(exc, LookupFailed):
        return exc
    if isinstance(exc, aiodns.error.DNSError) and exc.args:
        code = exc.args[0]
        text = exc.args[1] if len(exc.args) > 1 else str(code)
        return LookupFailed(str(text), nx=code in _NX)
    if isinstance(exc, TimeoutError):
        return LookupFailed("timed out")
    return LookupFailed(f"{type(exc).__name__}: {exc}")
