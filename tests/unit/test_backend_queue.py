"""The ``max`` queue of the shared backend table: a ring of records with a head
pointer that only moves forward, and parked (thread-less) waiters."""

from __future__ import annotations

import os
import time

from proxympm.config.model import Balancer as BalancerConfig
from proxympm.config.model import BalancerMember, BalancerSettings, WorkerParams
from proxympm.proxy import backend_table as bt
from proxympm.proxy.backend_table import BackendTable, make_wake_pipes
from proxympm.proxy.balancer import Balancer, Member, Parked, Verdict, specs_for


def config(n: int = 1, max_: int = 1, timeout: float = 5.0) -> BalancerConfig:
    return BalancerConfig(
        "balancer://q",
        tuple(BalancerMember(f"http://127.0.0.1:{9000 + i}", WorkerParams(max=max_))
              for i in range(n)),
        BalancerSettings(timeout=timeout),
    )


def table(qcap: int, n: int = 1) -> tuple[BackendTable, bt.Group]:
    t = BackendTable(specs_for(config(n)), 1, qcap, shared_lock=False)
    return t, t.groups["balancer://q"]


def test_head_is_arrival_order_and_skips_what_left() -> None:
    t, g = table(8)
    recs = [t.enqueue(g, 0) for _ in range(5)]
    assert recs == [0, 1, 2, 3, 4]
    assert t.head(g) == 0
    t.free(g, 0)
    t.free(g, 2)  # out of order: the middle one leaves
    assert t.head(g) == 1
    t.grant(g, 1, 1)
    assert t.head(g) == 3  # granted (not yet collected) and freed ones are passed
    t.free(g, 3)
    assert t.head(g) == 4
    assert t.waiting(g) == 1
    assert list(t.held(g)) == [1, 4]  # the granted record is held until collected
    t.free(g, 4)
    assert t.head(g) is None and t.waiting(g) == 0


def test_ring_wraps_around_and_is_full_only_while_the_oldest_is_held() -> None:
    t, g = table(4)
    first = [t.enqueue(g, 0) for _ in range(4)]
    assert first == [0, 1, 2, 3]
    assert t.enqueue(g, 0) is None  # full: ticket 5 needs record 0, held by ticket 1
    t.free(g, 1)  # a later one leaving does not make room for the next ticket...
    assert t.enqueue(g, 0) is None
    t.free(g, 0)  # ...the oldest one does
    assert t.enqueue(g, 0) == 0
    assert t.ticket_of(g, 0) == 5
    assert t.enqueue(g, 0) == 1  # record 1 was freed earlier: ticket 6
    assert [t.ticket_of(g, r) for r in t.held(g)] == [3, 4, 5, 6]
    order = []
    while (rec := t.head(g)) is not None:
        order.append(t.ticket_of(g, rec))
        t.free(g, rec)
    assert order == [3, 4, 5, 6]
    # many laps: the pointers keep up, the count stays right
    for lap in range(50):
        recs = [t.enqueue(g, 0) for _ in range(3)]
        assert None not in recs
        assert t.head(g) == recs[0]
        for rec in reversed(recs):
            t.free(g, rec)
        assert t.waiting(g) == 0 and list(t.held(g)) == [], lap


def test_exclusion_masks_survive_in_the_ring() -> None:
    t, g = table(4, n=70)  # two mask words
    rec = t.enqueue(g, (1 << 69) | 5)
    assert rec is not None and t.q_mask(g, rec) == (1 << 69) | 5


def test_parked_requests_are_granted_in_order_without_a_thread() -> None:
    b = Balancer(config(max_=1))
    woken: list[int] = []
    b.table.claim_wakes(lambda: woken.append(1))
    first = b.acquire()
    assert isinstance(first, Member)
    later = time.monotonic() + 5
    parked = [b.acquire(deadline=later, park=True) for _ in range(3)]
    assert all(isinstance(p, Parked) for p in parked)
    assert [p.rec for p in parked] == b.waiters  # type: ignore[union-attr]
    assert all(b.settle(p) is None for p in parked)  # type: ignore[arg-type]
    b.abandon(parked[0])  # type: ignore[arg-type]
    assert b.queued == 2
    b.release(first)
    assert woken and b.table.take_ready() == [parked[1].key]  # type: ignore[union-attr]
    got = b.settle(parked[1])  # type: ignore[arg-type]
    assert isinstance(got, Member) and got.busy == 1
    assert b.settle(parked[2]) is None  # type: ignore[arg-type]
    timed_out = b.settle(parked[2], timed_out=True)  # type: ignore[arg-type]
    assert isinstance(timed_out, Verdict) and timed_out.reason == "busy"
    assert b.queued == 0 and b.waiters == []


def test_a_grant_to_a_client_that_left_goes_to_the_next() -> None:
    b = Balancer(config(max_=1))
    b.table.claim_wakes(lambda: None)
    first = b.acquire()
    later = time.monotonic() + 5
    a, c = (b.acquire(deadline=later, park=True) for _ in range(2))
    assert isinstance(first, Member) and isinstance(a, Parked) and isinstance(c, Parked)
    b.release(first)  # granted to a...
    b.abandon(a)  # ...which hung up before it was told: c gets it
    got = b.settle(c)
    assert isinstance(got, Member) and got.busy == 1


def test_mark_failed_answers_parked_requests_with_down() -> None:
    b = Balancer(config(max_=1))
    b.table.claim_wakes(lambda: None)
    first = b.acquire()
    p = b.acquire(deadline=time.monotonic() + 5, park=True)
    assert isinstance(first, Member) and isinstance(p, Parked)
    b.mark_failed(first)
    got = b.settle(p)
    assert isinstance(got, Verdict) and got.reason == "down"


def test_a_grant_from_another_process_names_the_record_in_the_wake_pipe() -> None:
    cfg = config(max_=1)
    t = BackendTable(specs_for(cfg), 2, 8)
    reads, writes = make_wake_pipes(2)
    t.wake_fds, t.wake_reads = writes, reads
    try:
        t.attach(0, writes, reads[0])
        assert t.claim_wakes(lambda: None) == reads[0]
        mine = Balancer(cfg, table=t)
        held = mine.acquire()
        assert isinstance(held, Member)
        p = mine.acquire(deadline=time.monotonic() + 5, park=True)
        assert isinstance(p, Parked)
        pid = os.fork()
        if pid == 0:  # "child 1" answers our record, as its release would
            code = 1
            try:
                t.attach(1, writes, reads[1])
                group = t.groups["balancer://q"]
                with t.locked(group):
                    t.grant(group, p.rec, held.index + 1)
                code = 0
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
        assert t.read_wakes()
        assert t.take_ready() == [p.key]
        got = mine.settle(p)
        assert got is held
        # a pipe too full to take a wake-up: the owner's RESCAN word makes it look
        # at every record on its next read
        os.write(writes[0], bt.WAKE.pack(*bt.RESCAN))
        t.w[t._rescan_base] = 1  # type: ignore[attr-defined]
        assert t.read_wakes()
        assert t.take_ready() == [None]
        assert t.w[t._rescan_base] == 0  # type: ignore[attr-defined]
    finally:
        for fd in (*reads, *writes):
            os.close(fd)
        t.close()
