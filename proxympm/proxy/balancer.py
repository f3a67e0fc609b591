"""Load balancing: which member of a ``balancer://`` serves a request, and when.

Selection follows mod_proxy_balancer (``proxy_balancer_get_best_worker``): lbsets in
increasing order; in each set the usable regular members, plus one usable hot
spare (``status=+R``) for each regular member that is not usable, are offered to
the lbmethod; the set's hot standbys (``+H``) only when none of those is usable;
the next set only when this one has nothing usable. A member is usable unless it
is stopped (+S), disabled (+D), draining (+N: sticky requests only), excluded for
this request (it already failed it), in error state (until its ``retry`` is over)
or taken out by the active health checks.

A sticky session (``stickysession=COOKIE|urlparam``) names its member by route:
the session id's part after ``stickysessionsep``. The URL parameter wins over the
cookie (httpd). A request whose route member is not usable goes to another
member, unless ``nofailover=On`` (then 503).

lbmethods:

- ``byrequests``: httpd's weighted request counting, i.e. smooth weighted round
  robin (every candidate gains its weight, the richest is chosen and pays the total).
  The credit is in the shared table, so the weights hold across all children.
- ``bytraffic``: httpd's: fewest bytes (sent to plus read from the member) per unit
  of weight.
- ``bybusyness``: fewest requests in flight (server-wide); ties broken by the
  byrequests bookkeeping, so equal load degrades into weighted round robin.
- ``p2c``: power of two choices. Two distinct candidates are sampled at random,
  weighted by loadfactor, and the one with fewer requests in flight per unit of
  weight wins (ties: the first sampled). Why: bybusyness is a global argmin, so
  every chooser that sees the same counts at once sends to the same member (herds);
  two random choices keep most of the benefit (exponentially better maximum load
  than random) while spreading concurrent choosers, at O(1) cost per pick.
- ``peakewma``: two random choices (as p2c) compared by expected cost: the
  member's peak-EWMA response-head latency x (requests in flight + 1) / weight.
  Why: counting requests treats a member that answers in 10 ms like one that
  answers in 2 s; latency-weighted cost steers load away from a member that is
  slow *now* (a GC pause, a noisy neighbour) before its queue grows. The average
  jumps up at once on a slow answer (peak) and decays back with a 10 s time
  constant, also while the member gets no traffic, so a member that was slow is
  tried again later. A member without a measurement costs 0 (it is probed first).
  (Finagle's and Linkerd's balancer; see reverse-proxy-expectations.md.)

``max=N`` caps a member's requests in flight across the whole server. When the
chosen set has usable members but all are at their cap, the request joins the
balancer's FIFO queue in the shared table (``backend_table``), for up to the
balancer ``timeout``, for a slot on any of them: a finishing request, in any
child, hands its slot straight to the head of the queue.

A waiting request holds no thread (``acquire(park=True)``): it gets a ``Parked``
token, the worker hands its connection back to the listener, which watches the
client (a hang-up drops the record: ``abandon``) and the deadline, and looks at the
record when the table wakes it (``settle``); a granted member is then used by a
worker without a second acquire. So the queue is bounded by the server's
connections (and ``backend_table.QUEUE_LIMIT``), not its threads, and requests to
other backends never wait behind it. ``poke`` (the listener, every
``GONE_POLL`` while it has waiters) hands out slots that opened without a release
(a member's ``retry`` over, a health check passed). Without ``park`` (tests,
tools) ``acquire`` blocks, polling ``gone()`` every ``GONE_POLL``.

Thread model: any worker thread calls ``acquire``/``release``/``mark_failed``, the
listener ``settle``/``abandon``/``poke``;
the shared words of a balancer are read and written under its table lock (held
for a list walk, never across I/O or a wait). ``Member`` objects are immutable
views (config plus the index of its shared record).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxympm.config.model import Balancer as BalancerConfig
from proxympm.config.model import BalancerSettings, WorkerParams
from proxympm.proxy import backend_table as bt
from proxympm.proxy.backend_table import AddressMarks, BackendTable, ErrorState, WorkerSpec, now_us
from proxympm.proxy.routing import Target, parse_target

GONE_POLL = 0.25  # seconds between client checks (and pokes) while queued
EWMA_TAU_US = 10_000_000  # peak-EWMA decay time constant


class Member:
    """One BalancerMember: its config, and where its shared record is."""

    __slots__ = ("target", "params", "name", "base_path", "weight", "lbset", "standby",
                 "spare", "stopped", "disabled", "draining", "ignore_errors", "max",
                 "index", "bit", "table", "route", "hc", "marks")

    def __init__(self, url: str, params: WorkerParams, table: BackendTable, index: int,
                 bit: int) -> None:
        self.target: Target = parse_target(url)
        self.params = params
        self.name = url
        # a member's path prefixes what the balancer URL makes of the request path
        self.base_path = self.target.base_path.rstrip(b"/")
        self.weight = max(1, round(params.loadfactor * 100))  # httpd stores lbfactor x100
        self.lbset = params.lbset
        flags = params.status
        self.standby = "H" in flags
        self.spare = "R" in flags
        self.stopped = "S" in flags
        self.disabled = "D" in flags
        self.draining = "N" in flags
        self.ignore_errors = "I" in flags
        self.max = params.max  # None: no cap
        self.route = params.route
        self.table = table
        self.index = index
        self.bit = bit  # 1 << position in the balancer, for exclusion masks
        self.hc = bool(params.hcmethod)  # checked by the watchdog
        self.marks = AddressMarks(table, index)  # addresses taken out / that refused

    def upstream_path(self, path: bytes) -> bytes:
        return self.base_path + path if self.base_path else path

    @property
    def busy(self) -> int:
        """Requests in flight on this member, server-wide."""
        return self.table.get(self.index, bt.INFLIGHT)

    @property
    def failed_until(self) -> float:
        return self.table.get(self.index, bt.ERROR_UNTIL) / 1e6

    @property
    def served(self) -> int:
        return self.table.get(self.index, bt.SERVED)

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


class Parked:
    """A request waiting in a queue without a thread: its record, and what its
    exchange needs to go on (``excluded``/``failed`` member masks, ``tries``;
    ``context``: the worker's). ``result`` is set when the wait is over."""

    __slots__ = ("balancer", "rec", "ticket", "excluded", "failed", "tries", "deadline",
                 "wait", "result", "context")

    def __init__(self, balancer: Balancer, rec: int, ticket: int, excluded: int,
                 deadline: float) -> None:
        self.balancer = balancer
        self.rec = rec
        self.ticket = ticket
        self.excluded = excluded
        self.failed = 0
        self.tries = 0
        self.deadline = deadline  # monotonic
        self.wait = 0.0  # a capped plain worker's ``acquire`` (for its log line)
        self.result: Member | Verdict | None = None
        self.context: tuple | None = None

    @property
    def key(self) -> tuple[int, int]:
        group = self.balancer.group
        assert group is not None
        return group.index, self.rec


def specs_for(config: BalancerConfig) -> list[WorkerSpec]:
    return [WorkerSpec(config.name, m.url, m.params.max, m.params.status, m.params.route,
                       m.params.lbset, m.params.loadfactor) for m in config.members]


class Balancer:
    """One ``balancer://name`` (or one capped plain backend), as this process sees it."""

    def __init__(self, config: BalancerConfig, rng: random.Random | None = None,
                 table: BackendTable | None = None) -> None:
        self.name = config.name
        self.settings: BalancerSettings = config.settings
        if table is None or config.name not in table.groups:
            # a private table: unit tests, or a balancer the arbiter did not know
            table = BackendTable(specs_for(config), 1, 256, shared_lock=False)
        self.table = table
        self.group = table.groups.get(config.name)
        first = self.group.first if self.group is not None else 0
        self.members = tuple(Member(m.url, m.params, table, first + i, 1 << i)
                             for i, m in enumerate(config.members))
        self.all_mask = (1 << len(self.members)) - 1
        method = self.settings.lbmethod
        self._pick: Callable[[list[Member], int], Member] = {
            "byrequests": self._byrequests, "bybusyness": self._bybusyness,
            "p2c": self._p2c, "bytraffic": self._bytraffic, "peakewma": self._peakewma,
        }[method]
        self.lbmethod = method
        self.rng = rng or random.Random()
        # per lbset, in order: (regular members, hot spares, hot standbys)
        tiers = []
        for lbset in sorted({m.lbset for m in self.members}):
            in_set = [m for m in self.members if m.lbset == lbset]
            tiers.append((tuple(m for m in in_set if not m.standby and not m.spare),
                          tuple(m for m in in_set if m.spare and not m.standby),
                          tuple(m for m in in_set if m.standby)))
        self.tiers = tuple(tiers)
        self.routes = {m.route: m for m in self.members if m.route}

    @property
    def maxattempts(self) -> int:
        """Failovers allowed per request (httpd: members - 1, at least 1)."""
        if self.settings.nofailover:
            return 0
        if self.settings.maxattempts is not None:
            return self.settings.maxattempts
        return max(1, len(self.members) - 1)

    @property
    def waiters(self) -> list[int]:
        """Queue records waiting now, in arrival order (for tests)."""
        if self.group is None:
            return []
        t = self.table
        with t.locked(self.group):
            return [r for r in t.held(self.group) if t.q(self.group, r, bt.Q_GRANT) == 0]

    @property
    def queued(self) -> int:
        """How many wait now, server-wide (for the status page)."""
        return self.table.waiting(self.group) if self.group is not None else 0

    # -- selection (lock held) ------------------------------------------------------

    def _usable(self, m: Member, excluded: int, now: int) -> bool:
        t = self.table
        if m.bit & excluded or m.stopped or m.disabled:
            return False
        if m.draining and excluded | m.bit != self.all_mask:
            return False  # +N: only a sticky request (all others excluded) may use it
        return not (t.get(m.index, bt.ERROR_UNTIL) > now or t.get(m.index, bt.HC_FAILED))

    def _choose(self, excluded: int, now: int, commit: bool = True,
                slot: int | None = None) -> Member | str:
        t = self.table
        for regular, spares, standbys in self.tiers:
            usable = [m for m in regular if self._usable(m, excluded, now)]
            missing = len(regular) - len(usable)
            if missing and spares:
                usable += [m for m in spares if self._usable(m, excluded, now)][:missing]
            if not usable:
                usable = [m for m in standbys if self._usable(m, excluded, now)]
            if not usable:
                continue
            free = [m for m in usable if m.max is None or t.get(m.index, bt.INFLIGHT) < m.max]
            if not free:
                return _FULL
            if not commit:
                return free[0]
            chosen = self._pick(free, now)
            t.take(chosen.index, slot)
            return chosen
        return _DOWN

    def _byrequests(self, candidates: list[Member], now: int) -> Member:
        t = self.table
        total = 0
        best: Member | None = None
        best_status = 0
        for m in candidates:
            t.add(m.index, bt.LBSTATUS, m.weight)
            total += m.weight
            status = t.get(m.index, bt.LBSTATUS)
            if best is None or status > best_status:
                best, best_status = m, status
        assert best is not None
        t.add(best.index, bt.LBSTATUS, -total)
        return best

    def _bybusyness(self, candidates: list[Member], now: int) -> Member:
        t = self.table
        total = 0
        best: Member | None = None
        best_key = (0, 0)
        for m in candidates:
            t.add(m.index, bt.LBSTATUS, m.weight)
            total += m.weight
            key = (t.get(m.index, bt.INFLIGHT), -t.get(m.index, bt.LBSTATUS))
            if best is None or key < best_key:
                best, best_key = m, key
        assert best is not None
        t.add(best.index, bt.LBSTATUS, -total)
        return best

    def _bytraffic(self, candidates: list[Member], now: int) -> Member:
        t = self.table
        best: Member | None = None
        best_cost = 0.0
        for m in candidates:
            cost = (t.get(m.index, bt.SENT) + t.get(m.index, bt.READ)) / m.weight
            if best is None or cost < best_cost:
                best, best_cost = m, cost
        assert best is not None
        return best

    def _p2c(self, candidates: list[Member], now: int) -> Member:
        if len(candidates) == 1:
            return candidates[0]
        t = self.table
        first = self._sample(candidates)
        second = self._sample([m for m in candidates if m is not first])
        # fewer in flight per unit of weight; compare busy_a/w_a < busy_b/w_b exactly
        if (t.get(second.index, bt.INFLIGHT) * first.weight
                < t.get(first.index, bt.INFLIGHT) * second.weight):
            return second
        return first

    def _peakewma(self, candidates: list[Member], now: int) -> Member:
        if len(candidates) == 1:
            return candidates[0]
        first = self._sample(candidates)
        second = self._sample([m for m in candidates if m is not first])
        if self._cost(second, now) < self._cost(first, now):
            return second
        return first

    def _cost(self, m: Member, now: int) -> float:
        t = self.table
        ewma = t.get(m.index, bt.EWMA)
        if ewma:
            ewma *= math.exp(-max(0, now - t.get(m.index, bt.EWMA_AT)) / EWMA_TAU_US)
        return ewma * (t.get(m.index, bt.INFLIGHT) + 1) / m.weight

    def _sample(self, candidates: list[Member]) -> Member:
        point = self.rng.random() * sum(m.weight for m in candidates)
        for m in candidates:
            point -= m.weight
            if point < 0:
                return m
        return candidates[-1]

    # -- sticky sessions --------------------------------------------------------------

    def sticky(self, route: str | None) -> tuple[int, Verdict | None]:
        """The exclusion mask a session's route imposes, or a 503 verdict
        (nofailover and its member unusable). No route, or an unknown one: none."""
        if not route:
            return 0, None
        member = self.routes.get(route)
        if member is None:
            return 0, None
        now = now_us()
        with self.table.locked(self.group):  # type: ignore[arg-type]
            t = self.table
            usable = not (member.stopped or member.disabled
                          or t.get(member.index, bt.ERROR_UNTIL) > now
                          or t.get(member.index, bt.HC_FAILED))
        if usable:
            return self.all_mask & ~member.bit, None  # only this one (also if draining)
        if self.settings.nofailover:
            return self.all_mask, self._down_verdict(now)
        return member.bit, None  # fail over to the others

    # -- acquire / release -----------------------------------------------------------

    def acquire(self, excluded: Iterable[Member] | int = (), deadline: float | None = None,
                gone: Callable[[], bool] | None = None,
                park: bool = False) -> Member | Verdict | Parked:
        """A member for one attempt (its in-flight count taken), or why there is none.

        ``excluded``: members (or a bitmask of them) this request may not use.
        When the set to use is at its ``max`` the request joins the FIFO queue until
        ``deadline`` (monotonic). ``park``: return a ``Parked`` token at once (the
        caller's listener waits; see ``settle``). Else wait here, polling ``gone()``;
        if it says the client left, the record is dropped and ``ClientGone`` raised."""
        if self.group is None:
            return Verdict(_DOWN, 1)
        mask = excluded if isinstance(excluded, int) else _mask(excluded)
        table, group = self.table, self.group
        with table.locked(group):
            now = now_us()
            if table.waiting(group) and isinstance(self._choose(mask, now, False), Member):
                self._dispatch(now)  # a slot is free: let those who came first have it
            got = self._choose_or_recover(mask, now, commit=not table.waiting(group))
            if isinstance(got, Member) and not table.waiting(group):
                return got
            if got == _DOWN:
                return self._down_verdict(now)
            if deadline is None or deadline <= time.monotonic():
                return self._busy_verdict()
            rec = table.enqueue(group, mask)
            if rec is None:
                return self._busy_verdict()  # the ring is full (qcap records held)
            if park:
                return Parked(self, rec, table.ticket_of(group, rec), mask, deadline)
            event = table.register(group, rec)
        try:
            while True:
                left = deadline - time.monotonic()
                event.wait(max(0.0, min(left, GONE_POLL)))
                event.clear()
                with table.locked(group):
                    now = now_us()
                    answer = self._answer(rec, now)
                    if answer is not None:
                        return answer
                    if table.head(group) == rec:
                        # e.g. a member's retry expired, or a dead child's slots freed
                        got = self._choose_or_recover(mask, now)
                        if isinstance(got, Member):
                            table.free(group, rec)
                            self._dispatch(now)
                            return got
                        if got == _DOWN:
                            table.free(group, rec)
                            self._dispatch(now)
                            return self._down_verdict(now)
                    if time.monotonic() >= deadline:
                        return self._time_out(rec, now)
                if gone is not None and gone():
                    with table.locked(group):
                        grant = table.q(group, rec, bt.Q_GRANT)
                        was_head = table.head(group) == rec
                        table.free(group, rec)
                        if grant > 0:
                            table.give_back(grant - 1)
                        if grant > 0 or was_head:
                            self._dispatch(now_us())
                    from proxympm.http.errors import ClientGone

                    raise ClientGone("client closed the connection while queued")
        finally:
            table.unregister(group, rec)

    # -- a parked request (listener thread) --------------------------------------------

    def settle(self, token: Parked, timed_out: bool = False) -> Member | Verdict | None:
        """Is the wait of ``token`` over? The member it was given (its in-flight count
        already taken), a verdict (every member down; ``timed_out``: busy), or None:
        it keeps waiting. Its record is freed when the answer is not None."""
        table, group = self.table, self.group
        assert group is not None
        with table.locked(group):
            now = now_us()
            rec = token.rec
            if table.ticket_of(group, rec) != token.ticket:
                return self._busy_verdict()  # (cannot happen: only the reaper drops records)
            answer = self._answer(rec, now)
            if answer is not None or not timed_out:
                return answer
            return self._time_out(rec, now)

    def _answer(self, rec: int, now: int) -> Member | Verdict | None:
        """Lock held: what queue record ``rec`` was answered (the member given, or
        every member down), its record freed; None: not answered yet."""
        table, group = self.table, self.group
        assert group is not None
        grant = table.q(group, rec, bt.Q_GRANT)
        if grant > 0:
            table.free(group, rec)
            return self.members[grant - 1 - group.first]
        if grant < 0:
            table.free(group, rec)
            return self._down_verdict(now)
        return None

    def _time_out(self, rec: int, now: int) -> Verdict:
        """Lock held: the wait of ``rec`` is over unanswered; it leaves the queue (its
        successor becomes the head) and the request gets the busy verdict."""
        table, group = self.table, self.group
        assert group is not None
        was_head = table.head(group) == rec
        table.free(group, rec)
        if was_head:
            self._dispatch(now)
        return self._busy_verdict()

    def abandon(self, token: Parked) -> None:
        """The client of ``token`` went away: its record leaves the queue, and a
        member it was given meanwhile goes to the next in line."""
        table, group = self.table, self.group
        assert group is not None
        with table.locked(group):
            if table.ticket_of(group, token.rec) != token.ticket:
                return
            grant = table.q(group, token.rec, bt.Q_GRANT)
            was_head = grant == 0 and table.head(group) == token.rec
            table.free(group, token.rec)
            if grant > 0:
                table.give_back(grant - 1)
            if grant > 0 or was_head:
                self._dispatch(now_us())

    def poke(self) -> None:
        """Hand out slots that opened without a release (a member's retry is over,
        a health check passed, forcerecovery), to whoever waits first."""
        table, group = self.table, self.group
        if group is None or not table.waiting(group):
            return
        with table.locked(group):
            self._dispatch(now_us(), recover=True)

    def _choose_or_recover(self, mask: int, now: int, commit: bool = True,
                           slot: int | None = None) -> Member | str:
        got = self._choose(mask, now, commit, slot)
        if got == _DOWN and self.settings.forcerecovery and self._force_recovery(mask, now):
            got = self._choose(mask, now, commit, slot)
        return got

    def _force_recovery(self, mask: int, now: int) -> bool:
        """httpd's forcerecovery: every member in error state (none merely stopped,
        disabled, health-failed or excluded) -> clear their error state."""
        t = self.table
        candidates = [m for m in self.members
                      if not (m.bit & mask or m.stopped or m.disabled
                              or t.get(m.index, bt.HC_FAILED))]
        if not candidates or any(t.get(m.index, bt.ERROR_UNTIL) <= now for m in candidates):
            return False
        for m in candidates:
            t.set(m.index, bt.ERROR_UNTIL, 0)
            t.add(m.index, bt.RECOVERIES, 1)
        return True

    def release(self, member: Member, sent: int = 0, read: int = 0,
                latency: float | None = None, failed: bool = False) -> None:
        """The attempt on ``member`` is over: its slot goes to the queue's head.
        ``sent``/``read`` bytes feed bytraffic, ``latency`` (seconds to the
        response head) peak-EWMA; ``failed`` counts an error."""
        t = self.table
        i = member.index
        with t.locked(self.group):  # type: ignore[arg-type]
            now = now_us()
            t.give_back(i)
            if sent or read:
                t.add(i, bt.SENT, sent)
                t.add(i, bt.READ, read)
            if failed:
                t.add(i, bt.ERRORS, 1)
            if latency is not None:
                sample = int(latency * 1_000_000)
                prev = t.get(i, bt.EWMA)
                if sample >= prev:
                    value = sample  # peak: a slow answer counts at once
                else:
                    w = math.exp(-max(0, now - t.get(i, bt.EWMA_AT)) / EWMA_TAU_US)
                    value = int(prev * w + sample * (1 - w))
                t.set(i, bt.EWMA, value)
                t.set(i, bt.EWMA_AT, now)
            if t.waiting(self.group):  # type: ignore[arg-type]
                self._dispatch(now)

    def mark_failed(self, member: Member, now: float | None = None) -> bool:
        """Put ``member`` in error state for its ``retry`` seconds (not with +I or
        retry=0). Returns whether it was."""
        if member.ignore_errors or member.params.retry <= 0:
            return False
        now = time.monotonic() if now is None else now
        t = self.table
        with t.locked(self.group):  # type: ignore[arg-type]
            t.set(member.index, bt.ERROR_UNTIL, int((now + member.params.retry) * 1_000_000))
            if t.waiting(self.group):  # type: ignore[arg-type]
                self._dispatch(now_us())  # waiters for a set that just went down learn it
        return True

    def state(self, excluded: Iterable[Member] | int = ()) -> Verdict | None:
        """Without choosing: None if a member could be given now, else why not."""
        if self.group is None:
            return Verdict(_DOWN, 1)
        mask = excluded if isinstance(excluded, int) else _mask(excluded)
        with self.table.locked(self.group):
            now = now_us()
            got = self._choose(mask, now, commit=False)
        if got == _DOWN:
            return self._down_verdict(now)
        if got == _FULL:
            return self._busy_verdict()
        return None

    # -- internals (lock held) ---------------------------------------------------------

    def _dispatch(self, now: int, recover: bool = False) -> None:
        """Give free slots to waiters, in arrival order, whatever child they are in;
        stop at the first that must keep waiting (first come, first served).
        ``recover``: forcerecovery applies (as when the head chose for itself)."""
        t, group = self.table, self.group
        assert group is not None
        while True:
            rec = t.head(group)
            if rec is None:
                return
            mask = t.q_mask(group, rec)
            owner = t.q(group, rec, bt.Q_OWNER)
            got = (self._choose_or_recover(mask, now, slot=owner) if recover
                   else self._choose(mask, now, slot=owner))
            if isinstance(got, Member):
                t.grant(group, rec, got.index + 1)
            elif got == _DOWN:
                t.grant(group, rec, -1)
            else:
                return

    def _down_verdict(self, now: int) -> Verdict:
        t = self.table
        pending = [t.get(m.index, bt.ERROR_UNTIL) - now for m in self.members
                   if not m.stopped and not m.disabled and t.get(m.index, bt.ERROR_UNTIL) > now]
        wait = min(pending) / 1e6 if pending else 1.0
        return Verdict(_DOWN, max(1, math.ceil(wait)))

    def _busy_verdict(self) -> Verdict:
        return Verdict("busy", max(1, math.ceil(self.settings.timeout)))


def _mask(members: Iterable[Member]) -> int:
    mask = 0
    for m in members:
        mask |= m.bit
    return mask


def session_route(settings: BalancerSettings, target: bytes,
                  cookies: Iterable[bytes]) -> str | None:
    """The route a request's session names (httpd's ``find_session_route``): the URL
    parameter first (``name=value`` anywhere in the path or query, the value ending
    at '?' or '&', or also ';' with ``scolonpathdelim``), then the cookie; the
    route is what follows the first ``stickysessionsep`` in the value."""
    sticky = settings.stickysession
    if not sticky:
        return None
    cookie_name, _, url_name = sticky.partition("|")
    url_name = url_name or cookie_name
    value = _url_param(target, url_name.encode("latin-1"), settings.scolonpathdelim)
    if value is None:
        value = _cookie(cookies, cookie_name.encode("latin-1"))
    if not value:
        return None
    sep = settings.stickysessionsep
    if not sep:
        return value.decode("latin-1")
    _, found, route = value.partition(sep.encode("latin-1"))
    return route.decode("latin-1") if found and route else None


def _url_param(target: bytes, name: bytes, scolon: bool) -> bytes | None:
    delims = b";?&" if scolon else b"?&"
    key = name + b"="
    start = target.find(key)
    while start >= 0:
        value = target[start + len(key):]
        if value:
            end = len(value)
            for d in delims:
                k = value.find(bytes((d,)))
                if 0 <= k < end:
                    end = k
            return value[:end]
        start = target.find(key, start + 1)
    return None


def _cookie(headers: Iterable[bytes], name: bytes) -> bytes | None:
    for header in headers:
        for part in header.replace(b",", b";").split(b";"):
            key, eq, value = part.strip().partition(b"=")
            if eq and key == name:
                return value.strip().strip(b'"')
    return None


class Balancers:
    """Every balancer of the configuration (and every capped plain backend), one
    object each, for one process; their state is in ``table``."""

    __slots__ = ("_by_name", "table", "_workers", "_private")

    def __init__(self, configs: Iterable[BalancerConfig],
                 table: BackendTable | None = None) -> None:
        configs = tuple(configs)
        if table is None:
            table = BackendTable([s for c in configs for s in specs_for(c)], 1, 256,
                                 shared_lock=False)
        self.table = table
        self._by_name = {c.name: Balancer(c, table=table) for c in configs}
        self._workers: dict[str, Balancer] = {}
        self._private: dict[str, ErrorState] = {}

    def get(self, url: str) -> Balancer:
        """The balancer of a ``balancer://name[/path]`` URL; an undeclared one (a
        ProxyPass to a balancer with no members) is empty and answers 503."""
        name = "balancer://" + url[11:].split("/", 1)[0].lower()
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = Balancer(BalancerConfig(name), table=self.table)
        return found

    def capped(self, target: Target, params: WorkerParams) -> Balancer | None:
        """The single-member group that enforces a plain ProxyPass's ``max``."""
        if params.max is None:
            return None
        found = self._workers.get(target.name)
        if found is None:
            from proxympm.config.model import BalancerMember

            config = BalancerConfig(target.name, (BalancerMember(target.name, params),),
                                    BalancerSettings(forcerecovery=False))
            found = self._workers[target.name] = Balancer(config, table=self.table)
        return found

    def error_state(self, target: Target) -> ErrorState:
        """Where a plain backend's error state is: its record in the shared table (a
        private one-record table for a backend the arbiter did not know: unit tests)."""
        table = self.table
        group = table.groups.get(target.name)
        if group is not None and table.specs[group.first].url == target.name:
            return ErrorState(table, group.first)
        found = self._private.get(target.name)
        if found is None:
            table = BackendTable([WorkerSpec(target.name, target.name, None, error_only=True)],
                                 1, 1, shared_lock=False)
            found = self._private[target.name] = ErrorState(table, 0)
        return found

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())


def plain_specs(hosts_routes: Iterable[tuple[str | None, WorkerParams]]) -> list[WorkerSpec]:
    """The shared records of plain ProxyPass backends: one per backend origin (its
    server-wide error state; with ``max``, also its cap and queue: the first route
    that gives a ``max`` sets it)."""
    seen: dict[str, WorkerSpec] = {}
    for url, params in hosts_routes:
        if url is None or url[:11].lower() == "balancer://":
            continue
        name = parse_target(url).name
        spec = seen.get(name)
        if spec is None or (spec.max is None and params.max is not None):
            seen[name] = WorkerSpec(name, name, params.max, error_only=params.max is None)
    return list(seen.values())


def table_for(config, slots: int, queue_capacity: int) -> BackendTable:  # type: ignore[no-untyped-def]
    """Arbiter: the shared table for a configuration (balancers, then plain backends)."""
    specs = [s for b in config.balancers for s in specs_for(b)]
    routes = [(r.url, r.params) for h in config.all_hosts() for r in h.routes]
    specs += plain_specs(routes)
    return BackendTable(specs, slots, queue_capacity)
