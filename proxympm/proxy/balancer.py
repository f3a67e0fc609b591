"""Load balancing: which member of a ``balancer://`` serves a request, and when.

Selection follows mod_proxy_balancer (``proxy_balancer_get_best_worker``): lbsets in
increasing order; in each set the usable regular members are offered to the
lbmethod, and the set's hot standbys (``status=+H``) only when no regular member of
the set is usable; the next set only when this one has nothing usable. A member is
usable unless it is stopped (+S), disabled (+D), excluded for this request (it
already failed it) or in error state (``failed_until`` in the future).

lbmethods:

- ``byrequests``: httpd's weighted request counting, i.e. smooth weighted round
  robin (every candidate gains its weight, the richest is chosen and pays the total).
- ``bybusyness``: fewest requests in flight; ties broken by the byrequests
  bookkeeping, so equal load degrades into weighted round robin (httpd's rule).
- ``p2c``: power of two choices. Two distinct candidates are sampled at random,
  weighted by loadfactor, and the one with fewer requests in flight per unit of
  weight wins (ties: the first sampled). Why: bybusyness is a global argmin, so
  every chooser that sees the same counts sends to the same member; with counts
  that are per child (and so stale for the other children) that makes herds.
  Two random choices keep most of the benefit (exponentially better maximum load
  than random) while spreading concurrent choosers, at O(1) cost per pick.

``max=N`` on a member caps its requests in flight. When the chosen set has usable
members but all are at their cap, the request joins this balancer's FIFO queue and
waits, up to the balancer ``timeout``, for a slot on any of them: a finishing request
hands its slot straight to the head of the queue (``_dispatch``), so the order is
first come, first served. A waiter polls its client every ``GONE_POLL`` seconds and
leaves the queue if the client went away.

**Per child process:** busy counts, ``max``, the queue and error state live in
this object, one per child (``Balancers`` is built by the child). Until the shared
scoreboard exists, the server-wide cap of a member is ``max`` x children.

Thread model: any worker thread calls ``acquire``/``release``/``mark_failed``;
every mutable field of a balancer and its members is guarded by ``Balancer.lock``
(held for a list walk, never across I/O or a wait). ``failed_until`` is written
under the lock and may be read without it (a float written whole) for logging.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxympm.config.model import Balancer as BalancerConfig
from proxympm.config.model import BalancerSettings, WorkerParams
from proxympm.proxy.routing import Target, parse_target

GONE_POLL = 0.25  # seconds between client checks while queued


class Member:
    """One BalancerMember as this child sees it."""

    __slots__ = ("target", "params", "name", "base_path", "weight", "lbset", "standby",
                 "stopped", "disabled", "ignore_errors", "max", "failed_until", "busy",
                 "lbstatus", "served")

    def __init__(self, url: str, params: WorkerParams) -> None:
        self.target: Target = parse_target(url)
        self.params = params
        self.name = url
        # a member's path prefixes what the balancer URL makes of the request path
        self.base_path = self.target.base_path.rstrip(b"/")
        self.weight = max(1, round(params.loadfactor * 100))  # httpd stores lbfactor x100
        self.lbset = params.lbset
        flags = params.status
        self.standby = "H" in flags
        self.stopped = "S" in flags
        self.disabled = "D" in flags
        self.ignore_errors = "I" in flags
        self.max = params.max  # None: no cap
        self.failed_until = 0.0
        self.busy = 0  # requests in flight (guarded by the balancer lock)
        self.lbstatus = 0  # byrequests / bybusyness bookkeeping
        self.served = 0

    def upstream_path(self, path: bytes) -> bytes:
        return self.base_path + path if self.base_path else path

    def __repr__(self) -> str:
        return f"<Member {self.name} busy={self.busy}>"


@dataclass(slots=True)
class Verdict:
    """Why no member was given: every usable one is in error ("down"), or all of the
    chosen set were at their ``max`` until the queue timeout ("busy")."""

    reason: str
    retry_after: int  # seconds, for the Retry-After header


_DOWN = "down"
_FULL = "full"


class _Ticket:
    __slots__ = ("excluded", "event", "member", "down")

    def __init__(self, excluded: frozenset[Member]) -> None:
        self.excluded = excluded
        self.event = threading.Event()
        self.member: Member | None = None
        self.down = False


class Balancer:
    """One ``balancer://name`` in one child."""

    def __init__(self, config: BalancerConfig, rng: random.Random | None = None) -> None:
        self.name = config.name
        self.settings: BalancerSettings = config.settings
        self.members = tuple(Member(m.url, m.params) for m in config.members)
        method = self.settings.lbmethod
        self._pick: Callable[[list[Member]], Member] = {
            "byrequests": self._byrequests, "bybusyness": self._bybusyness,
            "p2c": self._p2c,
        }[method]
        self.lbmethod = method
        self.rng = rng or random.Random()
        self.lock = threading.Lock()
        self.waiters: deque[_Ticket] = deque()
        # tiers in selection order: per lbset, the regular members then the standbys
        tiers: list[tuple[Member, ...]] = []
        for lbset in sorted({m.lbset for m in self.members}):
            for standby in (False, True):
                tier = tuple(m for m in self.members if m.lbset == lbset and m.standby == standby)
                if tier:
                    tiers.append(tier)
        self.tiers = tuple(tiers)

    @property
    def maxattempts(self) -> int:
        """Failovers allowed per request (httpd: members - 1, at least 1)."""
        if self.settings.nofailover:
            return 0
        if self.settings.maxattempts is not None:
            return self.settings.maxattempts
        return max(1, len(self.members) - 1)

    # -- selection (lock held) ------------------------------------------------------

    def _choose(self, excluded: Iterable[Member], now: float,
                commit: bool = True) -> Member | str:
        excluded = excluded if isinstance(excluded, (set, frozenset)) else set(excluded)
        for tier in self.tiers:
            usable = [m for m in tier if m not in excluded and not m.stopped
                      and not m.disabled and m.failed_until <= now]
            if not usable:
                continue
            free = [m for m in usable if m.max is None or m.busy < m.max]
            if not free:
                return _FULL
            if not commit:
                return free[0]
            chosen = self._pick(free)
            chosen.busy += 1
            chosen.served += 1
            return chosen
        return _DOWN

    def _byrequests(self, candidates: list[Member]) -> Member:
        total = 0
        best: Member | None = None
        for m in candidates:
            m.lbstatus += m.weight
            total += m.weight
            if best is None or m.lbstatus > best.lbstatus:
                best = m
        assert best is not None
        best.lbstatus -= total
        return best

    def _bybusyness(self, candidates: list[Member]) -> Member:
        total = 0
        best: Member | None = None
        for m in candidates:
            m.lbstatus += m.weight
            total += m.weight
            if (best is None or m.busy < best.busy
                    or (m.busy == best.busy and m.lbstatus > best.lbstatus)):
                best = m
        assert best is not None
        best.lbstatus -= total
        return best

    def _p2c(self, candidates: list[Member]) -> Member:
        if len(candidates) == 1:
            return candidates[0]
        first = self._sample(candidates)
        second = self._sample([m for m in candidates if m is not first])
        # fewer in flight per unit of weight; compare busy_a/w_a < busy_b/w_b exactly
        if second.busy * first.weight < first.busy * second.weight:
            return second
        return first

    def _sample(self, candidates: list[Member]) -> Member:
        point = self.rng.random() * sum(m.weight for m in candidates)
        for m in candidates:
            point -= m.weight
            if point < 0:
                return m
        return candidates[-1]

    # -- acquire / release -----------------------------------------------------------

    def acquire(self, excluded: Iterable[Member] = (), deadline: float | None = None,
                gone: Callable[[], bool] | None = None) -> Member | Verdict:
        """A member for one attempt (its busy count taken), or why there is none.

        Waits in the FIFO queue, until ``deadline`` (monotonic), when the set to use
        is at its ``max``. ``gone()`` is polled meanwhile; if it says the client left,
        the ticket is dropped and ``ClientGone`` raised."""
        excluded = frozenset(excluded)
        now = time.monotonic()
        with self.lock:
            if not self.waiters:
                got = self._choose(excluded, now)
                if isinstance(got, Member):
                    return got
            else:
                got = self._choose(excluded, now, commit=False)
            if got == _DOWN:
                return self._down_verdict(now)
            if deadline is None or deadline <= now:
                return self._busy_verdict()
            ticket = _Ticket(excluded)
            self.waiters.append(ticket)
        while True:
            left = deadline - time.monotonic()
            ticket.event.wait(max(0.0, min(left, GONE_POLL)))
            with self.lock:
                if ticket.member is not None:
                    return ticket.member
                now = time.monotonic()
                if ticket.down:
                    return self._down_verdict(now)
                if self.waiters and self.waiters[0] is ticket:
                    got = self._choose(excluded, now)  # e.g. a member's retry expired
                    if isinstance(got, Member):
                        self.waiters.popleft()
                        self._dispatch(now)
                        return got
                    if got == _DOWN:
                        self.waiters.popleft()
                        self._dispatch(now)
                        return self._down_verdict(now)
                if now >= deadline:
                    self._leave(ticket, now)
                    return self._busy_verdict()
            if gone is not None and gone():
                with self.lock:
                    if ticket.member is not None:
                        self._release_locked(ticket.member)
                    else:
                        self._leave(ticket, time.monotonic())
                from proxympm.http.errors import ClientGone

                raise ClientGone("client closed the connection while queued")

    def release(self, member: Member) -> None:
        """The attempt on ``member`` is over: its slot goes to the queue's head."""
        with self.lock:
            self._release_locked(member)

    def mark_failed(self, member: Member, now: float | None = None) -> bool:
        """Put ``member`` in error state for its ``retry`` seconds (not with +I or
        retry=0). Returns whether it was."""
        if member.ignore_errors or member.params.retry <= 0:
            return False
        now = time.monotonic() if now is None else now
        with self.lock:
            member.failed_until = now + member.params.retry
            self._dispatch(now)  # waiters for a set that just went down must learn it
        return True

    def state(self, excluded: Iterable[Member] = ()) -> Verdict | None:
        """Without choosing: None if a member could be given now, else why not."""
        now = time.monotonic()
        with self.lock:
            got = self._choose(excluded, now, commit=False)
        if got == _DOWN:
            return self._down_verdict(now)
        if got == _FULL:
            return self._busy_verdict()
        return None

    # -- internals (lock held) ---------------------------------------------------------

    def _release_locked(self, member: Member) -> None:
        member.busy -= 1
        self._dispatch(time.monotonic())

    def _dispatch(self, now: float) -> None:
        """Give free slots to waiters, in arrival order; stop at the first that must
        keep waiting (first come, first served, also across members)."""
        while self.waiters:
            ticket = self.waiters[0]
            got = self._choose(ticket.excluded, now)
            if isinstance(got, Member):
                ticket.member = got
            elif got == _DOWN:
                ticket.down = True
            else:
                return
            self.waiters.popleft()
            ticket.event.set()

    def _leave(self, ticket: _Ticket, now: float) -> None:
        head = bool(self.waiters) and self.waiters[0] is ticket
        try:
            self.waiters.remove(ticket)
        except ValueError:
            return
        if head:
            self._dispatch(now)

    def _down_verdict(self, now: float) -> Verdict:
        pending = [m.failed_until - now for m in self.members
                   if not m.stopped and not m.disabled and m.failed_until > now]
        wait = min(pending) if pending else 1.0
        return Verdict(_DOWN, max(1, math.ceil(wait)))

    def _busy_verdict(self) -> Verdict:
        return Verdict("busy", max(1, math.ceil(self.settings.timeout)))


class Balancers:
    """Every balancer of the configuration, one object each, for one child."""

    __slots__ = ("_by_name",)

    def __init__(self, configs: Iterable[BalancerConfig]) -> None:
        self._by_name = {c.name: Balancer(c) for c in configs}

    def get(self, url: str) -> Balancer:
        """The balancer of a ``balancer://name[/path]`` URL; an undeclared one (a
        ProxyPass to a balancer with no members) is empty and answers 503."""
        name = "balancer://" + url[11:].split("/", 1)[0].lower()
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = Balancer(BalancerConfig(name))
        return found

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())
