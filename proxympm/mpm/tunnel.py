"""Upgrade tunnels (WebSocket and friends) and streamed response bodies, held by the
listener thread.

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

Streamed bodies (``Stream``) use the same machinery in one direction: on a
streaming route (flushpackets=on, responsebuffering=off) the worker sends the
response head and what came with it, then hands the upstream socket and the
response relay (which decodes and re-frames the body) to the listener, which
passes each piece on as it comes, reads the upstream only once the client took the
last piece, and at the end pools or closes the upstream and sends the client
connection on to keep-alive (or its pipelined next request) or a lingering close.
No worker waits between server-sent events or through a long poll.

Threads: ``Tunnels.adopt``/``adopt_stream`` are the worker's hand-off (a queue plus
the listener's wake-up); every other method runs on the listener thread, which
alone owns tunnel state.
"""

from __future__ import annotations

import heapq
import queue
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxympm.mpm.connection import Connection, State
from proxympm.mpm.poller import READ, WRITE
from proxympm.proxy.relay import RelayError, StreamSpec
from proxympm.proxy.upgrade import TunnelSpec

if TYPE_CHECKING:
    from proxympm.mpm.listener import Listener

RECV_SIZE = 65536
ROUNDS = 4  # reads per direction per event: one busy tunnel must not starve the rest


# -- the relay (listener thread) ---------------------------------------------------


class _Side:
    """One end of a tunnel: its socket and what waits to be written to it."""

    __slots__ = ("sock", "fd", "tls", "out", "eof", "shut", "rd_need", "wr_need", "armed",
                 "registered", "sent")

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
        self.sent = 0  # bytes written to this side

    def send_out(self) -> bool | None:
        """Write what waits in ``out``: True if all of it went, False if some did
        (the rest waits for room), None if nothing could go now; ``wr_need`` says
        which event to wait for."""
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, ssl.SSLWantWriteError):
            self.wr_need = WRITE
            return None
        except ssl.SSLWantReadError:
            self.wr_need = READ
            return None
        self.sent += n
        if n < len(self.out):  # the socket buffer is full: wait for room
            self.out = memoryview(self.out)[n:]
            self.wr_need = WRITE
            return False
        self.out = b""
        return True

    def recv(self) -> bytes | None:
        """What the socket has (b"" at EOF), or None if nothing now; ``rd_need``
        says which event to wait for."""
        try:
            return self.sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            self.rd_need = READ
        except ssl.SSLWantWriteError:
            self.rd_need = WRITE
        return None

    def may_read_more(self, rounds: int) -> bool:
        """After ``rounds`` reads in this event: go on, or let the other connections
        have their turn (bytes OpenSSL already decrypted are read on, the poller
        cannot report them)."""
        if rounds < ROUNDS or (self.tls and self.sock.pending()):  # type: ignore[attr-defined]
            return True
        self.rd_need = READ  # more may be there: the level-triggered poll says so
        return False


class Tunnel:
    """A switched connection (after a 101): bytes relayed both ways as they come."""

    __slots__ = ("conn", "client", "upstream", "timeout", "last", "closed")

    def __init__(self, conn: Connection, spec: TunnelSpec) -> None:
        self.conn = conn
        self.client = _Side(conn.sock, spec.leftover, conn.registered)
        self.upstream = _Side(spec.upstream, bytes(conn.inbuf), False)
        conn.inbuf.clear()
        self.timeout = spec.idle_timeout
        self.last = time.monotonic()
        self.closed = False


