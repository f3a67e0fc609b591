"""Upgrade tunnels (WebSocket and friends), held by the listener thread.

After a ``101 Switching Protocols`` (see proxympm.proxy.upgrade for the handshake)
the bytes are not HTTP any more: the worker hands the client connection and the
upstream socket to the listener (``Tunnels.adopt``) and goes back to serving
requests. A tunnel holds no thread; it counts toward the child's connection cap
(two descriptors), not toward the worker admission rule.

The listener relays both directions event-driven. Each direction has at most one
buffer in flight: while the destination has not taken what was read (its socket
buffer is full), the source is not read, so a fast sender is held back by TCP flow
control instead of growing memory (backpressure). Sockets are one-shot in the
poller; after every event both sides are re-armed for what they wait for. TLS on
either side: a non-blocking SSLSocket may need the other direction to make progress
(``SSLWantWriteError`` while reading, ``SSLWantReadError`` while writing) and may
hold decrypted bytes that poll() cannot see (``pending()``), so a side is read
until OpenSSL says it needs the network, and reads resume by trying, not by
waiting for an event.

End of a tunnel: EOF from one side is passed on as a half-close (``SHUT_WR``) on a
plain socket, and the other direction runs on; under TLS (no half-close) the tunnel
ends once what was read is written. An error on either side, or no byte in either
direction for the idle timeout (ProxyWebsocketIdleTimeout, else the larger of
Timeout and the backend timeout, as httpd's ``ap_proxy_tunnel_run``), closes both.
A graceful stop lets tunnels run on, as httpd's event MPM does, until they end or
GracefulShutdownTimeout cuts the child.

Threads: ``Tunnels.adopt`` is the worker's hand-off (a queue plus the listener's
wake-up); every other method runs on the listener thread, which alone owns tunnel
state.
"""

from __future__ import annotations

import heapq
import queue
import socket
import ssl
import time
from typing import TYPE_CHECKING

from proxympm.mpm.connection import Connection, State
from proxympm.mpm.poller import READ, WRITE
from proxympm.proxy.upgrade import TunnelSpec

if TYPE_CHECKING:
    from proxympm.mpm.listener import Listener

RECV_SIZE = 65536
ROUNDS = 4  # reads per direction per event: one busy tunnel must not starve the rest


# -- the relay (listener thread) ---------------------------------------------------


