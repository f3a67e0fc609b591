"""The scoreboard: shared memory that every child writes and any child can read.

Layout, as httpd's ``include/scoreboard.h`` (one anonymous shared mapping, made by
the arbiter before it forks anything, so every child sees the same pages):

- a global header (server start time, generations);
- one **process slot** per child slot (``2 x ServerLimit``: a whole generation may
  finish gracefully beside the next): pid, generation, state, busy and idle
  workers, connections by state (total, write completion, keep-alive, lingering
  close), whether it accepts, its CPU time;
- one **worker slot** per (process slot, thread < ThreadLimit): the state letter
  that mod_status shows (``_ S R W K D C L G I .``), requests and bytes served,
  when the current or last request started and ended, and fixed-size byte fields
  for the request line (truncated, as httpd's 64 bytes), client and vhost;
- one **backend area** per process slot: up to MAX_BACKENDS named rows of
  per-backend counters (requests, errors, latency histogram ...), published by the
  child's main thread from its workers' private counters (proxy/metrics.py).

Writers, one per word, no lock anywhere: a process slot is written by the arbiter
only while no child owns it (claim/release) and otherwise by that child's main
thread; a worker slot only by its own worker thread (and by the arbiter before the
child exists); a backend area only by its child's main thread. Every number is an
aligned 64-bit store; a reader may see a value one update old or a string half
rewritten (as with httpd), never a torn number.

Counters in worker slots and backend areas are **kept across the children that
own a slot in turn** (a new child continues from what its slot holds), so totals
grow monotonically across graceful restarts and child recycling, as httpd's do.
"""

from __future__ import annotations

import mmap
import time

from proxympm.proxy.metrics import B_FINISHED, B_STARTED, COUNTERS, GAUGES

# -- global header (words) --------------------------------------------------------
G_RESTART_US, G_GENERATION, G_CONFIG_GENERATION, G_THREADS = range(4)
HEADER_WORDS = 8

# -- process slot (words) ----------------------------------------------------------
(PID, GENERATION, STATE, BUSY, IDLE, CONNS, WRITING, KEEPALIVE, CLOSING, ACCEPTING,
 CPU_USER_MS, CPU_SYS_MS, STARTED_US, REJECTED, LISTENER_BYTES, SHARE) = range(16)
# REJECTED: requests the listener thread completed itself: errors it answered (400,
# 408, 413 ...) and inline exchanges (listener.py); LISTENER_BYTES: what the inline
# ones sent, and what it relayed to clients after a tunnel or stream hand-off. The
# listener's own words; like worker counters they carry on across the children of
# the slot. SHARE: the connections the listener holds + 1 while it takes new ones,
# else 0 (balance.py); the listener's own word, live rather than reported.
FIELDS = 16  # words per process slot

# process STATE values
FREE, STARTING, READY, STOPPING = 0, 1, 2, 3

# -- worker slot: words, then fixed-size byte fields ---------------------------------
(W_STATUS, W_ACCESS, W_MY_ACCESS, W_CONN_ACCESS, W_BYTES, W_MY_BYTES, W_START_US,
 W_STOP_US, W_DURATION_US) = range(9)
WORKER_WORDS = 10
REQUEST_LEN, CLIENT_LEN, VHOST_LEN = 64, 48, 64  # httpd keeps 64 bytes of request
WORKER_BYTES = WORKER_WORDS * 8 + REQUEST_LEN + CLIENT_LEN + VHOST_LEN  # 256

# mod_status letters (status_flags[] in httpd), stored as their byte value
READY_ = ord("_")
STARTING_S = ord("S")
READ_R = ord("R")
WRITE_W = ord("W")
KEEPALIVE_K = ord("K")
DNS_D = ord("D")
CLOSING_C = ord("C")
LOG_L = ord("L")
GRACEFUL_G = ord("G")
IDLE_KILL_I = ord("I")
DEAD = ord(".")
LEGEND = (
    ("_", "Waiting for Connection"), ("S", "Starting up"), ("R", "Reading Request"),
    ("W", "Sending Reply"), ("K", "Keepalive (read)"), ("D", "DNS Lookup"),
    ("C", "Closing connection"), ("L", "Logging"), ("G", "Gracefully finishing"),
    ("I", "Idle cleanup of worker"), (".", "Open slot with no current process"),
)

