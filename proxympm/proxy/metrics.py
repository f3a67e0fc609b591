"""Per-backend counters of one child, for server-status and Prometheus.

Each worker thread counts into rows of its own (one Python list per backend, per
thread), so the hot path takes no lock and shares no word with another thread:
``begin`` and ``end`` are a few list increments. The child's main thread sums the
threads' rows a few times a second (``totals``) and publishes them into the
child's backend area of the shared scoreboard, where any child's status handler
reads and sums every child's rows.

Rows are named: ``http://host:port`` for a plain ProxyPass backend,
``balancer://name|http://host:port`` for a balancer member (an attempt on it),
and ``balancer://name`` for the balancer itself (its queue).

Thread model: ``bind``, ``begin`` and ``end`` run on worker threads, each on its
own rows; ``totals`` on the child's main thread (reads without a lock: a count
one request old is fine).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxympm.proxy.routing import Target

# Counter layout of one row (shared with the scoreboard's backend areas).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
(B_STARTED, B_FINISHED, B_ERRORS, B_NEW_CONNS, B_REUSED_CONNS, B_1XX, B_2XX, B_3XX,
 B_4XX, B_5XX, B_LATENCY_US, B_QUEUED, B_POOL_IDLE) = range(13)
B_BUCKET0 = 13  # one count per bucket (not cumulative); the last one is +Inf
COUNTERS = B_BUCKET0 + len(LATENCY_BUCKETS) + 1
GAUGES = (B_QUEUED, B_POOL_IDLE)  # set by the main thread, not counted by workers
_BUCKET_US = tuple(int(b * 1_000_000) for b in LATENCY_BUCKETS)


def member_key(balancer: str, backend: str) -> str:
    return f"{balancer}|{backend}"


class BackendStats:
    __slots__ = ("names", "_index", "_rows", "_local")

    def __init__(self, names: list[str], threads: int) -> None:
        self.names = names
        self._index: dict[Any, int] = {}
        for i, name in enumerate(names):
            balancer, sep, backend = name.partition("|")
            self._index[(balancer, backend) if sep else name] = i
        self._rows = [[[0] * COUNTERS for _ in names] for _ in range(threads)]
        self._local = threading.local()

    def bind(self, thread: int) -> None:
        """Worker thread, once: count into thread ``thread``'s rows from now on."""
        self._local.rows = self._rows[thread]

    def begin(self, target: Target, balancer: str | None) -> list[int] | None:
        """Worker thread: an attempt on ``target`` starts (None: not tracked)."""
        i = self._index.get(target.name if balancer is None else (balancer, target.name))
        if i is None:
            return None
        row: list[int] = self._local.rows[i]
        row[B_STARTED] += 1
        return row

    @staticmethod
    def end(row: list[int], started: float, status: int, failed: bool,
            reused: bool) -> None:
        """Worker thread: the attempt is over (``status`` 0: no response)."""
        us = int((time.monotonic() - started) * 1_000_000)
        row[B_FINISHED] += 1
        row[B_LATENCY_US] += us
        row[B_BUCKET0 + bisect_left(_BUCKET_US, us)] += 1  # le: us <= bound
        if failed:
            row[B_ERRORS] += 1
        if status:
            row[B_1XX + min(4, max(0, status // 100 - 1))] += 1
        row[B_REUSED_CONNS if reused else B_NEW_CONNS] += 1

    def totals(self) -> list[list[int]]:
        """Main thread: every row summed over the threads."""
        out = [[0] * COUNTERS for _ in self.names]
        for rows in self._rows:
            for total, row in zip(out, rows, strict=False):
                for k, v in enumerate(list(row)):
                    total[k] += v
        return out
