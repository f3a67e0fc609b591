"""The backend table: server-wide state of every load-balanced or capped backend.

httpd keeps worker state in shared memory (slotmem) so that every child sees the
same error flags; proxympm keeps there also what makes ``max=N`` a cap for the
whole server: requests in flight, and the FIFO queue of requests waiting for a
free member. The arbiter builds the table from the configuration before it forks
(an anonymous shared mapping, like the scoreboard), so every child of a
generation, and the watchdog, map the same pages.

Records ("workers", httpd's word): one per BalancerMember, and one per plain
``ProxyPass`` backend origin (a group of one), whose ``ERROR_UNTIL`` makes its
``retry`` server-wide: a child that finds the backend refusing connections writes
it, and every child reads it before connecting (``ErrorState``: one word, no lock).
A *group* is a balancer (or such a plain backend); it owns a FIFO queue of waiting
requests (used by a plain backend only when it has ``max``).

Words of a worker record (int64; times in microseconds of CLOCK_MONOTONIC, which
every process on the machine shares, unless named ``WALL``):
``ERROR_UNTIL`` (in error state until), ``INFLIGHT`` (sum over children),
``LBSTATUS`` (byrequests' smooth round-robin credit: server-wide, so the weights
hold exactly across children), ``SERVED``, ``ERRORS``, ``SENT``/``READ`` (bytes,
for bytraffic), ``EWMA``/``EWMA_AT`` (peak-EWMA latency), and the health-check
words that only the watchdog writes. Per child slot, ``inflight[slot][worker]``:
the same count split by child, so that when a child dies (even by SIGKILL) the
arbiter subtracts what it held and clears its queue entries (``reap_child``).

Queue records of a group: ``TICKET`` (arrival number, 0: free), ``OWNER`` (child
slot), ``GRANT`` (0 waiting; k+1: member k was given, its in-flight count taken
for the owner; -1: every member went down) and an exclusion bitmask (members the
request may not use: ones that already failed it, or all but its sticky member).
The records are a ring: ticket t lives in record (t - 1) % qcap, so arrival order
is record order. ``G_HEAD`` is a ticket at or before the first one still waiting
and only moves forward, past records granted or freed (the head is O(1)
amortised, whatever the queue's length); ``G_TAIL`` is the oldest ticket whose
record may still be held (granted, not yet collected). The queue is full when the
record the next ticket needs still holds the ticket qcap before it. A release hands
the freed slot straight to the head (``dispatch``), whatever child it is in, and
wakes that child through its wake-up pipe with the record's number (8 bytes:
group, record; a write of at most PIPE_BUF bytes is atomic). If that pipe is full,
the child's ``RESCAN`` word says "look at all your records".

A waiting request holds no thread: the child's listener thread watches its
connection and reads the wake-up pipe (``claim_wakes``); on a wake-up it looks at
the named record (``take_ready``). Without a listener (tests, tools) a blocking
``Balancer.acquire`` waits on a ``threading.Event`` that a small thread sets.

Locking: one lock per group, made of a per-process ``threading.Lock`` and a POSIX
record lock (``lockf``) on one byte of a shared temp file. The kernel drops a
record lock when its process dies, so a child killed while holding it cannot
wedge the server. The lock is held for a few word reads and writes, never across
I/O or a wait. Health-check words have one writer (the watchdog) and are read
without the lock. For a name with several addresses (or an SRV name) each worker
has two address lists, in a mapping of their own as text lines behind a sequence
word (a seqlock: odd while written; a reader that finds it odd or changed keeps what
it had): the addresses its health checks took out (the watchdog writes), and those
that refused a connection within ``retry`` (a child writes, holding the group lock),
so every child leaves out or tries last what one of them found (``AddressMarks``).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

# worker record
(ERROR_UNTIL, INFLIGHT, LBSTATUS, SERVED, ERRORS, SENT, READ, EWMA, EWMA_AT,
 HC_FAILED, HC_PASSES, HC_FAILS, HC_LAST_WALL_MS, HC_LAST_RESULT, HC_CHECKS,
 RECOVERIES) = range(16)
W_FIELDS = 16
# group header
G_NEXT_TICKET, G_WAITING, G_HEAD, G_TAIL = range(4)
G_FIELDS = 4
# queue record
Q_TICKET, Q_OWNER, Q_GRANT = range(3)
Q_FIXED = 3

# A queue's records are a ring of this many at most (the server's connection
# capacity is the natural bound, since a waiting request holds a connection; but
# with a large RLIMIT_NOFILE that is millions). 65536 records of 4 words are 2 MiB
# of anonymous shared memory per balancer, touched as tickets go round.
QUEUE_LIMIT = 65536
WAKE = struct.Struct("=ii")  # a wake-up message: group index, record
RESCAN = (-1, -1)  # "look at every record you own"

HC_RESULT_NONE = 0  # no check yet
HC_RESULT_CONNECT = -1  # connect (or TCP check) failed
HC_RESULT_TIMEOUT = -2
HC_RESULT_INVALID = -3  # not an HTTP response
HC_RESULT_TLS = -4  # TLS handshake failed (e.g. the certificate was not trusted)
# Per worker, two lists of addresses (of a name with several addresses, or an SRV
# name), each a sequence word (odd while it is written), the text's length, then lines:
# HC_LIST "ip port": taken out by the health checks (the watchdog writes);
# DOWN_LIST "ip port until": refused a connection, avoided until ``until`` (any child
# writes, holding the worker's group lock).
HC_LIST, DOWN_LIST = 0, 1
ADDR_LIST_BYTES = 1024
_LIST_WORDS = (16 + ADDR_LIST_BYTES) // 8


def now_us() -> int:
    return int(time.monotonic() * 1_000_000)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the table knows of a worker (static, from the config)."""

    group: str  # balancer name, or the backend's name for a capped plain worker
    url: str
    max: int | None
    flags: str = ""  # configured status flags (D S I H R N)
    route: str = ""
    lbset: int = 0
    loadfactor: float = 1.0
    # a plain ProxyPass backend without ``max``: the record only carries its error
    # state (the status page's per-backend rows count its requests)
    error_only: bool = False