class Stream:
    """A streaming response body (SSE, long poll) relayed upstream -> client only: the
    relay decodes and re-frames it, the client gets each piece as it comes, and
    the upstream is not read while the client has not taken the last piece."""

    __slots__ = ("conn", "client", "upstream", "relay", "buf", "backend", "timeout",
                 "client_timeout", "release", "close_after", "on_done", "last", "closed")

    def __init__(self, conn: Connection, spec: StreamSpec, close_after: bool,
                 on_done: Callable[[int, int], None]) -> None:
        self.conn = conn
        self.client = _Side(conn.sock, b"", conn.registered)
        self.upstream = _Side(spec.upstream, b"", False)
        self.relay = spec.relay
        self.buf = spec.buf
        self.backend = spec.backend
        self.timeout = spec.timeout
        self.client_timeout = spec.client_timeout
        self.release = spec.release
        self.close_after = close_after
        self.on_done = on_done
        self.last = time.monotonic()
        self.closed = False


def _shortest(t: Tunnel | Stream) -> float:
    """The shortest idle limit that may apply to ``t``: a stream waits either for its
    backend (its timeout) or for the client (Timeout), and its one heap entry must
    not come due after either."""
    return min(t.timeout, t.client_timeout) if isinstance(t, Stream) else t.timeout


