"""Timeout queues: FIFO per fixed timeout, and the heap for deadlines that move."""

from __future__ import annotations

import socket

from proxympm.config.model import HostConfig, ReadStage
from proxympm.http.request import Limits, RequestReader
from proxympm.mpm.connection import Connection, State
from proxympm.mpm.timeouts import DeadlineHeap, TimeoutQueue


def conn() -> Connection:
    a, b = socket.socketpair()
    b.close()
    c = Connection(a, ("127.0.0.1", 1), ("127.0.0.1", 2), RequestReader(Limits()),
                   HostConfig(), tls=False)
    c.set_state(State.READ_HEAD)
    return c


def test_fifo_expires_in_order_and_drops_stale_entries() -> None:
    q = TimeoutQueue(5.0, State.KEEPALIVE)
    a, b = conn(), conn()
    for c in (a, b):
        c.set_state(State.KEEPALIVE)
    q.push(a, 100.0)
    q.push(b, 101.0)
    a.set_state(State.PROCESSING)  # a moved on: its entry is stale
    assert q.next_deadline() == 106.0
    assert list(q.expired(105.5)) == []
    assert list(q.expired(106.0)) == [b]


def test_minrate_moves_a_deadline_up_to_its_max() -> None:
    c = conn()
    c.start_stage(ReadStage(20, 40, 500), now=1000.0)
    assert c.read_deadline == 1020.0
    c.bytes_in += 5000  # ten more seconds
    c.extend_deadline()
    assert c.read_deadline == 1030.0
    c.bytes_in += 50000
    c.extend_deadline()
    assert c.read_deadline == 1040.0  # capped at max


def test_heap_repushes_a_moved_deadline_and_expires_the_rest() -> None:
    heap = DeadlineHeap((State.READ_HEAD, State.READ_BODY))
    slow, trickling, gone = conn(), conn(), conn()
    for c in (slow, trickling, gone):
        c.start_stage(ReadStage(20, 40, 500), now=0.0)
        heap.push(c)
    trickling.bytes_in += 2500
    trickling.extend_deadline()  # +5 s
    gone.set_state(State.PROCESSING)
    assert heap.expired(19.0) == []
    assert heap.expired(20.0) == [slow]
    assert heap.next_deadline() == 25.0
    assert heap.expired(25.0) == [trickling]
    assert heap.next_deadline() is None


def test_heap_sheds_stale_entries_so_keepalive_traffic_cannot_grow_it() -> None:
    """Each keep-alive request pushes a read deadline that goes stale at once; the
    heap must not keep them (and their connections) until the deadlines pass."""
    heap = DeadlineHeap((State.READ_HEAD,))
    waiting = [conn() for _ in range(10)]  # really waiting for a head: must survive
    for i, c in enumerate(waiting):
        c.start_stage(ReadStage(20, 40, 500), now=float(i))
        heap.push(c)
    busy = conn()
    for n in range(50_000):  # one connection serving 50,000 requests in a row
        busy.set_state(State.READ_HEAD)
        busy.start_stage(ReadStage(20, 40, 500), now=100.0 + n * 1e-4)
        heap.push(busy)
        busy.set_state(State.PROCESSING)  # the head was complete: entry now stale
    assert len(heap) <= 2 * 11 + DeadlineHeap.COMPACT_MIN
    assert heap.expired(25.0) == waiting[:6]  # deadlines 20..25, in order
    assert heap.next_deadline() == 26.0
    assert heap.expired(1000.0) == waiting[6:]
    assert heap.next_deadline() is None


def test_fifo_sheds_stale_entries_behind_a_long_idle_connection() -> None:
    """One client idle at the head for KeepAliveTimeout must not make the queue
    keep every later keep-alive request's (stale) entry until then."""
    q = TimeoutQueue(300.0, State.KEEPALIVE)
    idle = conn()
    idle.set_state(State.KEEPALIVE)
    q.push(idle, 0.0)  # stays live at the head for 300 s
    busy = [conn() for _ in range(4)]
    for n in range(50_000):  # 50,000 keep-alive requests over four connections
        c = busy[n % 4]
        c.set_state(State.KEEPALIVE)
        q.push(c, 1.0 + n * 1e-4)
        if n % 100 == 0:
            assert list(q.expired(1.0 + n * 1e-4)) == []  # the listener's loop
        c.set_state(State.READ_HEAD)  # its next request arrived: entry now stale
    for c in busy[:2]:  # two go idle for good after their last request
        c.set_state(State.KEEPALIVE)
        q.push(c, 10.0)
    assert len(q) <= 2 * 3 + TimeoutQueue.COMPACT_MIN
    # order and deadlines kept: the idle one first, then the two that went idle
    assert list(q.expired(299.0)) == []
    assert list(q.expired(300.0)) == [idle]
    assert q.next_deadline() == 310.0
    assert list(q.expired(310.0)) == busy[:2]
    assert q.next_deadline() is None