class Group:
    """One balancer (or capped plain worker): its records and its queue."""

    __slots__ = ("name", "index", "first", "count", "mask_words", "qbase", "qcap", "qsize",
                 "hbase", "tlock")

    def __init__(self, name: str, index: int, first: int, count: int, qcap: int) -> None:
        self.name = name
        self.index = index
        self.first = first
        self.count = count
        self.mask_words = max(1, (count + 62) // 63)
        self.qcap = qcap
        self.qsize = Q_FIXED + self.mask_words
        self.qbase = 0  # set by the table
        self.hbase = 0
        self.tlock = threading.Lock()


class BackendTable:
    """Shared words for ``specs`` (grouped in order), ``slots`` child slots."""

    def __init__(self, specs: Iterable[WorkerSpec], slots: int, queue_capacity: int,
                 shared_lock: bool = True) -> None:
        self.specs = tuple(specs)
        self.slots = max(1, slots)
        self.groups: dict[str, Group] = {}
        order: list[str] = []
        for i, spec in enumerate(self.specs):
            group = self.groups.get(spec.group)
            if group is None:
                order.append(spec.group)
                group = self.groups[spec.group] = Group(spec.group, len(order) - 1, i, 0,
                                                        max(1, queue_capacity))
            elif group.first + group.count != i:
                raise ValueError(f"workers of {spec.group} are not contiguous")
            group.count += 1
            if spec.error_only and group.count == 1:
                group.qcap = 1  # a plain backend without ``max`` never queues
        for group in self.groups.values():
            group.mask_words = max(1, (group.count + 62) // 63)
            group.qsize = Q_FIXED + group.mask_words
        n = len(self.specs)
        self._inflight_base = n * W_FIELDS
        offset = self._inflight_base + self.slots * n
        for group in self.groups.values():
            group.hbase = offset
            offset += G_FIELDS
            group.qbase = offset
            offset += group.qcap * group.qsize
        self._rescan_base = offset  # one word per child slot
        offset += self.slots
        self._map = mmap.mmap(-1, max(8, offset * 8))  # MAP_SHARED | MAP_ANONYMOUS
        self.w = memoryview(self._map).cast("q")
        for group in self.groups.values():
            self.w[group.hbase + G_HEAD] = self.w[group.hbase + G_TAIL] = 1
        self._lockfile = tempfile.TemporaryFile() if shared_lock else None
        # a mapping of its own, so the record and queue layout above stay as they are
        self._hc_map = mmap.mmap(-1, max(1, n) * 2 * _LIST_WORDS * 8)
        self.hw = memoryview(self._hc_map).cast("q")  # its words: sequence, length
        self.slot = 0
        self.wake_fds: list[int] = []  # write ends, by child slot (arbiter-made pipes)
        self.wake_reads: list[int] = []  # read ends, by child slot
        self.wake_r: int | None = None  # this child's read end
        self._local: dict[tuple[int, int], threading.Event] = {}  # (group, record) -> event
        self._local_lock = threading.Lock()
        self._wake_thread: threading.Thread | None = None
        # The listener (claim_wakes): records answered, for it to look at; None in
        # the list: every record. ``on_ready`` wakes it.
        self.ready: list[tuple[int, int] | None] = []
        self.on_ready: Callable[[], None] | None = None
        self._partial = b""

    # -- life cycle ------------------------------------------------------------------

    def attach(self, slot: int, wake_fds: list[int] | None = None,
               wake_r: int | None = None) -> None:
        """In a child, right after fork: this process's slot, fresh thread locks."""
        self.slot = slot
        self.wake_fds = list(wake_fds or [])
        self.wake_r = wake_r
        for group in self.groups.values():
            group.tlock = threading.Lock()
        self._local = {}
        self._local_lock = threading.Lock()
        self._wake_thread = None
        self.ready = []
        self.on_ready = None
        self._partial = b""

    def claim_wakes(self, on_ready: Callable[[], None]) -> int | None:
        """Child, before serving: the listener thread takes this child's wake-ups.
        Returns the wake-up pipe's read end (made non-blocking) for its poller;
        ``on_ready`` is called (any thread) when ``take_ready`` has news."""
        self.on_ready = on_ready
        if self.wake_r is not None:
            os.set_blocking(self.wake_r, False)
        return self.wake_r

    def close(self) -> None:
        try:
            self.w.release()
            self._map.close()
            self.hw.release()
            self._hc_map.close()
        except (BufferError, ValueError):
            pass
        if self._lockfile is not None:
            self._lockfile.close()

    # -- locking -----------------------------------------------------------------------

    def locked(self, group: Group) -> _Locked:
        return _Locked(self, group)

    def _lock(self, group: Group) -> None:
        group.tlock.acquire()
        if self._lockfile is not None:
            try:
                fcntl.lockf(self._lockfile.fileno(), fcntl.LOCK_EX, 1, group.index)
            except BaseException:
                group.tlock.release()
                raise

    def _unlock(self, group: Group) -> None:
        if self._lockfile is not None:
            fcntl.lockf(self._lockfile.fileno(), fcntl.LOCK_UN, 1, group.index)
        group.tlock.release()

    # -- words ---------------------------------------------------------------------------

    def get(self, worker: int, field: int) -> int:
        return self.w[worker * W_FIELDS + field]

    def set(self, worker: int, field: int, value: int) -> None:
        self.w[worker * W_FIELDS + field] = value

    def add(self, worker: int, field: int, delta: int) -> None:
        self.w[worker * W_FIELDS + field] += delta

    def take(self, worker: int, slot: int | None = None) -> None:
        """Lock held: one more request in flight on ``worker`` for ``slot``."""
        slot = self.slot if slot is None else slot
        self.w[self._inflight_base + slot * len(self.specs) + worker] += 1
        self.w[worker * W_FIELDS + INFLIGHT] += 1
        self.w[worker * W_FIELDS + SERVED] += 1

    def give_back(self, worker: int) -> None:
        """Lock held: a request of this process on ``worker`` is over."""
        i = self._inflight_base + self.slot * len(self.specs) + worker
        if self.w[i] > 0:
            self.w[i] -= 1
            self.w[worker * W_FIELDS + INFLIGHT] -= 1

    def inflight_of(self, slot: int, worker: int) -> int:
        return self.w[self._inflight_base + slot * len(self.specs) + worker]

    # -- queue records (lock held) ---------------------------------------------------------

    def q(self, group: Group, rec: int, field: int) -> int:
        return self.w[group.qbase + rec * group.qsize + field]

    def q_set(self, group: Group, rec: int, field: int, value: int) -> None:
        self.w[group.qbase + rec * group.qsize + field] = value

    def q_mask(self, group: Group, rec: int) -> int:
        base = group.qbase + rec * group.qsize + Q_FIXED
        mask = 0
        for k in range(group.mask_words):
            mask |= self.w[base + k] << (63 * k)
        return mask

    def waiting(self, group: Group) -> int:
        return self.w[group.hbase + G_WAITING]

    def enqueue(self, group: Group, mask: int) -> int | None:
        """A queue record for this process (its ticket is ``ticket_of``), or None
        if the queue is full."""
        w = self.w
        hb = group.hbase
        ticket = w[hb + G_NEXT_TICKET] + 1
        rec = (ticket - 1) % group.qcap
        base = group.qbase + rec * group.qsize
        if w[base + Q_TICKET]:
            return None  # the ticket qcap before this one still holds the record
        w[hb + G_NEXT_TICKET] = ticket
        w[base + Q_TICKET] = ticket
        w[base + Q_OWNER] = self.slot
        w[base + Q_GRANT] = 0
        for k in range(group.mask_words):
            w[base + Q_FIXED + k] = (mask >> (63 * k)) & ((1 << 63) - 1)
        w[hb + G_WAITING] += 1
        return rec

    def ticket_of(self, group: Group, rec: int) -> int:
        return self.w[group.qbase + rec * group.qsize + Q_TICKET]

    def free(self, group: Group, rec: int) -> None:
        """Forget a record; if it was still waiting, it leaves the queue."""
        w = self.w
        base = group.qbase + rec * group.qsize
        ticket = w[base + Q_TICKET]
        if ticket and w[base + Q_GRANT] == 0:
            w[group.hbase + G_WAITING] -= 1
        w[base + Q_TICKET] = 0
        w[base + Q_GRANT] = 0
        if ticket == w[group.hbase + G_TAIL]:
            self._advance_tail(group)

    def _advance_tail(self, group: Group) -> None:
        w = self.w
        hb = group.hbase
        tail, last = w[hb + G_TAIL], w[hb + G_NEXT_TICKET]
        while tail <= last and self.ticket_of(group, (tail - 1) % group.qcap) != tail:
            tail += 1
        w[hb + G_TAIL] = tail

    def held(self, group: Group) -> Iterator[int]:
        """Records that hold a ticket (waiting, or granted and not yet collected),
        in arrival order."""
        w = self.w
        for ticket in range(w[group.hbase + G_TAIL], w[group.hbase + G_NEXT_TICKET] + 1):
            rec = (ticket - 1) % group.qcap
            if self.ticket_of(group, rec) == ticket:
                yield rec

    def head(self, group: Group) -> int | None:
        """The waiting record that came first."""
        w = self.w
        hb = group.hbase
        if not w[hb + G_WAITING]:
            w[hb + G_HEAD] = w[hb + G_NEXT_TICKET] + 1
            return None
        ticket, last = w[hb + G_HEAD], w[hb + G_NEXT_TICKET]
        while ticket <= last:  # every ticket before G_HEAD is granted or freed
            rec = (ticket - 1) % group.qcap
            base = group.qbase + rec * group.qsize
            if w[base + Q_TICKET] == ticket and w[base + Q_GRANT] == 0:
                w[hb + G_HEAD] = ticket
                return rec
            ticket += 1
        w[hb + G_WAITING] = 0  # (cannot happen: the count said someone waits)
        w[hb + G_HEAD] = ticket
        return None

    def grant(self, group: Group, rec: int, value: int) -> None:
        """Lock held: answer the waiting record (member index + 1, or -1: down)."""
        base = group.qbase + rec * group.qsize
        self.w[base + Q_GRANT] = value
        self.w[group.hbase + G_WAITING] -= 1
        self.notify(group, rec, self.w[base + Q_OWNER])

    # -- wake-ups -------------------------------------------------------------------------

    def notify(self, group: Group, rec: int, owner: int) -> None:
        """Lock held: the record's owner must look at it (this process: at once)."""
        if owner == self.slot:
            self._deliver(group.index, rec)
            return
        self._send(owner, group.index, rec)

    def _send(self, owner: int, group: int, rec: int) -> None:
        if 0 <= owner < len(self.wake_fds):
            try:
                os.write(self.wake_fds[owner], WAKE.pack(group, rec))
            except BlockingIOError:
                # A full pipe: the owner will read it and then see this word. Try
                # once more after setting it, in case the owner emptied the pipe
                # (and looked at the word) in between.
                self.w[self._rescan_base + owner] = 1
                try:
                    os.write(self.wake_fds[owner], WAKE.pack(*RESCAN))
                except OSError:
                    pass
            except OSError:
                pass

    def _deliver(self, group: int, rec: int) -> None:
        """Any thread of this process: a blocking waiter's event, or the listener."""
        with self._local_lock:
            event = self._local.get((group, rec))
            if event is None:
                self.ready.append((group, rec))
            wake = self.on_ready
        if event is not None:
            event.set()
        elif wake is not None:
            wake()

    def _deliver_all(self) -> None:
        with self._local_lock:
            events = list(self._local.values())
            self.ready.append(None)
            wake = self.on_ready
        for event in events:
            event.set()
        if wake is not None:
            wake()

    def take_ready(self) -> list[tuple[int, int] | None]:
        """Listener: the records answered since the last call (None: all)."""
        with self._local_lock:
            ready, self.ready = self.ready, []
        return ready

    def read_wakes(self) -> bool:
        """Read this child's wake-up pipe (listener, or the wake thread) and deliver
        what it names. False at EOF or on an error."""
        assert self.wake_r is not None
        try:
            data = os.read(self.wake_r, 65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        data = self._partial + data
        whole = len(data) - len(data) % WAKE.size
        self._partial = data[whole:]
        everything = False
        rescan = self._rescan_base + self.slot
        if self.slot >= 0 and self.w[rescan]:
            self.w[rescan] = 0
            everything = True
        for group, rec in WAKE.iter_unpack(data[:whole]):
            if (group, rec) == RESCAN:
                everything = True
            else:
                self._deliver(group, rec)
        if everything:
            self._deliver_all()
        return True

    def register(self, group: Group, rec: int) -> threading.Event:
        """A blocking waiter (no listener takes this process's wake-ups)."""
        event = threading.Event()
        with self._local_lock:
            self._local[(group.index, rec)] = event
            if (self._wake_thread is None and self.wake_r is not None
                    and self.on_ready is None):
                self._wake_thread = threading.Thread(target=self._wake_loop,
                                                     name="queue-wake", daemon=True)
                self._wake_thread.start()
        return event

    def unregister(self, group: Group, rec: int) -> None:
        with self._local_lock:
            self._local.pop((group.index, rec), None)

    def _wake_loop(self) -> None:
        """A thread of its own in a process without a listener: another process
        answered one of our queue records."""
        while self.read_wakes():
            pass

    # -- the arbiter's cleanup ------------------------------------------------------------

    def reap_child(self, slot: int) -> int:
        """Arbiter: the child in ``slot`` is gone. Subtract what it held in flight,
        drop its queue records, and hand the freed slots on. Returns the number
        of in-flight requests it had not given back."""
        leaked = 0
        waiting = False
        n = len(self.specs)
        for group in self.groups.values():
            with self.locked(group):
                for worker in range(group.first, group.first + group.count):
                    i = self._inflight_base + slot * n + worker
                    held = self.w[i]
                    if held:
                        leaked += held
                        self.w[i] = 0
                        self.w[worker * W_FIELDS + INFLIGHT] -= held
                for rec in list(self.held(group)):
                    if self.q(group, rec, Q_OWNER) == slot:
                        self.free(group, rec)
                waiting = waiting or bool(self.waiting(group))
        if 0 <= slot < self.slots:
            self.w[self._rescan_base + slot] = 0  # a new child starts afresh
        if waiting:
            # the head of each queue, in whatever child, takes the freed slots
            for owner in range(len(self.wake_fds)):
                if owner != slot:
                    self._send(owner, *RESCAN)
        return leaked

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, object]]:
        """Every worker's state now, for the status page and tests (no lock: each
        number is current, the set of them may be a moment apart).

        Keys: ``balancer`` (group name), ``member`` (URL), ``max`` (None: no cap),
        ``route``, ``lbset``, ``loadfactor``, ``status`` (httpd's flag letters: the
        configured ones, plus ``E`` while in error state and ``C`` while taken out
        by the health checks; "" is OK), ``in_flight``, ``queued`` (requests of its
        group waiting), ``served``, ``errors``, ``in_error`` and ``error_for``
        (seconds of error state left),
        ``sent``/``read`` (bytes), ``latency_ms`` (peak-EWMA, 0: none yet),
        ``hc_failed``, ``hc_checks``, ``hc_last`` (wall time of the last check, 0:
        none), ``hc_result`` (its status code, or -1 connect failure, -2 timeout,
        -3 invalid response, -4 TLS handshake failed, 0 none), ``recoveries`` (forced
        recoveries)."""
        out = []
        now = now_us()
        for i, spec in enumerate(self.specs):
            if spec.error_only:
                continue
            group = self.groups[spec.group]
            until = self.get(i, ERROR_UNTIL)
            status = spec.flags + ("E" if until > now else "") + (
                "C" if self.get(i, HC_FAILED) else "")
            out.append({
                "balancer": spec.group, "member": spec.url, "max": spec.max,
                "route": spec.route, "lbset": spec.lbset, "loadfactor": spec.loadfactor,
                "status": status,
                "in_flight": self.get(i, INFLIGHT), "queued": self.waiting(group),
                "served": self.get(i, SERVED), "errors": self.get(i, ERRORS),
                "in_error": until > now, "error_for": max(0.0, (until - now) / 1e6),
                "sent": self.get(i, SENT), "read": self.get(i, READ),
                "latency_ms": self.get(i, EWMA) / 1000.0,
                "hc_failed": bool(self.get(i, HC_FAILED)), "hc_checks": self.get(i, HC_CHECKS),
                "hc_last": self.get(i, HC_LAST_WALL_MS) / 1000.0,
                "hc_result": self.get(i, HC_LAST_RESULT),
                "recoveries": self.get(i, RECOVERIES),
            })
        return out

    def plain_errors(self) -> dict[str, float]:
        """Every plain ProxyPass backend (capped or not) by name: seconds of its
        server-wide error state left, 0.0 when it is usable (for the status page)."""
        now = now_us()
        return {spec.url: max(0.0, (self.get(i, ERROR_UNTIL) - now) / 1e6)
                for i, spec in enumerate(self.specs) if spec.group == spec.url}

    def index(self, group: str, url: str) -> int:
        for i, spec in enumerate(self.specs):
            if spec.group == group and spec.url == url:
                return i
        raise KeyError((group, url))

    def carry_over(self, old: BackendTable) -> None:
        """Arbiter, on a restart: keep error and health state and totals of the
        workers that are still configured (in-flight counts stay with the old
        generation's table)."""
        for i, spec in enumerate(self.specs):
            try:
                j = old.index(spec.group, spec.url)
            except KeyError:
                continue
            for field in (ERROR_UNTIL, SERVED, ERRORS, SENT, READ, EWMA, EWMA_AT, HC_FAILED,
                          HC_PASSES, HC_FAILS, HC_LAST_WALL_MS, HC_LAST_RESULT, HC_CHECKS,
                          RECOVERIES):
                self.set(i, field, old.get(j, field))
            for which in (HC_LIST, DOWN_LIST):
                seq, lines = old._read_list(j, which)
                if lines:
                    self._write_list(i, which, b"".join(b" ".join(f) + b"\n" for f in lines))

    # -- address lists (see HC_LIST, DOWN_LIST) ------------------------------------------

    def _write_list(self, worker: int, which: int, text: bytes) -> None:
        """One writer at a time per list (the watchdog; or the group lock's holder)."""
        hw, k = self.hw, (worker * 2 + which) * _LIST_WORDS
        base = k * 8 + 16
        hw[k] += 1  # odd: being written
        self._hc_map[base:base + len(text)] = text
        hw[k + 1] = len(text)
        hw[k] += 1

    def _read_list(self, worker: int, which: int) -> tuple[int, list[list[bytes]] | None]:
        """Any process, no lock: (sequence, lines split in fields), or (sequence, None)
        while it is being written (a seqlock read: keep what you had)."""
        hw, k = self.hw, (worker * 2 + which) * _LIST_WORDS
        seq = hw[k]
        if seq & 1:
            return seq, None
        n = min(hw[k + 1], ADDR_LIST_BYTES)
        text = self._hc_map[k * 8 + 16:k * 8 + 16 + n]
        if hw[k] != seq:
            return seq, None
        return seq, [line.split() for line in text.split(b"\n") if line]

    @staticmethod
    def _fit(lines: Iterable[bytes]) -> tuple[bytes, bool]:
        text = b""
        for line in lines:
            if len(text) + len(line) > ADDR_LIST_BYTES:
                return text, False
            text += line
        return text, True

    def set_hc_addresses(self, worker: int, addrs: Iterable[tuple[str, int]]) -> bool:
        """Watchdog: publish the (ip, port) addresses of ``worker`` that failed their
        checks. Returns False if they did not all fit (the rest stay usable)."""
        text, fits = self._fit(b"%s %d\n" % (ip.encode("ascii"), port)
                               for ip, port in sorted(addrs))
        self._write_list(worker, HC_LIST, text)
        return fits

    def hc_addresses(self, worker: int) -> tuple[int, frozenset[tuple[str, int]] | None]:
        """(sequence, the addresses the health checks took out), None for them while
        the watchdog writes."""
        seq, lines = self._read_list(worker, HC_LIST)
        if lines is None:
            return seq, None
        return seq, frozenset((f[0].decode("ascii"), int(f[1])) for f in lines if len(f) == 2)

    def mark_address_down(self, worker: int, ip: str, port: int, until: int) -> None:
        """Any child: ``ip:port`` of ``worker`` refused a connection; every child offers
        it last until ``until`` (microseconds, CLOCK_MONOTONIC). Takes the group lock
        (a failure path: never on a request that goes well)."""
        group = self.groups[self.specs[worker].group]
        now = now_us()
        with self.locked(group):
            down = self.down_addresses(worker)[1] or {}
            down = {a: u for a, u in down.items() if u > now}
            down[(ip, port)] = until
            text, _ = self._fit(b"%s %d %d\n" % (a[0].encode("ascii"), a[1], u)
                                for a, u in sorted(down.items(), key=lambda i: -i[1]))
            self._write_list(worker, DOWN_LIST, text)

    def down_addresses(self, worker: int) -> tuple[int, dict[tuple[str, int], int] | None]:
        """(sequence, {(ip, port): until}), None for them while a child writes."""
        seq, lines = self._read_list(worker, DOWN_LIST)
        if lines is None:
            return seq, None
        return seq, {(f[0].decode("ascii"), int(f[1])): int(f[2]) for f in lines if len(f) == 3}

    def workers_of(self, group: str) -> Iterator[int]:
        g = self.groups[group]
        return iter(range(g.first, g.first + g.count))


class ErrorState:
    """A plain ProxyPass backend's server-wide error state: its record's
    ``ERROR_UNTIL`` word. Any worker thread of any child reads it before connecting
    (one int read of shared memory: no lock, no syscall) and writes it when the
    backend refuses (one word; two children that race write nearly the same time)."""

    __slots__ = ("w", "i", "marks")

    def __init__(self, table: BackendTable, worker: int) -> None:
        self.w = table.w
        self.i = worker * W_FIELDS + ERROR_UNTIL
        self.marks = AddressMarks(table, worker)  # its name's addresses that refused

    def until(self) -> float:
        """Monotonic time (seconds) the backend is in error state until (0: not)."""
        return self.w[self.i] / 1e6

    def fail(self, retry: float) -> None:
        self.w[self.i] = int((time.monotonic() + retry) * 1_000_000)


class AddressMarks:
    """One worker's addresses to avoid, as one process reads them (lock-free: one word
    read per list; a list is decoded again only when its sequence word changed):
    those its health checks took out, and those that refused a connection in any
    child within ``retry``. Any worker thread."""

    __slots__ = ("table", "worker", "k_hc", "k_down", "_hc", "_down")

    def __init__(self, table: BackendTable, worker: int) -> None:
        self.table = table
        self.worker = worker
        self.k_hc = worker * 2 * _LIST_WORDS
        self.k_down = self.k_hc + _LIST_WORDS
        self._hc: tuple[int, frozenset[tuple[str, int]]] = (0, frozenset())
        self._down: tuple[int, dict[tuple[str, int], int], int] = (0, {}, 0)  # .., latest

    def skipped(self) -> frozenset[tuple[str, int]]:
        """The addresses the health checks took out."""
        seen = self._hc
        if self.table.hw[self.k_hc] == seen[0]:
            return seen[1]
        seq, addrs = self.table.hc_addresses(self.worker)
        if addrs is None:  # being written: what we had
            return seen[1]
        self._hc = (seq, addrs)  # one attribute store: other threads see old or new
        return addrs

    def down(self) -> frozenset[tuple[str, int]] | None:
        """The addresses that refused a connection and whose ``retry`` is not over."""
        seen = self._down
        if self.table.hw[self.k_down] != seen[0]:
            seq, down = self.table.down_addresses(self.worker)
            if down is not None:
                seen = self._down = (seq, down, max(down.values(), default=0))
        if not seen[2]:
            return None
        now = now_us()
        if seen[2] <= now:  # all over (the list is pruned at the next failure)
            return None
        return frozenset(a for a, until in seen[1].items() if until > now)

    def mark_down(self, sockaddr: tuple, retry: float) -> None:
        self.table.mark_address_down(self.worker, sockaddr[0], sockaddr[1],
                                     int((time.monotonic() + retry) * 1_000_000))


class _Locked:
    __slots__ = ("table", "group")

    def __init__(self, table: BackendTable, group: Group) -> None:
        self.table = table
        self.group = group

    def __enter__(self) -> None:
        self.table._lock(self.group)

    def __exit__(self, *exc: object) -> None:
        self.table._unlock(self.group)


def make_wake_pipes(slots: int) -> tuple[list[int], list[int]]:
    """Arbiter: one non-blocking pipe per child slot (read ends, write ends)."""
    reads, writes = [], []
    for _ in range(slots):
        r, w = os.pipe()
        os.set_blocking(w, False)
        reads.append(r)
        writes.append(w)
    return reads, writes
