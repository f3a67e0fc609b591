"""The listener's poller: epoll on Linux, kqueue on BSD/macOS, selectors elsewhere.

Connection fds are one-shot: an event disarms the fd, so a connection is never
reported while a worker owns it, and whoever owns the connection re-arms it with
``arm`` when it goes back to waiting. With epoll (EPOLLONESHOT) and kqueue
(EV_DISPATCH) re-arming is a thread-safe syscall, so a worker re-arms directly;
the selectors fallback has no thread-safe re-arm, so a worker's ``arm`` is queued
and the listener is woken to apply it.

Persistent fds (listening sockets, the wake-up pipe) stay armed; listening
sockets use EPOLLEXCLUSIVE where there is one, so one new client wakes one child.

Watched fds (epoll only, ``edge``): upstream sockets that only the listener reads,
in flight or idle in the pool, are edge-triggered and never re-armed; the listener
reads them until EAGAIN before it waits again, and ``forget``s one before a worker
takes it over.

Methods run on the listener thread unless they say "any thread".
"""

from __future__ import annotations

import os
import queue
import select
import selectors
import sys
import threading
from typing import Protocol

READ = 1
WRITE = 2
HANGUP = 4  # only the peer's shutdown or an error, not data (epoll: EPOLLRDHUP)


class Poller(Protocol):
    name: str
    hangup: bool
    edge: bool  # ``watch`` is there

    def add_persistent(self, fd: int, exclusive: bool = False) -> None: ...
    def remove_persistent(self, fd: int) -> None: ...
    def add(self, fd: int, events: int) -> None: ...
    def arm(self, fd: int, events: int) -> None: ...
    def forget(self, fd: int) -> None: ...
    def watch(self, fd: int) -> None: ...
    def poll(self, timeout: float) -> list[tuple[int, int]]: ...
    def wake_fd(self) -> int | None: ...


class EpollPoller:
    name = "epoll"
    hangup = True  # HANGUP is reported; other pollers cannot wait for it alone
    edge = True

    def __init__(self) -> None:
        self._ep = select.epoll()

    def add_persistent(self, fd: int, exclusive: bool = False) -> None:
        flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if exclusive else 0)
        self._ep.register(fd, flags)

    def remove_persistent(self, fd: int) -> None:
        self._ep.unregister(fd)

    def add(self, fd: int, events: int) -> None:
        """Any thread: first registration, armed for ``events``. An upstream socket
        that an inline exchange left registered (disarmed) is simply re-armed."""
        try:
            self._ep.register(fd, _epoll_mask(events))
        except FileExistsError:
            self._ep.modify(fd, _epoll_mask(events))

    def arm(self, fd: int, events: int) -> None:
        """Any thread."""
        self._ep.modify(fd, _ARMS[events])

    def forget(self, fd: int) -> None:
        """Drop a still-open fd that leaves the listener (an upstream going back to the
        pool), so it can be added again later."""
        try:
            self._ep.unregister(fd)
        except OSError:
            pass

    def watch(self, fd: int) -> None:
        """Listener: report every arrival of bytes or EOF on ``fd`` from now on until
        ``forget``, with no re-arming (edge-triggered: the reader reads until EAGAIN
        before it waits again). For upstream sockets only the listener reads: its
        inline exchanges, and its idle pooled connections (pool.py)."""
        mask = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
        try:
            self._ep.register(fd, mask)
        except FileExistsError:
            self._ep.modify(fd, mask)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        """(fd, READ | WRITE | HANGUP): HANGUP with READ when the peer shut down its
        side or the socket failed (a watched upstream reports it with its last bytes)."""
        return [(fd, _MASKS[ev & _SEEN]) for fd, ev in self._ep.poll(timeout)]

    def wake_fd(self) -> int | None:
        return None


_HUNG = select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP
_SEEN = select.EPOLLIN | select.EPOLLOUT | _HUNG
_MASKS = {ev: (READ | HANGUP if ev & _HUNG else READ if ev & select.EPOLLIN else 0)
          | (WRITE if ev & select.EPOLLOUT else 0)
          for ev in range(_SEEN + 1) if not ev & ~_SEEN}


def _epoll_mask(events: int) -> int:
    mask = select.EPOLLONESHOT
    if events & READ:
        mask |= select.EPOLLIN
    if events & WRITE:
        mask |= select.EPOLLOUT
    if events & HANGUP:
        mask |= select.EPOLLRDHUP
    return mask


_ARMS = [_epoll_mask(events) for events in range((READ | WRITE | HANGUP) + 1)]


