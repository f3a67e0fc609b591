"""Requests waiting for a ``max`` slot, held by the listener thread, not a worker.

A worker whose request must wait in a balancer's (or a capped plain backend's)
server-wide queue gets a ``balancer.Parked`` token instead of blocking, and hands
the connection here (``park``), in QUEUED: the worker is free at once. The
listener then

- watches the client for a hang-up only (EPOLLRDHUP: a request body or pipelined
  bytes may be waiting in the socket, they stay there; TLS alike). A hang-up
  drops the record (``Balancer.abandon``: a slot granted meanwhile goes to the
  next in line) and closes the connection, as a worker did before.
- keeps the queue deadline (the balancer ``timeout``, or a capped worker's
  ``acquire``) in a deadline heap: then 503 with Retry-After, answered by a worker.
- reads the backend table's wake-ups: the wake-up pipe (``fd``, in its poller; a
  grant made by another child names the record) and ``BackendTable.take_ready``
  (grants made in this child). An answered record (a member, or "every member is
  down") sends the connection back to a worker (``Listener.resume_queued``), which
  forwards it to the member it was given: no second acquire.
- every ``GONE_POLL`` while anything waits, ``Balancer.poke``s its balancers:
  slots that opened without a release (a member's ``retry`` over, a health check
  passed) go to the head of the queue.

Waiting costs a connection, not a thread: the queue is not bounded by the
server's threads, and requests to other backends are not held up behind it (the
event MPM's way: waiting connections belong to the listener). A queued request is
not "outstanding" for admission.

Every method runs on the listener thread, except ``park`` (worker thread).
"""

from __future__ import annotations

import select
import time
from collections import deque
from typing import TYPE_CHECKING

from proxympm.mpm.connection import Connection, State
from proxympm.mpm.poller import HANGUP
from proxympm.mpm.timeouts import DeadlineHeap
from proxympm.proxy.balancer import GONE_POLL, Balancer, Parked

if TYPE_CHECKING:
    from proxympm.mpm.listener import Listener
    from proxympm.proxy.backend_table import BackendTable


class Queued:
    """The requests of one child that wait in ``max`` queues."""

    __slots__ = ("listener", "table", "fd", "by_record", "incoming", "deadlines", "poke_at")

    def __init__(self, listener: Listener, table: BackendTable) -> None:
        self.listener = listener
        self.table = table
        self.fd = table.claim_wakes(listener.wake)  # None: no wake-up pipe (one process)
        self.by_record: dict[tuple[int, int], Connection] = {}  # (group index, record)
        self.incoming: deque[Connection] = deque()  # parked by workers, not yet taken
        self.deadlines = DeadlineHeap((State.QUEUED,))
        self.poke_at = 0.0

    def __len__(self) -> int:
        return len(self.by_record)

    def park(self, conn: Connection) -> None:
        """Worker thread: ``conn`` (its ``parked`` token set) waits; the worker lets
        go of it here."""
        self.incoming.append(conn)
        self.listener.wake()

    def on_wake(self, from_pipe: bool) -> None:
        """The listener was woken (by a worker, or in-process grant), or the wake-up
        pipe is readable (another child answered a record of ours)."""
        if from_pipe:
            self.table.read_wakes()
        while self.incoming:
            self._take(self.incoming.popleft())
        for item in self.table.take_ready():
            if item is None:  # every record: a child died, or a wake-up was lost
                for balancer in self._balancers():
                    balancer.poke()
                for conn in list(self.by_record.values()):
                    self._settle(conn)
                continue
            conn = self.by_record.get(item)
            if conn is not None:
                self._settle(conn)

    def _take(self, conn: Connection) -> None:
        token = conn.parked
        assert isinstance(token, Parked)
        conn.set_state(State.QUEUED)
        conn.read_deadline = token.deadline
        self.deadlines.push(conn)
        self.by_record[token.key] = conn
        listener = self.listener
        if listener.poller.hangup:
            listener.arm(conn, HANGUP)
        if not self.poke_at:
            self.poke_at = time.monotonic() + GONE_POLL
        self._settle(conn)  # a grant may have come before we knew the record

    def _settle(self, conn: Connection, timed_out: bool = False) -> None:
        """If the wait of ``conn`` is over, a worker takes it from here."""
        token = conn.parked
        assert isinstance(token, Parked)
        result = token.balancer.settle(token, timed_out)
        if result is None:
            return
        token.result = result
        del self.by_record[token.key]
        self.listener.resume_queued(conn)

    def hung_up(self, conn: Connection) -> None:
        """The client of a queued request hung up: it leaves the queue, and the
        connection closes."""
        token = conn.parked
        assert isinstance(token, Parked)
        del self.by_record[token.key]
        conn.parked = None
        token.balancer.abandon(token)
        self.listener.close(conn)

    def next_deadline(self) -> float | None:
        if not self.by_record:
            return None
        deadline = self.deadlines.next_deadline()
        return self.poke_at if deadline is None else min(deadline, self.poke_at)

    def expire(self, now: float) -> None:
        for conn in self.deadlines.expired(now):
            self._settle(conn, timed_out=True)
        if now < self.poke_at:
            return
        self.poke_at = now + GONE_POLL if self.by_record else 0.0
        for balancer in self._balancers():
            balancer.poke()  # the answers come back through take_ready
        if not self.listener.poller.hangup:  # no EPOLLRDHUP: look at each client
            for conn in list(self.by_record.values()):
                if _hung_up(conn):
                    self.hung_up(conn)

    def _balancers(self) -> list[Balancer]:
        seen: dict[int, Balancer] = {}
        for conn in self.by_record.values():
            balancer = conn.parked.balancer  # type: ignore[union-attr]
            seen[id(balancer)] = balancer
        return list(seen.values())


def _hung_up(conn: Connection) -> bool:
    """Without EPOLLRDHUP in the poller: has the client shut down its side (or is
    its socket in error)? A poll, no read: its pending bytes stay put."""
    events = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
    try:
        poller = select.poll()
        poller.register(conn.fd, events)
        return any(ev & events for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return True