class _Side:
    """One end of a tunnel: its socket and what waits to be written to it."""

    __slots__ = ("sock", "fd", "tls", "out", "eof", "shut", "rd_need", "wr_need", "armed",
                 "registered")

    def __init__(self, sock: socket.socket, out: bytes, registered: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.out: bytes | memoryview = out  # read from the other side, not yet written
        self.eof = False  # this side sent EOF (nothing more to read from it)
        self.shut = False  # we half-closed this side (its peer's EOF was passed on)
        self.rd_need = READ  # the event a read from this side waits for
        self.wr_need = WRITE  # the event a write to this side waits for
        self.armed = -1  # what the poller is armed for (-1: unknown)
        self.registered = registered


class Tunnel:
    __slots__ = ("conn", "client", "upstream", "timeout", "last", "closed")

    def __init__(self, conn: Connection, spec: TunnelSpec) -> None:
        self.conn = conn
        self.client = _Side(conn.sock, spec.leftover, conn.registered)
        self.upstream = _Side(spec.upstream, bytes(conn.inbuf), False)
        conn.inbuf.clear()
        self.timeout = spec.idle_timeout
        self.last = time.monotonic()
        self.closed = False


class Tunnels:
    """Every tunnel of one child; owned by the listener thread."""

    __slots__ = ("listener", "incoming", "by_fd", "deadlines", "seq")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.incoming: queue.SimpleQueue[tuple[Connection, TunnelSpec]] = queue.SimpleQueue()
        self.by_fd: dict[int, Tunnel] = {}
        # (deadline, seq, tunnel), one entry per tunnel; activity moves a tunnel's
        # deadline lazily: an entry that comes due early is pushed again, not searched.
        self.deadlines: list[tuple[float, int, Tunnel]] = []
        self.seq = 0

    @property
    def count(self) -> int:
        """Descriptors held by tunnels besides their client connection."""
        return len(self.by_fd) // 2

    def adopt(self, conn: Connection, spec: TunnelSpec) -> None:
        """Worker thread: hand over a switched connection; the worker forgets it."""
        conn.set_state(State.TUNNEL)
        self.incoming.put((conn, spec))
        self.listener.wake()

    def start_incoming(self) -> None:
        while True:
            try:
                conn, spec = self.incoming.get_nowait()
            except queue.Empty:
                return
            if self.listener.stopping and not self.listener.graceful:
                spec.upstream.close()
                self.listener.close(conn)
                continue
            t = Tunnel(conn, spec)
            self.by_fd[t.client.fd] = t
            self.by_fd[t.upstream.fd] = t
            self.seq += 1
            heapq.heappush(self.deadlines, (t.last + t.timeout, self.seq, t))
            self._pump(t)

    def on_event(self, fd: int) -> None:
        t = self.by_fd.get(fd)
        if t is None:
            return
        side = t.client if fd == t.client.fd else t.upstream
        side.armed = 0  # one-shot: the event disarmed it
        self._pump(t)

    # -- moving bytes ----------------------------------------------------------------

    def _pump(self, t: Tunnel) -> None:
        c, u = t.client, t.upstream
        try:
            moved = self._move(u, c)
            moved = self._move(c, u) or moved
        except OSError:  # reset, broken pipe, TLS failure: the tunnel is over
            self._close(t)
            return
        if moved:
            t.last = time.monotonic()
        if (c.eof and u.eof) or ((c.eof or u.eof) and (c.tls or u.tls)):
            if not c.out and not u.out:
                self._close(t)
                return
        self._arm(t, c, self._wants(c, u))
        self._arm(t, u, self._wants(u, c))

    @staticmethod
    def _move(src: _Side, dst: _Side) -> bool:
        """Pass bytes from ``src`` to ``dst`` until one of them would block."""
        progress = False
        rounds = 0
        while True:
            if dst.out:
                try:
                    n = dst.sock.send(dst.out)
                except (BlockingIOError, ssl.SSLWantWriteError):
                    dst.wr_need = WRITE
                    return progress
                except ssl.SSLWantReadError:
                    dst.wr_need = READ
                    return progress
                progress = True
                if n < len(dst.out):  # the socket buffer is full: wait for room
                    dst.out = memoryview(dst.out)[n:]
                    dst.wr_need = WRITE
                    return progress
                dst.out = b""
            if src.eof:
                if not dst.tls and not dst.shut:
                    dst.shut = True
                    try:
                        dst.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return progress
            if rounds >= ROUNDS and not (src.tls and src.sock.pending()):  # type: ignore[attr-defined]
                src.rd_need = READ  # more may be there: the level-triggered poll says so
                return progress
            try:
                data = src.sock.recv(RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                src.rd_need = READ
                return progress
            except ssl.SSLWantWriteError:
                src.rd_need = WRITE
                return progress
            progress = True
            rounds += 1
            if not data:
                src.eof = True
                continue
            dst.out = data

    @staticmethod
    def _wants(side: _Side, other: _Side) -> int:
        events = 0
        if not side.eof and not other.out:
            events |= side.rd_need
        if side.out:
            events |= side.wr_need
        return events

    def _arm(self, t: Tunnel, side: _Side, events: int) -> None:
        if events == side.armed:
            return
        side.armed = events
        if side is t.client:
            self.listener.arm(t.conn, events)
        elif side.registered:
            self.listener.poller.arm(side.fd, events)
        else:
            side.registered = True
            self.listener.poller.add(side.fd, events)

    def _close(self, t: Tunnel) -> None:
        if t.closed:
            return
        t.closed = True
        self.by_fd.pop(t.client.fd, None)
        self.by_fd.pop(t.upstream.fd, None)
        try:
            t.upstream.sock.close()
        except OSError:
            pass
        self.listener.close(t.conn)

    # -- idle timeouts -------------------------------------------------------------

    def next_deadline(self) -> float | None:
        heap = self.deadlines
        while heap and heap[0][2].closed:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> None:
        heap = self.deadlines
        while heap and heap[0][0] <= now:
            _, _, t = heapq.heappop(heap)
            if t.closed:
                continue
            due = t.last + t.timeout
            if due > now:
                self.seq += 1
                heapq.heappush(heap, (due, self.seq, t))
                continue
            self.listener.log.info("proxy", f"tunnel idle for {t.timeout:g}s; closing it",
                                   t.conn.peer)
            self._close(t)