class KqueuePoller:  # pragma: no cover - exercised on BSD/macOS only
    name = "kqueue"
    hangup = False
    edge = False  # (EV_CLEAR would do; untested here, so the one-shot way)

    def __init__(self) -> None:
        self._kq = select.kqueue()

    def _ctl(self, fd: int, filt: int, flags: int) -> None:
        self._kq.control([select.kevent(fd, filt, flags)], 0, 0)

    def add_persistent(self, fd: int, exclusive: bool = False) -> None:
        self._ctl(fd, select.KQ_FILTER_READ, select.KQ_EV_ADD)

    def remove_persistent(self, fd: int) -> None:
        self._ctl(fd, select.KQ_FILTER_READ, select.KQ_EV_DELETE)

    def add(self, fd: int, events: int) -> None:
        if events:
            self.arm(fd, events)

    def arm(self, fd: int, events: int) -> None:
        """Any thread: EV_DISPATCH disables the filter after one event, like ONESHOT,
        but keeps it registered so the next arm is a cheap enable."""
        flags = select.KQ_EV_ADD | select.KQ_EV_ENABLE | select.KQ_EV_DISPATCH
        changes = []
        if events & READ:
            changes.append(select.kevent(fd, select.KQ_FILTER_READ, flags))
        if events & WRITE:
            changes.append(select.kevent(fd, select.KQ_FILTER_WRITE, flags))
        self._kq.control(changes, 0, 0)

    def forget(self, fd: int) -> None:
        for filt in (select.KQ_FILTER_READ, select.KQ_FILTER_WRITE):
            try:
                self._ctl(fd, filt, select.KQ_EV_DELETE)
            except OSError:
                pass

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        merged: dict[int, int] = {}
        for ev in self._kq.control(None, 256, timeout):
            mask = READ if ev.filter == select.KQ_FILTER_READ else WRITE
            if ev.flags & select.KQ_EV_EOF:
                mask |= READ
            merged[ev.ident] = merged.get(ev.ident, 0) | mask
        return list(merged.items())

    def wake_fd(self) -> int | None:
        return None


class SelectorPoller:
    """Portable fallback on ``selectors`` (poll/select): one-shot is emulated by
    unregistering an fd once it reported, and arms from other threads go through a
    queue that the listener applies after being woken."""

    name = "selectors"
    hangup = False
    edge = False

    def __init__(self) -> None:
        # poll(2) keeps no kernel state: a closed fd just reports POLLNVAL once (and
        # is then dropped as one-shot), and a reused fd number is re-armed by modify.
        self._sel: selectors.BaseSelector = (
            selectors.PollSelector() if hasattr(selectors, "PollSelector")
            else selectors.SelectSelector())
        self._persistent: set[int] = set()
        self._pending: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self._owner = threading.get_ident()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.add_persistent(self._wake_r)

    def bind_thread(self) -> None:
        """Called by the listener thread when it starts: arms from it apply at once."""
        self._owner = threading.get_ident()

    def add_persistent(self, fd: int, exclusive: bool = False) -> None:
        self._persistent.add(fd)
        self._sel.register(fd, selectors.EVENT_READ)

    def remove_persistent(self, fd: int) -> None:
        self._persistent.discard(fd)
        self._sel.unregister(fd)

    def add(self, fd: int, events: int) -> None:
        """Any thread."""
        self.arm(fd, events)

    def arm(self, fd: int, events: int) -> None:
        """Any thread."""
        if threading.get_ident() == self._owner:
            self._apply(fd, events)
            return
        self._pending.put((fd, events))
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def forget(self, fd: int) -> None:
        """Listener thread only."""
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def _apply(self, fd: int, events: int) -> None:
        mask = (selectors.EVENT_READ if events & READ else 0) | (
            selectors.EVENT_WRITE if events & WRITE else 0)
        try:
            self._sel.modify(fd, mask)
        except KeyError:
            try:
                self._sel.register(fd, mask)
            except (ValueError, OSError):
                pass  # closed meanwhile
        except (ValueError, OSError):
            pass

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        while True:
            try:
                fd, events = self._pending.get_nowait()
            except queue.Empty:
                break
            self._apply(fd, events)
        out = []
        for key, ev in self._sel.select(timeout):
            fd = key.fd
            if fd == self._wake_r:
                try:
                    os.read(fd, 4096)
                except BlockingIOError:
                    pass
                continue
            if fd not in self._persistent:
                self._sel.unregister(fd)  # one-shot
            out.append((fd, (READ if ev & selectors.EVENT_READ else 0)
                        | (WRITE if ev & selectors.EVENT_WRITE else 0)))
        return out

    def wake_fd(self) -> int | None:
        return self._wake_r


def make_poller(preferred: str | None = None) -> Poller:
    """epoll, kqueue or selectors; PROXYMPM_POLLER=selectors forces the fallback."""
    choice = preferred or os.environ.get("PROXYMPM_POLLER", "")
    if choice in ("", "epoll") and hasattr(select, "epoll"):
        return EpollPoller()
    if choice in ("", "kqueue") and hasattr(select, "kqueue") and sys.platform != "linux":
        return KqueuePoller()
    return SelectorPoller()