# -- backend area: per process slot, MAX_BACKENDS rows ---------------------------------
MAX_BACKENDS = 64
NAME_LEN = 120  # "balancer://name|http://host:port", NUL padded
BACKEND_COUNTERS = COUNTERS
BACKEND_WORDS = NAME_LEN // 8 + 32  # name, then counters (with room to grow)


def now_us() -> int:
    return int(time.time() * 1_000_000)


class Scoreboard:
    def __init__(self, slots: int, thread_limit: int = 64) -> None:
        self.slots = max(1, slots)
        self.thread_limit = max(1, thread_limit)
        self._proc_base = HEADER_WORDS
        self._worker_base = (HEADER_WORDS + self.slots * FIELDS) * 8  # bytes
        worker_end = self._worker_base + self.slots * self.thread_limit * WORKER_BYTES
        self._backend_base = worker_end
        size = worker_end + self.slots * MAX_BACKENDS * BACKEND_WORDS * 8
        self._map = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS: shared after fork
        self.bytes = memoryview(self._map)
        self._words = self.bytes.cast("q")
        self._words[G_RESTART_US] = now_us()
        # Worker slots start zeroed (status 0 reads as "."): nothing is written here,
        # so a large ThreadLimit costs address space, not memory, until threads run.

    @property
    def threads(self) -> int:
        """Worker slots per process slot ever used: the largest ThreadsPerChild so
        far (readers look no further; the rest were never written)."""
        return min(self.thread_limit, self._words[G_THREADS] or self.thread_limit)

    def use_threads(self, threads_per_child: int) -> None:
        """Arbiter, at start and on each new config."""
        self._words[G_THREADS] = min(self.thread_limit,
                                     max(self._words[G_THREADS], threads_per_child))

    # -- global ------------------------------------------------------------------------

    def header(self, field: int) -> int:
        return self._words[field]

    def set_header(self, field: int, value: int) -> None:
        """Arbiter only."""
        self._words[field] = value

    def reset(self) -> None:
        """Arbiter, with no child alive (``-k restart``): statistics start again."""
        self._words[G_RESTART_US] = now_us()
        for slot in range(self.slots):
            self._words[self._proc_base + slot * FIELDS + REJECTED] = 0
            self._words[self._proc_base + slot * FIELDS + LISTENER_BYTES] = 0
        used = self.threads * WORKER_BYTES
        for slot in range(self.slots):
            start = self.worker_word(slot, 0) * 8
            self.bytes[start:start + used] = bytes(used)
        start = self._backend_base
        self.bytes[start:len(self.bytes)] = bytes(len(self.bytes) - start)

    # -- process slots -----------------------------------------------------------------

    def claim(self, slot: int, pid: int, generation: int, idle: int,
              threads: int = 0) -> None:
        """Arbiter: hand ``slot`` to a new child (counted idle until it reports);
        its first ``threads`` worker slots show S until their threads run."""
        base = self._proc_base + slot * FIELDS
        w = self._words
        for f in (BUSY, CONNS, WRITING, KEEPALIVE, CLOSING, CPU_USER_MS, CPU_SYS_MS, SHARE):
            w[base + f] = 0
        w[base + IDLE] = idle
        w[base + ACCEPTING] = 1
        w[base + STARTED_US] = now_us()
        w[base + GENERATION] = generation
        w[base + PID] = pid
        for thread in range(min(threads, self.thread_limit)):
            w[self.worker_word(slot, thread) + W_STATUS] = STARTING_S
        w[base + STATE] = STARTING

    def release(self, slot: int) -> None:
        """Arbiter: the slot's child is gone (its workers' counters stay)."""
        base = self._proc_base + slot * FIELDS
        w = self._words
        w[base + STATE] = FREE
        w[base + PID] = 0
        for f in (IDLE, BUSY, CONNS, WRITING, KEEPALIVE, CLOSING, ACCEPTING, SHARE):
            w[base + f] = 0
        for thread in range(self.threads):
            w[self.worker_word(slot, thread) + W_STATUS] = DEAD
        for row in range(MAX_BACKENDS):
            b = self.backend_word(slot, row)
            for g in GAUGES:
                w[b + g] = 0
            w[b + B_STARTED] = w[b + B_FINISHED]  # nothing in flight any more

    def report(self, slot: int, busy: int, idle: int, conns: int, stopping: bool,
               writing: int = 0, keepalive: int = 0, closing: int = 0,
               accepting: bool = True, cpu: tuple[float, float] = (0.0, 0.0)) -> None:
        """Child main thread: this child's numbers now."""
        base = self._proc_base + slot * FIELDS
        w = self._words
        w[base + BUSY] = busy
        w[base + IDLE] = idle
        w[base + CONNS] = conns
        w[base + WRITING] = writing
        w[base + KEEPALIVE] = keepalive
        w[base + CLOSING] = closing
        w[base + ACCEPTING] = 1 if accepting and not stopping else 0
        w[base + CPU_USER_MS] = int(cpu[0] * 1000)
        w[base + CPU_SYS_MS] = int(cpu[1] * 1000)
        w[base + STATE] = STOPPING if stopping else READY

    def words_of(self, field: int) -> memoryview:
        """One process-slot word of every slot, in slot order (a live view)."""
        start = self._proc_base + field
        return self._words[start:start + self.slots * FIELDS:FIELDS]

    def count_rejected(self, slot: int, sent: int = 0) -> None:
        """Listener thread of the slot's child (the only writer of these words): a
        request it completed itself, and the bytes it sent for it."""
        base = self._proc_base + slot * FIELDS
        self._words[base + REJECTED] += 1
        if sent:
            self._words[base + LISTENER_BYTES] += sent

    def count_listener_bytes(self, slot: int, sent: int) -> None:
        """Listener thread of the slot's child: bytes it sent to a client after a
        worker handed it a tunnel or a streamed response (the worker counted the
        request and what it sent itself)."""
        self._words[self._proc_base + slot * FIELDS + LISTENER_BYTES] += sent

    def get(self, slot: int, field: int) -> int:
        return self._words[self._proc_base + slot * FIELDS + field]

    def idle(self, slot: int) -> int:
        """Idle threads that count for MinSpare/MaxSpare: 0 once the child stops."""
        if self.get(slot, STATE) in (FREE, STOPPING):
            return 0
        return self.get(slot, IDLE)

    # -- worker slots ------------------------------------------------------------------

    def worker_word(self, slot: int, thread: int) -> int:
        return (self._worker_base + (slot * self.thread_limit + thread) * WORKER_BYTES) // 8

    def worker(self, slot: int, thread: int) -> WorkerScore:
        """The handle a worker thread writes its slot through."""
        return WorkerScore(self, slot, thread)

    def worker_fields(self, slot: int, thread: int) -> tuple[list[int], bytes, bytes, bytes]:
        """A reader's copy of one worker slot: words, request, client, vhost."""
        word = self.worker_word(slot, thread)
        words = self._words[word:word + WORKER_WORDS].tolist()
        off = word * 8 + WORKER_WORDS * 8
        raw = self.bytes[off:off + REQUEST_LEN + CLIENT_LEN + VHOST_LEN].tobytes()
        request = raw[:REQUEST_LEN].rstrip(b"\0")
        client = raw[REQUEST_LEN:REQUEST_LEN + CLIENT_LEN].rstrip(b"\0")
        vhost = raw[REQUEST_LEN + CLIENT_LEN:].rstrip(b"\0")
        return words, request, client, vhost

    # -- backend areas -----------------------------------------------------------------

    def backend_word(self, slot: int, row: int) -> int:
        return self.backend_byte(slot, row) // 8 + NAME_LEN // 8

    def backend_byte(self, slot: int, row: int) -> int:
        return self._backend_base + (slot * MAX_BACKENDS + row) * BACKEND_WORDS * 8

    def backend_name(self, slot: int, row: int) -> str:
        off = self.backend_byte(slot, row)
        return self.bytes[off:off + NAME_LEN].tobytes().rstrip(b"\0").decode("utf-8", "replace")

    def backend_rows(self, slot: int, names: list[str]) -> list[int]:
        """Child main thread, at start: the row of each backend name in its slot,
        reusing the rows a previous child of the slot left (so counters carry on)
        and taking free ones for new names; -1 when the area is full."""
        known = {}
        free = []
        for row in range(MAX_BACKENDS):
            name = self.backend_name(slot, row)
            if name:
                known[name] = row
            else:
                free.append(row)
        rows = []
        for name in names:
            row = known.get(name)
            if row is None and free:
                row = free.pop(0)
                off = self.backend_byte(slot, row)
                data = name.encode("utf-8")[:NAME_LEN]
                self.bytes[off:off + NAME_LEN] = data.ljust(NAME_LEN, b"\0")
                known[name] = row
            rows.append(-1 if row is None else row)
        return rows

    def backend_counters(self, slot: int, row: int) -> list[int]:
        word = self.backend_word(slot, row)
        return self._words[word:word + BACKEND_COUNTERS].tolist()

    def publish_backend(self, slot: int, row: int, base: list[int], values: list[int]) -> None:
        """Child main thread: counters = what the slot held at start + this child's."""
        w = self._words
        word = self.backend_word(slot, row)
        for i, v in enumerate(values):
            w[word + i] = v if i in GAUGES else base[i] + v


