"""The listener thread: one per child, the only thread that waits on the network.

It owns the listening sockets and every connection that is waiting: PROXY
protocol headers (RemoteIPProxyProtocol, read before anything else), TLS
handshakes, half-read request heads (and small bodies being buffered), idle
keep-alive connections, response tails in write completion, and lingering
closes. Workers only ever receive connections with a complete request head.

Inline exchanges: a complete small request on a plain-HTTP route with a pooled
upstream connection is forwarded by this thread itself (Worker.start_inline,
Exchange.start_inline): the request goes out without blocking, the upstream socket
joins this poller (``upstreams``), and the answer is relayed when it arrives. No
thread hand-off, no GIL hand-off, ~0 context switches per request instead of ~2.5.
Whatever would make it wait on anything else (no pooled connection, a partial send,
a big response, EOF, an error, the upstream timeout) hands the connection to a
worker, which continues the same exchange with the blocking code. The connection
is in PROCESSING meanwhile, owned by this thread, and counts as a busy worker on
the scoreboard. An upstream socket stays in this poller, edge-triggered, from its
first inline exchange until a worker takes it over (``watch``): no re-arming per
request, and an idle pooled one that sees EOF is closed when it happens.

Rounds: the requests begun and the small responses completed while handling one
``poll``'s events are sent after it (``_send_round``), so a peer woken by the first
finds the rest when it runs instead of being woken once per message.

Queued requests (``max`` on a balancer member or a plain ProxyPass) wait here too,
in QUEUED, holding no worker: see queued.py.

Admission (AsyncRequestWorkerFactor, adapted): httpd stops accepting when
    connections > ThreadsPerChild + AsyncRequestWorkerFactor * idle_workers.
Here idle keep-alive and still-reading connections cost no thread, so only
connections that hold or wait for a worker ("outstanding") are counted:
    accept while outstanding < ThreadsPerChild + factor * idle_workers
            and total connections < max_connections (derived from RLIMIT_NOFILE).
When either limit is hit the listening sockets leave the poller (other
children, or the kernel backlog, take new clients) and come back as soon as a
worker hands a connection back.

Balance (balance.py): a child that holds more than its share of the server's
connections leaves what is queued to its least loaded peer, which it nudges.

Every method here runs on the listener thread unless its docstring says
"worker thread". Connection fds are one-shot in the poller (poller.py): an event
disarms the fd, so a connection is never reported while a worker owns it; the
worker re-arms it when it hands the connection back.
"""

from __future__ import annotations

import errno
import os
import queue
import socket
import ssl
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxympm.config.model import HostConfig, Listen, ReadStage, ServerConfig
from proxympm.http.errors import ClientGone, HTTPError
from proxympm.http.proxy_protocol import parse as parse_proxy_header
from proxympm.http.request import Limits, RequestReader
from proxympm.http.serialize import error_response
from proxympm.mpm.balance import HOLD, AcceptBalance
from proxympm.mpm.connection import Connection, State
from proxympm.mpm.poller import HANGUP, READ, WRITE, Poller, SelectorPoller, make_poller
from proxympm.mpm.proxy_header import ProxyHeaderError, excepted, read_header
from proxympm.mpm.queued import Queued
from proxympm.mpm.timeouts import DeadlineHeap, TimeoutQueue
from proxympm.mpm.tunnel import Tunnels
from proxympm.proxy.exchange import INLINE_DONE, INLINE_WAIT
from proxympm.proxy.header_rules import host_error_headers

if TYPE_CHECKING:
    from proxympm.mpm.worker import Worker
    from proxympm.proxy.backend_table import BackendTable
    from proxympm.proxy.pool import Upstream

# the states the per-request path compares with, as plain names (an enum member is
# an attribute lookup on its class each time)
READ_HEAD, READ_BODY, KEEPALIVE, PROCESSING = (
    State.READ_HEAD, State.READ_BODY, State.KEEPALIVE, State.PROCESSING)
SILENT = (READ_HEAD, State.PROXY_HEADER)  # states where a client may have sent nothing
RECV_SIZE = 65536
ACCEPT_BATCH = 64
BODY_BUFFER = 65536  # request bodies up to this size are read here, before dispatch
LINGER_TIMEOUT = 2.0  # httpd's SECONDS_TO_LINGER
STOP_IDLE_GRACE = 1.0  # graceful stop: idle keep-alive connections get this long first
FD_RESERVE = 64
UPSTREAM_SCAN = 0.1  # how often inline exchanges are checked for their upstream timeout


