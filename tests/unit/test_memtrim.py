"""MemoryTrimmer: when a child gives freed heap memory back (malloc_trim)."""

from __future__ import annotations

import platform

from proxympm.mpm import memtrim
from proxympm.mpm.memtrim import TRIM_AFTER_REQUESTS, TRIM_INTERVAL, MemoryTrimmer


def test_glibc_has_malloc_trim() -> None:
    if platform.libc_ver()[0] == "glibc":
        assert memtrim._load_malloc_trim() is not None


def test_trims_when_the_child_goes_idle_after_enough_requests() -> None:
    done = [0]
    t = MemoryTrimmer(lambda: done[0], now=0.0)
    if t._trim is None:  # not glibc: nothing to give back, never trims
        done[0] = 10 * TRIM_AFTER_REQUESTS
        assert not t.tick(0, 1.0) and not t.tick(0, 2.0)
        return
    done[0] = TRIM_AFTER_REQUESTS - 1
    assert not t.tick(0, 1.0)
    assert not t.tick(0, 2.0)  # idle, but too few requests to be worth it
    done[0] = TRIM_AFTER_REQUESTS + 5
    assert not t.tick(3, 3.0)  # busy
    done[0] += 3
    assert not t.tick(0, 4.0)  # requests finished since the last look: not idle yet
    assert t.tick(0, 5.0)  # idle now
    assert not t.tick(0, 6.0)  # nothing new since
    assert t.trims == 1


def test_trims_at_intervals_under_steady_load() -> None:
    done = [0]
    t = MemoryTrimmer(lambda: done[0], now=0.0)
    if t._trim is None:
        return
    trimmed = []
    for second in range(1, int(3 * TRIM_INTERVAL) + 1):
        done[0] += 100  # never idle
        if t.tick(4, float(second)):
            trimmed.append(second)
    assert trimmed == [int(TRIM_INTERVAL), int(2 * TRIM_INTERVAL), int(3 * TRIM_INTERVAL)]
