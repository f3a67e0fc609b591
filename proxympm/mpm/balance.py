"""Accept balance: each child takes its share of the connections, not whatever the
kernel hands it.

Every child waits on the same listening sockets with EPOLLEXCLUSIVE. The kernel
wakes the first child in the socket's wait queue that is sleeping in epoll_wait,
and a woken child accepts everything queued. So when many clients connect at once
(a load balancer's pool, wrk's 50 keep-alive connections) one child can end up
holding three quarters of them for their whole life: its clients then wait
behind three times the requests of the other child's, and the other core idles.
HAProxy hands each new connection to its least loaded thread for this reason.

Here each child's listener publishes how many connections it holds in its
scoreboard slot (the SHARE word: held + 1, or 0 while it takes none: admission
paused, stopping, or not started). Before each accept it compares its own count
with the least loaded peer's; more than SLACK above it, it stops accepting for a
moment and *nudges* that peer, which accepts what is queued. Nothing is left in
the backlog on a guess: the peer named is one that takes connections, and if it
does not take them within HOLD (a child hung or paused meanwhile), the nudging
child accepts them itself. While connections churn (Connection: close traffic)
nothing is held back (``churning``): such shares even out by themselves.

The arbiter makes one eventfd (a pipe where there is none) per scoreboard slot
before it forks anything; a child reads only its own slot's.
"""

from __future__ import annotations

import os
import sys

from proxympm.mpm.scoreboard import SHARE, Scoreboard

SLACK = 2  # connections a child may hold above its least loaded peer
HOLD = 0.02  # seconds a child waits for the nudged peer before accepting itself
NUDGE = (1).to_bytes(8, sys.byteorder)  # an eventfd takes 8 bytes (a pipe, anything)


class AcceptBalance:
    def __init__(self, board: Scoreboard) -> None:
        self.board = board
        self.reads: list[int] = []
        self.writes: list[int] = []
        for _ in range(board.slots):
            if hasattr(os, "eventfd"):  # one descriptor per slot instead of two
                r = w = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            else:
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
            self.reads.append(r)
            self.writes.append(w)
        self.slot = -1
        self.fd = -1  # this child's read end
        self._shares = board.words_of(SHARE)  # every slot's SHARE word, in slot order
        self._mine = -1
        # churn, counted by the listener: accepts ever, and per one-second window
        self.accepted = 0
        self.churn_next = 0.0  # when the window rolls over (``roll``)
        self.churn_base = 0  # ``accepted`` when the window began
        self.churn_last = 0  # accepted in the window before

    def attach(self, slot: int) -> None:
        """Child, before serving: this is slot ``slot``; the other read ends go."""
        self.slot = slot
        self.fd = self.reads[slot]
        for i, r in enumerate(self.reads):
            if i != slot and r != self.writes[i]:  # a pipe's read end: not ours
                os.close(r)
        self._mine = slot

    def close(self) -> None:
        """The arbiter's (or a test's) descriptors, when it is done."""
        for fd in set(self.reads) | set(self.writes):
            try:
                os.close(fd)
            except OSError:
                pass
        self.reads, self.writes = [], []

    def publish(self, held: int, taking: bool) -> None:
        """Listener thread: this child holds ``held`` connections; ``taking``: it
        accepts new ones (or only holds back for balance)."""
        self._shares[self._mine] = held + 1 if taking else 0

    def least_loaded(self, held: int) -> int:
        """Listener thread: the slot of the least loaded peer that takes
        connections, if it holds more than SLACK fewer than ``held``; else -1."""
        shares = self._shares.tolist()
        shares[self._mine] = 0
        low = min(filter(None, shares), default=0)  # fewest held + 1, among peers
        if not low or low + SLACK > held:
            return -1
        return shares.index(low)

    def roll(self, now: float) -> None:
        """Listener thread, at ``churn_next``: a new one-second accept window."""
        self.churn_next = now + 1.0
        self.churn_last = self.accepted - self.churn_base
        self.churn_base = self.accepted

    def churning(self, held: int) -> bool:
        """Listener thread: connections here come and go (in the last second many
        more were accepted than the ``held`` now). Such shares even out by
        themselves, while holding back would only delay new clients; balance is for
        connections that stay."""
        recent = max(self.churn_last, self.accepted - self.churn_base)
        return recent > 2 * held + 8

    def nudge(self, slot: int) -> None:
        """Listener thread: ask the child in ``slot`` to accept what is queued."""
        try:
            os.write(self.writes[slot], NUDGE)
        except OSError:
            pass  # full (a nudge is pending anyway) or the slot's child is gone

    def drain(self) -> None:
        """Listener thread: read this child's nudges."""
        try:
            while os.read(self.fd, 512):  # an eventfd: its count at once, then EAGAIN
                pass
        except OSError:
            pass