def connection_cap(threads_per_child: int) -> int:
    """Connections one child may hold: what the fd limit leaves after one upstream
    socket per worker, pooled upstream sockets and a reserve for files."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft - 3 * threads_per_child - FD_RESERVE)


class Listener:
    def __init__(
        self,
        config: ServerConfig,
        listeners: list[tuple[socket.socket, Listen, HostConfig, ssl.SSLContext | None]],
        work_queue: queue.SimpleQueue,
        done_counters: Callable[[], int],
        log_error: Callable[[HTTPError, Connection], None],
        limits_for: Callable[[HostConfig], Limits],
        error_log: object,
        wants_buffering: Callable[[Connection], bool] = lambda conn: True,
        will_forward: Callable[[Connection], bool] = lambda conn: True,
        client_of: Callable[[Connection], tuple[str, int]] = lambda conn: conn.client,
    ) -> None:
        self.wants_buffering = wants_buffering
        self.will_forward = will_forward
        self.client_of = client_of  # whom a log line names: mod_remoteip's client, once known
        self.config = config
        self.listeners = listeners
        self.work_queue = work_queue
        self.done_counters = done_counters
        self.log_error = log_error
        self.limits_for = limits_for
        self.log = error_log
        self.poller: Poller = make_poller()
        self.conns: dict[int, Connection] = {}
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.add_persistent(self.wake_r)
        self.by_fd = {s.fileno(): (s, spec, host, ctx) for s, spec, host, ctx in listeners}
        # A socket bound to one address accepts only connections to it: their local
        # address is known without a getsockname() per connection.
        self.fixed_local: dict[int, tuple[str, int]] = {}
        for s, *_ in listeners:
            try:
                bound = s.getsockname()[:2]
            except (OSError, TypeError):
                continue
            if bound[0] not in ("0.0.0.0", "::"):
                self.fixed_local[s.fileno()] = bound
        self.accepting = False
        self.accept_paused = False  # read by workers to decide whether to wake us
        self.dispatched = 0
        self.done_seen = 0  # workers' done count when this thread last summed it
        self.inline_done = 0  # inline exchanges this thread completed (written only here)
        self.stopping = False
        self.graceful = False
        self.stop_began = 0.0  # monotonic, the first graceful stop step
        self.listeners_closed = False
        self.max_conns = connection_cap(config.threads_per_child)
        self.conns_left = config.max_connections_per_child  # 0: unlimited
        self.fd_ceiling = 0  # after EMFILE: hold below this many connections for a while
        self.fd_ceiling_until = 0.0
        self.wake_sent = False  # a worker already woke us for this accept pause
        self.cap_logged = False  # the connection cap was logged for this pause
        self.tpc = config.threads_per_child
        self.factor = config.async_request_worker_factor
        self.thread = threading.Thread(target=self.run, name="listener", daemon=True)
        # RequestReadTimeout: handshake, head and body deadlines (they move with MinRate).
        self.reading = DeadlineHeap((State.HANDSHAKE, State.READ_HEAD, State.READ_BODY,
                                     State.PROXY_HEADER))
        # Write completion: Timeout per wait for the client, moved on every progress.
        self.writing = DeadlineHeap((State.WRITE_COMPLETION,))
        self.linger_q = TimeoutQueue(LINGER_TIMEOUT, State.LINGER)
        self.ka_qs: dict[float, TimeoutQueue] = {}
        # Inline exchanges (worker.Worker.start_inline): small requests this thread
        # forwards itself on pooled upstream connections, never waiting on one.
        self.inline: Worker | None = None  # set by the child; None: always a worker
        self.upstreams: dict[int, Connection] = {}  # upstream fd -> its client connection
        # inline responses completed in this round of events, and requests begun in
        # it: sent after the round (_send_round)
        self.round_out: list[tuple[Connection, bool]] = []
        self.round_up: list[Connection] = []
        # the pool's idle upstreams that this poller watches (pool.Pool.watched_fds)
        self.idle_ups: dict[int, object] = {}
        self.edge = self.poller.edge  # upstream sockets are watched, not re-armed
        # complete requests waiting for an inline slot (all ThreadsPerChild in use)
        self.inline_waiting: deque[Connection] = deque()
        self.upstream_scan = 0.0
        for host in config.all_hosts():
            self.ka_qs.setdefault(host.keepalive_timeout,
                                  TimeoutQueue(host.keepalive_timeout, State.KEEPALIVE))
        self.tunnels = Tunnels(self)  # upgrade tunnels and streamed bodies (tunnel.py)
        # requests waiting in a ``max`` queue (queued.py); None: no such backend
        self.queued: Queued | None = None
        self.queued_fd = -1
        # accept balance with the other children (balance.py); None: alone
        self.balance: AcceptBalance | None = None
        self.balance_fd = -1
        self.balance_until = 0.0  # holding back for a nudged peer until then
        self.share_held = -1  # the count last published
        self._set_accepting(True)

    # -- admission -----------------------------------------------------------------

    def outstanding(self) -> int:
        """Any thread: requests dispatched to workers and not finished yet."""
        return self.dispatched - self.done_counters()

    def _outstanding_counted(self) -> int:
        """``outstanding()``, remembering the workers' count for the bound below."""
        self.done_seen = done = self.done_counters()
        return self.dispatched - done

    def _outstanding_at_most(self) -> int:
        """``outstanding()`` without summing every worker's count: an upper bound
        from the last count seen (workers only ever finish more). Exact whenever no
        worker holds a request, which is the common case with inline exchanges."""
        return self.dispatched - self.done_seen

    def _may_accept(self) -> bool:
        if self.stopping or len(self.conns) + self.tunnels.count >= self.max_conns:
            return False
        if self.fd_ceiling and len(self.conns) >= self.fd_ceiling:
            if time.monotonic() < self.fd_ceiling_until:
                return False
            self.fd_ceiling = 0  # try again; EMFILE will set it anew if still short
        # requests held by a worker, forwarded inline, or waiting for either
        others = len(self.upstreams) + len(self.inline_waiting)
        busy = self._outstanding_at_most() + others
        if busy >= self.tpc + self.factor * max(0, self.tpc - busy) and (
                self.dispatched != self.done_seen):
            busy = self._outstanding_counted() + others  # the bound says no: count exactly
        idle = max(0, self.tpc - busy)
        return busy < self.tpc + self.factor * idle

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        for fd in self.by_fd:
            if on:
                self.poller.add_persistent(fd, exclusive=True)
            else:
                self.poller.remove_persistent(fd)
        self.accepting = on
        self.accept_paused = not on
        if self.balance is not None:
            self._publish_share()

    def _publish_share(self) -> None:
        """Tell the other children how many connections this one holds, and
        whether it takes more (a balance hold still does)."""
        self.share_held = held = len(self.conns)  # (a tunnel's client among them)
        self.balance.publish(held, self.accepting or self.balance_until > 0)  # type: ignore[union-attr]

    def attach_balance(self, balance: AcceptBalance) -> None:
        """Child, before ``run``: balance accepting with the other children."""
        self.balance = balance
        self.balance_fd = balance.fd
        balance.drain()  # nudges meant for this slot's previous child
        self.poller.add_persistent(balance.fd)
        self._publish_share()

    def _hold_for(self, peer: int) -> None:
        """This child holds more than its share: the least loaded ``peer`` takes
        what is queued; this one stops accepting until it is back within its share,
        or for HOLD at most (then it takes them itself: the peer may be stuck)."""
        self.balance_until = time.monotonic() + HOLD
        self._set_accepting(False)
        self.balance.nudge(peer)  # type: ignore[union-attr]

    def _resume(self, now: float) -> None:
        """Accepting was paused and admission allows it again. After a balance
        hold: once the peers caught up, or HOLD passed; then what is still queued
        is this child's to take (the nudged peer did not: stuck, or paused)."""
        force = False
        if self.balance_until:
            if now < self.balance_until and self.balance.least_loaded(  # type: ignore[union-attr]
                    len(self.conns)) >= 0:
                return
            force = now >= self.balance_until
            self.balance_until = 0.0
        self._set_accepting(True)
        self.cap_logged = False
        if force:
            for lfd in list(self.by_fd):
                self._accept(lfd, force=True)
            if self.round_out or self.round_up or self.inline_waiting:
                self._send_round()  # what they asked for goes now, not after a poll

    def _on_nudge(self) -> None:
        """A peer holding more than its share asks this child to accept."""
        self.balance.drain()  # type: ignore[union-attr]
        if self.stopping or not (self.accepting or self.balance_until):
            return
        for lfd in list(self.by_fd):
            self._accept(lfd)

    def worker_freed(self) -> None:
        """Worker thread, after its ``done`` count went up: wake the listener if it
        paused accepting, once per pause (not once per request)."""
        if self.accept_paused and not self.wake_sent:
            self.wake_sent = True
            self.wake()

    def arm(self, conn: Connection, events: int) -> None:
        """The owner of ``conn`` (listener or worker): wait for ``events`` on it.

        A connection enters the poller only the first time it has to wait: one
        registered at accept would be reported for EPOLLHUP (which epoll delivers
        even without asking) while a worker owns it, and the listener could close it
        under the worker."""
        if conn.registered:
            self.poller.arm(conn.fd, events)
        else:
            conn.registered = True
            self.poller.add(conn.fd, events)

    def wake(self) -> None:
        """Any thread: make the listener look at its state now."""
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    def attach_table(self, table: BackendTable) -> None:
        """Child, before ``run``: requests that wait for a ``max`` slot wait here."""
        self.queued = Queued(self, table)
        if self.queued.fd is not None:
            self.queued_fd = self.queued.fd
            self.poller.add_persistent(self.queued_fd)

    # -- main loop -----------------------------------------------------------------

    def run(self) -> None:
        poller = self.poller
        if isinstance(poller, SelectorPoller):
            poller.bind_thread()
        if self.inline is not None:  # inline exchanges count in the listener's own rows
            self.inline.exchange.bind_thread(self.tpc)
            self.idle_ups = self.inline.exchange.pool.watched_fds
        while True:
            timeout = self._poll_timeout()
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                continue
            for fd, ev in events:
                conn = self.conns.get(fd)
                if conn is not None:
                    self._on_conn_event(conn, ev)
                elif fd in self.upstreams:
                    self._on_upstream_event(fd, self.upstreams[fd], ev)
                elif fd in self.idle_ups and self.inline.exchange.pool.drop_watched(fd):  # type: ignore[union-attr]
                    pass  # an idle pooled upstream saw EOF (or sent bytes): closed
                elif fd in self.by_fd:
                    self._accept(fd)
                elif fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                    self.wake_sent = False  # before re-checking admission below
                    self.tunnels.start_incoming()
                    if self.queued is not None:
                        self.queued.on_wake(False)
                elif fd == self.queued_fd:  # another child answered one of our records
                    self.queued.on_wake(True)  # type: ignore[union-attr]
                elif fd == self.balance_fd:
                    self._on_nudge()
                else:  # the upstream side of a tunnel or a streamed body
                    self.tunnels.on_event(fd)
            if self.round_out or self.round_up or self.inline_waiting:
                self._send_round()
            now = time.monotonic()
            self._expire(now)
            if self.stopping:
                if self._stop_step():
                    return
            elif not self.accepting and self._may_accept():
                self._resume(now)
            if self.balance is not None:
                if len(self.conns) != self.share_held:
                    self._publish_share()
                if now >= self.balance.churn_next:
                    self.balance.roll(now)

    def _poll_timeout(self) -> float:
        if self.stopping:
            return 0.1  # graceful stop: idle connections are closed on time
        deadlines = [q.next_deadline() for q in self._queues()]
        deadlines.append(self.reading.next_deadline())
        deadlines.append(self.writing.next_deadline())
        deadlines.append(self.tunnels.next_deadline())
        if self.queued is not None:
            deadlines.append(self.queued.next_deadline())
        if self.balance_until:
            deadlines.append(self.balance_until - 0.01)  # (the margin is added below)
        nearest = min((d for d in deadlines if d is not None), default=None)
        longest = UPSTREAM_SCAN if self.upstreams else 1.0
        if nearest is None:
            return longest
        return min(longest, max(0.0, nearest - time.monotonic() + 0.01))

    def _queues(self) -> list[TimeoutQueue]:
        return [self.linger_q, *self.ka_qs.values()]

    # -- accept --------------------------------------------------------------------

    def _accept(self, lfd: int, force: bool = False) -> None:
        """Accept what is queued on ``lfd``, within admission and (unless
        ``force``) this child's share of the connections."""
        lsock, spec, host, ctx = self.by_fd[lfd]
        balance = self.balance
        for _ in range(ACCEPT_BATCH):
            if not self._may_accept():
                held = len(self.conns) + self.tunnels.count  # as _may_accept counts
                if held >= self.max_conns and not self.cap_logged:
                    self.cap_logged = True
                    self.log.warn("mpm", f"too many open connections "
                                  f"({held}, the cap RLIMIT_NOFILE leaves), not "
                                  "accepting new connections in this process")
                self.balance_until = 0.0
                self._set_accepting(False)
                # A worker that finished between the check and the flag saw no pause
                # and sent no wake-up: look again now that the flag is visible.
                if self._may_accept():
                    self._set_accepting(True)
                    continue
                if balance is not None:  # what is queued goes to a peer that takes it
                    self._publish_share()
                    other = balance.least_loaded(self.max_conns + 1)
                    if other >= 0:
                        balance.nudge(other)
                return
            if balance is not None and not force:
                if not balance.churning(len(self.conns)):
                    other = balance.least_loaded(len(self.conns))
                    if other >= 0:
                        self._hold_for(other)
                        return
                if not self.accepting:  # nudged while holding: within its share again
                    self.balance_until = 0.0
                    self._set_accepting(True)
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("mpm", f"AH00478: accept: {exc.strerror}; "
                                   "not accepting until connections close")
                    self._set_accepting(False)
                    self.fd_ceiling = max(16, len(self.conns) - 8)
                    self.fd_ceiling_until = time.monotonic() + 2.0
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                raise
            if self.conns_left:
                self.conns_left -= 1
                if not self.conns_left:  # MaxConnectionsPerChild: retire gracefully
                    self.stop(graceful=True)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = self.fixed_local.get(lfd) or sock.getsockname()[:2]
            conn = Connection(sock, peer[:2], local, RequestReader(self.limits_for(host)),
                              host, tls=ctx is not None)
            self.conns[conn.fd] = conn
            if balance is not None:
                balance.accepted += 1
                self._publish_share()
            if spec.proxy_protocol and not (spec.proxy_exceptions
                                            and excepted(spec.proxy_exceptions, peer[0])):
                self._await_proxy_header(conn, ctx)
            else:
                self._start(conn, ctx)

    def _start(self, conn: Connection, ctx: ssl.SSLContext | None) -> None:
        """A new connection (its PROXY header read, if any): TLS handshake or request."""
        host = conn.host_cfg
        if ctx is not None:
            conn.sock = ctx.wrap_socket(conn.sock, server_side=True,
                                        do_handshake_on_connect=False)
            conn.set_state(State.HANDSHAKE)
            self.arm(conn, READ)
            stage = host.read_timeout.handshake
            conn.stage = None
            conn.read_deadline = time.monotonic() + (stage.timeout or host.timeout)
            self.reading.push(conn)
            return
        self.enter_read_head(conn)
        self._read(conn)

    # -- PROXY protocol (RemoteIPProxyProtocol) -------------------------------------

    def _await_proxy_header(self, conn: Connection, ctx: ssl.SSLContext | None) -> None:
        conn.pending_tls = ctx
        conn.set_state(State.PROXY_HEADER)
        conn.stage = None
        stage = conn.host_cfg.read_timeout.header
        conn.read_deadline = time.monotonic() + (stage.timeout or conn.host_cfg.timeout)
        self.reading.push(conn)
        self._proxy_header(conn)

    def _proxy_header(self, conn: Connection) -> None:
        try:
            header = read_header(conn.sock, conn.inbuf)
            if header is None:
                self.arm(conn, READ)
                return
            source = parse_proxy_header(header)
        except (ProxyHeaderError, OSError) as exc:
            quiet = isinstance(exc, ConnectionError) and not conn.inbuf  # a port probe
            (self.log.info if quiet else self.log.error)(
                "remoteip", f"AH03507: RemoteIPProxyProtocol: {exc}; closing the "
                "connection", conn.peer)
            self.close(conn)
            return
        if source is not None:
            conn.peer = source
        ctx, conn.pending_tls = conn.pending_tls, None
        self._start(conn, ctx)

    # -- connection events ---------------------------------------------------------

    def _on_conn_event(self, conn: Connection, ev: int) -> None:
        state = conn.state
        if state == READ_HEAD or state == READ_BODY:
            self._read(conn)
        elif state == KEEPALIVE:
            self.enter_read_head(conn)
            self._read(conn)
        elif state == State.HANDSHAKE:
            self._handshake(conn)
        elif state == State.WRITE_COMPLETION:
            self._write_more(conn)
        elif state == State.LINGER:
            self._linger_read(conn)
        elif state == State.TUNNEL:
            self.tunnels.on_event(conn.fd)
        elif state == State.PROXY_HEADER:
            self._proxy_header(conn)
        elif state == State.QUEUED:  # armed for a hang-up only
            self.queued.hung_up(conn)  # type: ignore[union-attr]
        # PROCESSING: a HUP/ERR while a worker owns it; the worker will see it.

    def _handshake(self, conn: Connection) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.arm(conn, READ)
            return
        except ssl.SSLWantWriteError:
            self.arm(conn, WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            self.log.info("ssl", f"AH02008: TLS handshake failed: {exc}", conn.peer)
            self.close(conn)
            return
        sni = getattr(sock, "proxympm_host", None)
        if sni is not None:
            conn.sni_host = sni
            conn.host_cfg = sni
            conn.reader = RequestReader(self.limits_for(sni))
        self.enter_read_head(conn)
        self._read(conn)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            self._wait_reading(conn, READ)
            return
        except ssl.SSLWantWriteError:
            self._wait_reading(conn, WRITE)
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self.close(conn)
            return
        conn.inbuf += data
        conn.bytes_in += len(data)
        conn.extend_deadline()
        if self.advance(conn):
            self.dispatch(conn)

    def enter_read_head(self, conn: Connection) -> None:
        """Listener, or the worker that owns ``conn``: wait for a request head."""
        self._enter_reading(conn, READ_HEAD, conn.host_cfg.read_timeout.header)

    def _enter_reading(self, conn: Connection, state: State, stage: ReadStage) -> None:
        """The stage's clock starts now; its deadline is queued only if the
        connection has to wait (``_wait_reading``): a keep-alive request that is
        complete in its first read never touches the deadline heap."""
        conn.set_state(state)
        if stage.timeout:
            conn.start_stage(stage, time.monotonic())
        else:
            conn.stage = None

    def _wait_reading(self, conn: Connection, events: int) -> None:
        """A reading connection waits for more: its read deadline is queued (once per
        state) and it is armed."""
        if conn.stage is not None and conn.queued_epoch != conn.epoch:
            conn.queued_epoch = conn.epoch
            self.reading.push(conn)
        self.arm(conn, events)

    def advance(self, conn: Connection) -> bool:
        """Parse what is buffered. True: a request is ready for a worker. False: the
        connection was re-armed to read more, or answered with an error.
        Runs on the listener thread, or on the worker thread that owns ``conn``
        (pipelined input); it never dispatches, its caller does."""
        try:
            if conn.request is None:
                parsed = conn.reader.read(conn.inbuf)
                if parsed is None:
                    self._wait_reading(conn, READ)
                    return False
                conn.request, conn.body = parsed
                conn.buffer_body = not conn.body.done and self.wants_buffering(conn)
                if conn.request.expect_continue and not conn.body.done and not conn.inbuf:
                    if not self.will_forward(conn):
                        # answered without the body (404, 403, a handler): no 100, so
                        # the client does not send it; the worker closes afterwards
                        return True
                    conn.send_some(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = conn.body
            assert body is not None
            if conn.inbuf and not body.done:
                data = body.feed(conn.inbuf)  # takes all it can; a partial chunk line waits
                if data:
                    self._keep_body(conn, data)
            if body.done:
                return True
            if not conn.buffer_body and (body.received >= BODY_BUFFER or (
                    (conn.request.content_length or 0) > BODY_BUFFER)):
                return True  # a streaming route: the worker relays the rest as it comes
            if conn.state != READ_BODY:
                self._enter_reading(conn, READ_BODY, conn.host_cfg.read_timeout.body)
            self._wait_reading(conn, READ)
            return False
        except HTTPError as exc:
            self.reject(conn, exc)
            return False

    def _keep_body(self, conn: Connection, data: bytes) -> None:
        if not conn.buffer_body:
            conn.body_parts.append(data)
            return
        try:
            conn.keep_body(data, BODY_BUFFER)
        except OSError as exc:
            # No temp file (disk full, unwritable TMPDIR): stream this one instead.
            self.log.error("proxy", f"AH01111: cannot buffer the request body in a temp "
                           f"file ({exc.strerror}); streaming it", self.client_of(conn))
            conn.buffer_body = False
            conn.body_parts.append(data)

    def dispatch(self, conn: Connection) -> None:
        conn.set_state(PROCESSING)
        # Inline exchanges count against ThreadsPerChild like workers do: requests in
        # progress towards backends stay bounded per child as in httpd (and with them
        # the pooled upstream connections).
        if self.inline is not None:
            if self._slot_free():
                try:
                    flow = self.inline.start_inline(conn)
                except Exception:  # noqa: BLE001 - as a worker would: log, drop this one
                    self._inline_failed(conn)
                    return
                if flow is not None and flow.up is not None:
                    self.round_up.append(conn)  # sent after this round: _send_round
                    return
            elif self.upstreams or self.round_up:
                # Every slot is taken and inline exchanges are among them: wait for one
                # of those (its answer wakes this thread) rather than hand the request
                # to a worker that would only sleep on its upstream.
                self.inline_waiting.append(conn)
                return
        self._to_worker(conn)

    def _slot_free(self) -> bool:
        """Fewer than ThreadsPerChild requests are with workers or forwarded inline."""
        inline = len(self.upstreams) + len(self.round_up)
        if inline + self._outstanding_at_most() < self.tpc:
            return True
        return (self.dispatched != self.done_seen
                and inline + self._outstanding_counted() < self.tpc)

    def _dispatch_waiting(self) -> None:
        """Listener thread: requests that waited for a slot, in arrival order, as
        slots free up; to the workers if only workers hold the slots now."""
        waiting = self.inline_waiting
        while waiting and self._slot_free():
            self.dispatch(waiting.popleft())
        if waiting and not self.upstreams and not self.round_up:
            # no inline answer will bring us back here
            while waiting:
                self._to_worker(waiting.popleft())

    # -- requests queued for a ``max`` slot (queued.py) -----------------------------

    def park(self, conn: Connection) -> None:
        """Worker thread: ``conn`` waits in a ``max`` queue (``conn.parked``)."""
        assert self.queued is not None
        self.queued.park(conn)

    def resume_queued(self, conn: Connection) -> None:
        """The wait of a queued request is over: a worker goes on with it."""
        conn.set_state(State.PROCESSING)
        self._to_worker(conn)

    # -- inline exchanges ------------------------------------------------------------

    def _wait_upstream(self, conn: Connection, up: Upstream) -> None:
        fd = up.sock.fileno()
        self.upstreams[fd] = conn
        conn.read_deadline = time.monotonic() + conn.inline[0].timeout  # type: ignore[index]
        if self.edge:
            # Watched from its first inline exchange on, idle in the pool included
            # (pool.take_watched): no syscall per request; one that a worker used
            # since is added again.
            if not up.watched:
                self.poller.watch(fd)
                up.watched = True
            return
        # A pooled connection stays in this poller (disarmed) between exchanges, so
        # re-arming it is one syscall; one never here, or that left, is added.
        try:
            self.poller.arm(fd, READ)
        except FileNotFoundError:
            self.poller.add(fd, READ)

    def _unwatch(self, up: Upstream) -> None:
        """An upstream socket goes to a worker: its events are no longer ours."""
        if up.watched:
            self.poller.forget(up.sock.fileno())
            up.watched = False

    def _to_worker(self, conn: Connection) -> None:
        """A worker serves ``conn``'s request, or continues its inline exchange (whose
        upstream socket then leaves this poller)."""
        if conn.inline is not None and conn.inline[0] is not None:
            up = conn.inline[0].up
            if up is not None:
                self._unwatch(up)
        self.dispatched += 1
        self.work_queue.put(conn)

    def _on_upstream_event(self, fd: int, conn: Connection, ev: int) -> None:
        assert self.inline is not None and conn.inline is not None
        flow = conn.inline[0]
        if ev & HANGUP:  # its EOF may be all that follows the response: never pooled
            flow.upstream_closed = True
        try:
            step = self.inline.exchange.pump_inline(flow)
            if step == INLINE_WAIT:  # (read until EAGAIN: a watched socket needs no arm)
                conn.read_deadline = time.monotonic() + flow.timeout
                if not self.edge:
                    self.poller.arm(fd, READ)
                return
            del self.upstreams[fd]
            if step != INLINE_DONE:
                self._to_worker(conn)  # a worker continues the same exchange
                return
            then = self.inline.finish_inline(conn)
            self.inline_done += 1
        except ClientGone:
            self.upstreams.pop(fd, None)
            self.close(conn)
            return
        except Exception:  # noqa: BLE001 - as a worker would: log, drop this one
            self.upstreams.pop(fd, None)
            self._inline_failed(conn)
            return
        if then is not None:
            self.round_out.append((conn, then))

    def _send_round(self) -> None:
        """The responses this round of events completed go out together, after the
        round: a client woken by the first finds the others there when it runs,
        instead of being woken once per response. Measured with wrk -c50 on two
        cores: wrk's epoll_wait calls went from 1 per 1.9 responses to 1 per 4.4,
        and its CPU per request from ~16 to ~11 µs, as much as with httpd; the
        proxy pays less for waking it, too. Then the requests it began go upstream,
        together for the same reason."""
        done, self.round_out = self.round_out, []
        for conn, then in done:
            if self.start_write(conn, then_close=then):
                self.dispatch(conn)
        if self.inline_waiting:
            self._dispatch_waiting()
        began, self.round_up = self.round_up, []
        ex = self.inline.exchange  # type: ignore[union-attr]
        for conn in began:
            flow = conn.inline[0]  # type: ignore[index]
            try:
                ex.send_inline(flow, conn.client)
            except Exception:  # noqa: BLE001 - as a worker would: log, drop this one
                self._inline_failed(conn)
                continue
            if flow.up is not None and not flow.unsent:
                self._wait_upstream(conn, flow.up)
            else:  # a worker connects afresh, or sends the rest
                self._to_worker(conn)

    def _inline_failed(self, conn: Connection) -> None:
        self.log.error("mpm", "AH00000: inline exchange failed: "
                       + traceback.format_exc().replace("\n", " | "), conn.client)
        flow = conn.inline[0] if conn.inline is not None else None
        if flow is not None and flow.up is not None:
            flow.up.sock.close()
        conn.inline = None
        self.close(conn)

    def _expire_upstreams(self, now: float) -> None:
        """An inline exchange whose upstream stayed silent for its timeout goes to a
        worker, which answers as it does for a timeout of its own."""
        if now < self.upstream_scan:
            return
        self.upstream_scan = now + UPSTREAM_SCAN
        for fd, conn in list(self.upstreams.items()):
            if conn.read_deadline <= now:
                del self.upstreams[fd]
                conn.inline[0].timed_out = True  # type: ignore[index]
                self._to_worker(conn)

    def reject(self, conn: Connection, exc: HTTPError) -> None:
        """Answer a request error ourselves, then close (lingering). Always rules see
        the client mod_remoteip believes once the head is parsed, as logs do."""
        self.log_error(exc, conn)
        conn.out = error_response(exc.status, close=True, extra=host_error_headers(
            conn.host_cfg, conn.tls, self.client_of(conn)[0]))
        conn.request = None
        conn.set_state(State.PROCESSING)  # leaves any read timeout queue
        self.start_write(conn, then_close=True)

    # -- write completion and lingering close ----------------------------------------

    def start_write(self, conn: Connection, then_close: bool) -> bool:
        """Listener or worker thread: finish writing ``conn.out`` and ``conn.spool``,
        then keep-alive or linger-close. The caller owns ``conn``; True means a
        pipelined request is ready and the caller must serve (worker) or dispatch
        (listener) it."""
        if not self._flush(conn):
            return False
        if conn.out or conn.spool:
            if then_close:
                conn.requests = -1
            conn.set_state(State.WRITE_COMPLETION)
            conn.read_deadline = time.monotonic() + conn.host_cfg.timeout
            self.writing.push(conn)
            self.arm(conn, WRITE)
            return False
        if then_close:
            self.linger(conn)
            return False
        return self.keepalive(conn)

    def _flush(self, conn: Connection) -> bool:
        """Send what the socket takes now; False if the connection was closed."""
        try:
            if conn.out:
                conn.out = conn.send_some(conn.out)
            if conn.spool is not None and not conn.out:
                if conn.spool.send_to(conn.sock):
                    conn.spool.close()
                    conn.spool = None
        except Exception:  # noqa: BLE001 - any send failure ends this connection
            self.close(conn)
            return False
        return True

    def _write_more(self, conn: Connection) -> None:
        if not self._flush(conn):
            return
        if conn.out or conn.spool:
            # Timeout bounds each wait for the client, not the whole download.
            conn.read_deadline = time.monotonic() + conn.host_cfg.timeout
            self.arm(conn, WRITE)
            return
        if conn.requests < 0:
            self.linger(conn)
        elif self.keepalive(conn):
            self.dispatch(conn)

    def keepalive(self, conn: Connection) -> bool:
        """Listener or worker thread (the owner): park an idle connection, or report
        (True) that a pipelined request is already complete in its buffer."""
        conn.request = None
        conn.body = None
        conn.client_addr = None  # the next request's client is believed anew
        conn.drop_body()
        # Stopping gracefully: the connection is parked as usual. The client may be
        # sending its next request on it right now (our response said keep-alive), so
        # it is answered (with Connection: close) if it comes soon, and closed by
        # _stop_step only once it has been idle for STOP_IDLE_GRACE.
        if conn.has_buffered_input():
            self.enter_read_head(conn)
            if not conn.inbuf:  # decrypted TLS bytes: the poller would never report them
                try:
                    conn.inbuf += conn.sock.recv(RECV_SIZE)
                except OSError:
                    self.close(conn)
                    return False
            return self.advance(conn)
        conn.set_state(KEEPALIVE)
        q = self.ka_qs.get(conn.host_cfg.keepalive_timeout)
        if q is None:
            q = self.ka_qs[self.config.main.keepalive_timeout]
        q.push(conn, time.monotonic())
        self.arm(conn, READ)
        return False

    def linger(self, conn: Connection) -> None:
        """Half-close and drain, so the client reads our response instead of a reset."""
        try:
            if isinstance(conn.sock, ssl.SSLSocket):
                raise OSError  # no half-close under TLS: close_notify is enough
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.set_state(State.LINGER)
        self.linger_q.push(conn, time.monotonic())
        self.arm(conn, READ)

    def _linger_read(self, conn: Connection) -> None:
        try:
            while conn.sock.recv(RECV_SIZE):
                pass
        except BlockingIOError:
            self.arm(conn, READ)
            return
        except OSError:
            pass
        self.close(conn)

    def close(self, conn: Connection) -> None:
        """Any thread that owns ``conn``: forget it, then close the socket (in that
        order, so the fd number cannot be reused while still in our table)."""
        if conn.state == State.CLOSED:
            return
        conn.set_state(State.CLOSED)
        self.conns.pop(conn.fd, None)
        try:
            conn.sock.close()
        except OSError:
            pass
        if conn.spool is not None:
            conn.spool.close()
            conn.spool = None
        conn.drop_body()
        if self.accept_paused or self.stopping:
            self.wake()

    # -- timeouts ------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        if self.upstreams:
            self._expire_upstreams(now)
        if self.queued is not None and self.queued.by_record:
            self.queued.expire(now)
        for conn in self.reading.expired(now):
            if conn.state == State.READ_BODY:
                self.reject(conn, HTTPError(408, "request body read timeout"))
            elif conn.state == State.READ_HEAD and (conn.reader.started or conn.inbuf):
                self.reject(conn, HTTPError(408, "request header read timeout"))
            elif conn.state == State.PROXY_HEADER:
                self.log.error("remoteip", "AH03507: RemoteIPProxyProtocol: no complete "
                               "PROXY header in time; closing the connection", conn.peer)
                self.close(conn)
            else:  # nothing of a request yet, or a TLS handshake: close without a word
                self.log.info("core", "AH01382: request read timeout before any byte",
                              conn.peer)
                self.close(conn)
        for q in self.ka_qs.values():
            for conn in q.expired(now):
                self.close(conn)
        for conn in self.writing.expired(now):
            self.log.info("core", "AH01084: timed out writing the response to the client",
                          conn.client)
            self.close(conn)
        for conn in self.linger_q.expired(now):
            self.close(conn)
        self.tunnels.expire(now)

    # -- stopping ------------------------------------------------------------------

    def stop(self, graceful: bool) -> None:
        """Main thread: ask the listener to stop (graceful: finish in-flight work)."""
        self.graceful = graceful
        self.stopping = True
        self.wake()

    def _stop_step(self) -> bool:
        """Returns True when the listener may exit.

        First stop accepting: the listening sockets leave the poller and this
        child's copies are closed (the arbiter and the new generation keep theirs,
        so connect() is never refused; queued connections wait in the shared
        backlog for a child that accepts). Ungraceful: done.

        Graceful: every connection is seen through. Requests that arrive on
        existing connections are still served (workers answer them with
        ``Connection: close``), responses are finished, lingering closes run their
        course, and idle keep-alive connections are closed once they have been idle
        for STOP_IDLE_GRACE: a client that reuses its connection at once gets an
        answer instead of a reset. The child exits when no connection is left."""
        if not self.listeners_closed:
            self.listeners_closed = True
            self.balance_until = 0.0
            self._set_accepting(False)
            for lsock, *_ in self.listeners:
                try:
                    lsock.close()
                except OSError:
                    pass
        if not self.graceful:
            return True
        now = time.monotonic()
        if not self.stop_began:
            self.stop_began = now
        for q in self.ka_qs.values():
            # parked before now - grace <=> deadline before now + timeout - grace
            for conn in q.expired(now + q.timeout - STOP_IDLE_GRACE):
                self._close_idle(conn)
        if now - self.stop_began >= STOP_IDLE_GRACE:
            # A client that connected and has sent nothing (not even all of its
            # PROXY header) is as idle as a parked one: it would hold the stop up
            # until its read timeout.
            for conn in [c for c in self.conns.values() if c.state in SILENT
                         and not c.reader.started and not c.inbuf]:
                self.close(conn)
        return not self.conns and self.outstanding() == 0

    def _close_idle(self, conn: Connection) -> None:
        """Graceful stop: close an idle keep-alive connection, unless its next
        request has just arrived, which is then served (the last one on it)."""
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self.close(conn)  # truly idle: the client sees EOF before its next request
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self.close(conn)
            return
        self.enter_read_head(conn)
        conn.inbuf += data
        conn.bytes_in += len(data)
        conn.extend_deadline()
        if self.advance(conn):
            self.dispatch(conn)
