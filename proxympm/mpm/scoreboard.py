"""The scoreboard: one shared-memory slot per child, as httpd keeps it.

The arbiter creates it (an anonymous shared mapping) before forking anything, so
every child inherits the same pages. A slot is written by the arbiter only while
no child owns it (when it hands the slot to a new child) and from then on only by
that child's main thread, a few times a second: how many of its workers are busy,
how many are idle and ready (0 while it does not accept), and how many
connections it holds. The arbiter reads the slots once a second to decide whether
to fork or retire children (MinSpareThreads / MaxSpareThreads). Plain aligned
64-bit stores: no lock, one writer per slot; a reader may see a value one update
old, which is all the arbiter needs.
"""

from __future__ import annotations

import mmap

PID, GENERATION, STATE, BUSY, IDLE, CONNS = range(6)
FIELDS = 8  # a few spare words per slot

# STATE values
FREE, STARTING, READY, STOPPING = 0, 1, 2, 3


class Scoreboard:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, max(1, slots) * FIELDS * 8)  # MAP_SHARED | MAP_ANONYMOUS
        self._words = memoryview(self._map).cast("q")

    def claim(self, slot: int, pid: int, generation: int, idle: int) -> None:
        """Arbiter: hand ``slot`` to a new child (counted idle until it reports)."""
        base = slot * FIELDS
        w = self._words
        w[base + BUSY] = 0
        w[base + IDLE] = idle
        w[base + CONNS] = 0
        w[base + GENERATION] = generation
        w[base + PID] = pid
        w[base + STATE] = STARTING

    def release(self, slot: int) -> None:
        """Arbiter: the slot's child is gone."""
        base = slot * FIELDS
        self._words[base + STATE] = FREE
        self._words[base + PID] = 0
        self._words[base + IDLE] = 0
        self._words[base + BUSY] = 0

    def report(self, slot: int, busy: int, idle: int, conns: int, stopping: bool) -> None:
        """Child main thread: this child's numbers now."""
        base = slot * FIELDS
        w = self._words
        w[base + BUSY] = busy
        w[base + IDLE] = idle
        w[base + CONNS] = conns
        w[base + STATE] = STOPPING if stopping else READY

    def get(self, slot: int, field: int) -> int:
        return self._words[slot * FIELDS + field]

    def idle(self, slot: int) -> int:
        """Idle threads that count for MinSpare/MaxSpare: 0 once the child stops."""
        if self.get(slot, STATE) in (FREE, STOPPING):
            return 0
        return self.get(slot, IDLE)
