"""Timeout queues with O(1) expiry, as httpd's event MPM keeps them.

Each queue has one fixed timeout, so an entry appended now expires no earlier
than every entry before it: expiry only ever looks at the head. An entry carries
the connection's epoch at the time it was queued; if the connection has moved on
(another state, another request) the entry is stale and is dropped when reached,
instead of searching the queue to remove it.

Thread model: the listener thread pops; worker threads may append (``deque``
append and popleft are atomic with respect to each other, on free-threaded
CPython too).
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Iterator

from proxympm.mpm.connection import Connection, State


class TimeoutQueue:
    """A fixed-timeout FIFO. An entry goes stale when its connection moves on, and
    stays until it reaches the head; behind one long-idle live entry (a keep-alive
    client that says nothing for KeepAliveTimeout) every later request's entry would
    pile up, at thousands a second for up to KeepAliveTimeout. So ``expired`` (the
    listener) filters the stale ones out whenever the queue has doubled past
    ``COMPACT_MIN`` since it last did: at most twice the live entries plus
    ``COMPACT_MIN``, amortised O(1) a push."""

    __slots__ = ("timeout", "state", "_q", "_compact_at")

    COMPACT_MIN = 4096

    def __init__(self, timeout: float, state: State) -> None:
        self.timeout = timeout
        self.state = state
        self._q: deque[tuple[float, Connection, int]] = deque()
        self._compact_at = self.COMPACT_MIN

    def push(self, conn: Connection, now: float) -> None:
        """Queue ``conn`` (already in ``self.state``) to expire ``timeout`` from now."""
        self._q.append((now + self.timeout, conn, conn.epoch))

    def next_deadline(self) -> float | None:
        q = self._q
        while q:
            deadline, conn, epoch = q[0]
            if conn.epoch == epoch and conn.state == self.state:
                return deadline
            q.popleft()
        return None

    def expired(self, now: float) -> Iterator[Connection]:
        """Pop and yield every live entry whose deadline has passed."""
        q = self._q
        if len(q) >= self._compact_at:
            self._compact()
        while q:
            deadline, conn, epoch = q[0]
            if conn.epoch != epoch or conn.state != self.state:
                q.popleft()
                continue
            if deadline > now:
                return
            q.popleft()
            yield conn

    def _compact(self) -> None:
        """Listener thread: drop stale entries, in place and in order. Workers may
        append meanwhile (at the right end): only the entries present now are taken
        from the left, and the live ones go back in front of anything appended since."""
        q = self._q
        state = self.state
        live = []
        for _ in range(len(q)):
            entry = q.popleft()
            conn = entry[1]
            if conn.epoch == entry[2] and conn.state == state:
                live.append(entry)
        q.extendleft(reversed(live))
        self._compact_at = max(self.COMPACT_MIN, 2 * len(q))

    def drain(self) -> Iterator[Connection]:
        """Pop every live entry regardless of deadline (graceful stop)."""
        q = self._q
        while q:
            _, conn, epoch = q.popleft()
            if conn.epoch == epoch and conn.state == self.state:
                yield conn

    def __len__(self) -> int:
        return len(self._q)


class DeadlineHeap:
    """Read deadlines that move: mod_reqtimeout's MinRate pushes a connection's
    deadline out as bytes arrive, so these cannot share a fixed-timeout FIFO.

    A heap keyed on the deadline at push time; when an entry comes due and the
    connection's ``read_deadline`` has moved further out, it is pushed again at
    the new time (O(log n) per move, paid only on expiry). Stale entries are
    dropped as with TimeoutQueue. The listener pops; the worker that owns a
    connection may push (pipelined input), hence the lock.

    Every keep-alive request pushes an entry that goes stale within microseconds
    (the head usually arrives whole), and a stale entry is only dropped when its
    deadline comes, tens of seconds later: at thousands of requests a second that is
    hundreds of thousands of entries, each keeping a (possibly closed) connection
    alive. So when the heap doubles past ``COMPACT_MIN`` the stale entries are
    filtered out (amortised O(1) a push): the heap stays within twice the live
    entries plus ``COMPACT_MIN``.
    """

    __slots__ = ("_heap", "_seq", "_lock", "states", "_compact_at")

    COMPACT_MIN = 4096

    def __init__(self, states: tuple[State, ...]) -> None:
        self._heap: list[tuple[float, int, Connection, int]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self.states = states
        self._compact_at = self.COMPACT_MIN

    def push(self, conn: Connection) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._heap, (conn.read_deadline, self._seq, conn, conn.epoch))
            if len(self._heap) >= self._compact_at:
                self._compact()

    def _compact(self) -> None:
        live = self._live
        heap = [entry for entry in self._heap if live(entry[2], entry[3])]
        heapq.heapify(heap)
        self._heap = heap
        self._compact_at = max(self.COMPACT_MIN, 2 * len(heap))

    def _live(self, conn: Connection, epoch: int) -> bool:
        return conn.epoch == epoch and conn.state in self.states

    def next_deadline(self) -> float | None:
        with self._lock:
            heap = self._heap
            while heap:
                deadline, _, conn, epoch = heap[0]
                if self._live(conn, epoch):
                    return deadline
                heapq.heappop(heap)
            return None

    def expired(self, now: float) -> list[Connection]:
        due: list[Connection] = []
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, conn, epoch = heapq.heappop(heap)
                if not self._live(conn, epoch):
                    continue
                if conn.read_deadline > now:  # moved out by MinRate meanwhile
                    self._seq += 1
                    heapq.heappush(heap, (conn.read_deadline, self._seq, conn, epoch))
                    continue
                due.append(conn)
        return due

    def __len__(self) -> int:
        return len(self._heap)