class WorkerScore:
    """One worker thread's slot. Every method runs on that worker thread only."""

    __slots__ = ("_w", "_b", "_word", "_req_off", "_client_off", "_vhost_off", "_client")

    def __init__(self, board: Scoreboard, slot: int, thread: int) -> None:
        self._w = board._words
        self._b = board.bytes
        self._word = board.worker_word(slot, thread)
        off = self._word * 8 + WORKER_WORDS * 8
        self._req_off = off
        self._client_off = off + REQUEST_LEN
        self._vhost_off = off + REQUEST_LEN + CLIENT_LEN
        self._client: object = None
        self._w[self._word + W_MY_ACCESS] = 0
        self._w[self._word + W_MY_BYTES] = 0

    def status(self, letter: int) -> None:
        self._w[self._word + W_STATUS] = letter

    def begin(self, letter: int, request_line: bytes, peer: tuple[str, int],
              vhost: bytes, conn_requests: int, started: float) -> None:
        """A request started at ``started`` (time.time()): a handful of stores and
        three short copies."""
        w = self._w
        base = self._word
        w[base + W_STATUS] = letter
        w[base + W_START_US] = int(started * 1_000_000)
        w[base + W_CONN_ACCESS] = conn_requests
        b = self._b
        off = self._req_off
        b[off:off + REQUEST_LEN] = request_line[:REQUEST_LEN].ljust(REQUEST_LEN, b"\0")
        if peer is not self._client:  # same connection: client and vhost unchanged
            self._client = peer
            off = self._client_off
            b[off:off + CLIENT_LEN] = peer[0].encode()[:CLIENT_LEN].ljust(CLIENT_LEN, b"\0")
        off = self._vhost_off
        b[off:off + VHOST_LEN] = vhost[:VHOST_LEN].ljust(VHOST_LEN, b"\0")

    def count_rejected(self) -> None:
        """A bad pipelined request this thread answered without serving it."""
        self._w[self._word + W_ACCESS] += 1
        self._w[self._word + W_MY_ACCESS] += 1

    def end(self, sent: int) -> None:
        """The request is answered (``sent`` bytes to the client)."""
        w = self._w
        base = self._word
        stop = int(time.time() * 1_000_000)
        w[base + W_STOP_US] = stop
        w[base + W_DURATION_US] += stop - w[base + W_START_US]
        w[base + W_ACCESS] += 1
        w[base + W_MY_ACCESS] += 1
        w[base + W_BYTES] += sent
        w[base + W_MY_BYTES] += sent