class Tunnels:
    """Every tunnel of one child; owned by the listener thread."""

    __slots__ = ("listener", "incoming", "by_fd", "deadlines", "seq", "count_sent")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        # the child's: bytes this thread sent to a client after a worker's hand-off,
        # counted (at the end) in the listener's words of the scoreboard
        self.count_sent: Callable[[int], None] | None = None
        self.incoming: queue.SimpleQueue[tuple[Connection, TunnelSpec | StreamSpec, bool,
                                               Callable[[int, int], None] | None]] = (
            queue.SimpleQueue())
        self.by_fd: dict[int, Tunnel | Stream] = {}
        # (deadline, seq, tunnel), one entry per tunnel; activity moves a tunnel's
        # deadline lazily: an entry that comes due early is pushed again, not searched
        # (see _shortest for a stream's two limits).
        self.deadlines: list[tuple[float, int, Tunnel | Stream]] = []
        self.seq = 0

    @property
    def count(self) -> int:
        """Descriptors held besides the client connections (one upstream each)."""
        return len(self.by_fd) // 2

    def adopt(self, conn: Connection, spec: TunnelSpec) -> None:
        """Worker thread: hand over a switched connection; the worker forgets it."""
        conn.set_state(State.TUNNEL)
        self.incoming.put((conn, spec, True, None))
        self.listener.wake()

    def adopt_stream(self, conn: Connection, spec: StreamSpec, close_after: bool,
                     on_done: Callable[[int, int], None]) -> None:
        """Worker thread: hand over a streaming response whose head was sent;
        ``on_done(body_bytes, bytes_out)`` runs (listener thread) once it is complete."""
        conn.set_state(State.TUNNEL)
        self.incoming.put((conn, spec, close_after, on_done))
        self.listener.wake()

    def start_incoming(self) -> None:
        while True:
            try:
                conn, spec, close_after, on_done = self.incoming.get_nowait()
            except queue.Empty:
                return
            if self.listener.stopping and not self.listener.graceful:
                spec.upstream.close()
                self.listener.close(conn)
                continue
            if isinstance(spec, StreamSpec):
                assert on_done is not None
                t: Tunnel | Stream = Stream(conn, spec, close_after, on_done)
            else:
                t = Tunnel(conn, spec)
            self.by_fd[t.client.fd] = t
            self.by_fd[t.upstream.fd] = t
            self.seq += 1
            heapq.heappush(self.deadlines, (t.last + _shortest(t), self.seq, t))
            self._pump(t)

    def on_event(self, fd: int) -> None:
        t = self.by_fd.get(fd)
        if t is None:
            return
        side = t.client if fd == t.client.fd else t.upstream
        side.armed = 0  # one-shot: the event disarmed it
        self._pump(t)

    # -- moving bytes ----------------------------------------------------------------

    def _pump(self, t: Tunnel | Stream) -> None:
        if isinstance(t, Stream):
            self._pump_stream(t)
            return
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
                sent = dst.send_out()
                if sent is None:
                    return progress
                progress = True
                if not sent:
                    return progress
            if src.eof:
                if not dst.tls and not dst.shut:
                    dst.shut = True
                    try:
                        dst.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return progress
            if not src.may_read_more(rounds):
                return progress
            data = src.recv()
            if data is None:
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

    def _pump_stream(self, s: Stream) -> None:
        c, u = s.client, s.upstream
        relay = s.relay
        rounds = 0
        try:
            while True:
                if c.out:
                    sent = c.send_out()
                    if sent is None:
                        break
                    s.last = time.monotonic()
                    if not sent:
                        break
                if relay.done:
                    self._finish_stream(s)
                    return
                if not u.may_read_more(rounds):
                    break
                data = u.recv()
                if data is None:
                    break
                rounds += 1
                s.last = time.monotonic()
                if data:
                    s.buf += data
                    c.out = relay.take(s.buf)
                else:
                    u.eof = True
                    c.out = relay.take(None)  # RelayError if the body was cut short
        except RelayError as exc:
            self._abort_stream(s, f"AH01110: error reading the response body from "
                               f"{s.backend}: {exc}")
            return
        except OSError as exc:  # the client went away, or the upstream reset
            self._abort_stream(s, f"streaming response from {s.backend} ended: {exc}")
            return
        self._arm(s, c, c.wr_need if c.out else 0)
        self._arm(s, u, 0 if c.out or u.eof else u.rd_need)

    def _finish_stream(self, s: Stream) -> None:
        """The body is complete: the upstream goes back to the pool (out of this
        poller first) if it can carry another request, else it is closed; the client
        connection goes on to keep-alive, a pipelined request, or a lingering close."""
        s.closed = True
        self._count(s)
        u = s.upstream
        self.by_fd.pop(s.client.fd, None)
        self.by_fd.pop(u.fd, None)
        if s.release is not None and not u.eof and not s.buf:
            if u.registered:
                self.listener.poller.forget(u.fd)
            s.release()
        else:
            u.sock.close()
        s.on_done(s.relay.body_bytes, s.relay.bytes_out)
        conn = s.conn
        conn.out = b""
        conn.spool = None
        listener = self.listener
        if listener.start_write(conn, then_close=s.close_after):
            listener.dispatch(conn)

    def _abort_stream(self, s: Stream, message: str) -> None:
        self.listener.log.error("proxy", message, s.conn.client)
        s.on_done(s.relay.body_bytes, s.relay.bytes_out)
        self._close(s)

    def _arm(self, t: Tunnel | Stream, side: _Side, events: int) -> None:
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

    def _close(self, t: Tunnel | Stream) -> None:
        if t.closed:
            return
        t.closed = True
        self._count(t)
        self.by_fd.pop(t.client.fd, None)
        self.by_fd.pop(t.upstream.fd, None)
        try:
            t.upstream.sock.close()
        except OSError:
            pass
        self.listener.close(t.conn)

    def _count(self, t: Tunnel | Stream) -> None:
        if self.count_sent is not None and t.client.sent:
            self.count_sent(t.client.sent)

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
            waits_for_client = isinstance(t, Stream) and bool(t.client.out)
            limit = t.client_timeout if waits_for_client else t.timeout  # type: ignore[union-attr]
            due = t.last + limit
            if due > now:
                # A stream may start waiting on the other side (another limit) at any
                # moment without a new entry: look again within the shorter limit.
                self.seq += 1
                heapq.heappush(heap, (min(due, now + _shortest(t)), self.seq, t))
                continue
            if isinstance(t, Tunnel):
                self.listener.log.info("proxy", f"tunnel idle for {t.timeout:g}s; closing it",
                                       t.conn.client)
                self._close(t)
            elif waits_for_client:
                self.listener.log.info("core", "AH01084: timed out writing the response to "
                                       "the client", t.conn.client)
                t.on_done(t.relay.body_bytes, t.relay.bytes_out)
                self._close(t)
            else:
                self._abort_stream(t, f"AH01110: error reading the response body from "
                                   f"{t.backend}: timed out")
