"""A client connection and its states, named after httpd's event MPM.

Ownership: a connection is owned by exactly one thread at a time. The listener
owns it while it waits on the network (PROXY_HEADER, HANDSHAKE, READ_HEAD, READ_BODY,
KEEPALIVE, WRITE_COMPLETION, LINGER, TUNNEL) or for a backend slot (QUEUED); a
worker owns it from the moment it is taken off the worker queue until it hands it
back (PROCESSING). Ownership moves with
the hand-off itself (queue put, or epoll re-arm), so no field needs a lock. An
inline exchange (listener.py) is PROCESSING owned by the listener until it ends or
is queued for a worker.

The blocking helpers at the bottom are for the worker only: the socket stays
non-blocking (the listener's epoll needs that), and the worker waits with poll()
bounded by ``Timeout`` when the kernel buffer is full.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from enum import IntEnum

from proxympm.config.model import HostConfig, ReadStage
from proxympm.http.body import BodyDecoder
from proxympm.http.errors import ClientGone, ClientTimeout, HTTPError
from proxympm.http.request import Request, RequestReader
from proxympm.proxy.client_address import ClientAddress
from proxympm.proxy.header_rules import Applied, RuleEnv
from proxympm.proxy.spool import BodyFile, Spool


class State(IntEnum):
    HANDSHAKE = 1  # TLS handshake, driven by the listener
    READ_HEAD = 2  # waiting for (the rest of) a request head
    READ_BODY = 3  # buffering a small request body before dispatch
    PROCESSING = 4  # a worker has it
    WRITE_COMPLETION = 5  # response tail the worker could not write without blocking
    KEEPALIVE = 6  # idle between requests
    LINGER = 7  # after shutdown(SHUT_WR), draining until EOF or a short deadline
    CLOSED = 8
    TUNNEL = 9  # upgraded (101), or a streamed body: relayed by the listener (tunnel.py)
    PROXY_HEADER = 10  # waiting for a PROXY protocol header (RemoteIPProxyProtocol)
    QUEUED = 11  # a complete request waiting for a ``max`` slot, without a thread


class Connection:
    __slots__ = (
        "sock", "fd", "peer", "local", "tls", "state", "epoch", "inbuf", "reader",
        "request", "body", "body_parts", "out", "requests", "host_cfg", "sni_host",
        "bytes_in", "registered", "read_deadline", "stage_start", "stage_bytes", "stage",
        "spool", "body_file", "buffer_body", "inline", "queued_epoch",
        # per request, set by the worker: believed client address (mod_remoteip),
        # the Header rules that apply, and when the request started
        "client_addr", "rules", "started", "keep_proto",
        "pending_tls",  # the TLS context to use once a PROXY header has been read
        "parked",  # waiting in a ``max`` queue (balancer.Parked), or None
    )

    def __init__(self, sock: socket.socket, peer: tuple[str, int], local: tuple[str, int],
                 reader: RequestReader, host_cfg: HostConfig, tls: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.local = local
        self.tls = tls
        self.state = State.HANDSHAKE if tls else State.READ_HEAD
        self.epoch = 0  # bumped on every state change; stale timeout entries see it
        self.inbuf = bytearray()
        self.reader = reader
        self.request: Request | None = None
        self.body: BodyDecoder | None = None
        self.body_parts: list[bytes] = []  # request body read ahead by the listener
        self.out = b""  # pending output for WRITE_COMPLETION / error responses
        self.spool: Spool | None = None  # a proxied response tail, drained after ``out``
        self.body_file: BodyFile | None = None  # a buffered request body past memory
        self.buffer_body = True  # read the whole body before dispatch (route's switch)
        self.requests = 0  # requests served on this connection
        self.host_cfg = host_cfg  # the host that owns this listener address (or SNI)
        self.sni_host: HostConfig | None = None
        self.bytes_in = 0
        self.registered = False  # in the listener's poller yet (see Listener.arm)
        # The current RequestReadTimeout stage (listener-owned while reading).
        self.read_deadline = 0.0
        self.stage_start = 0.0
        self.stage_bytes = 0
        self.stage: ReadStage | None = None
        self.client_addr: ClientAddress | None = None  # None: the peer, nothing else
        self.rules: Applied | None = None
        self.started = 0.0
        self.keep_proto = False
        self.pending_tls: ssl.SSLContext | None = None
        self.queued_epoch = -1  # the epoch whose read deadline is in the listener's heap
        # An inline exchange in flight (Worker.start_inline): its flow and context.
        self.inline: tuple | None = None
        self.parked: object | None = None  # a balancer.Parked while QUEUED

    @property
    def client_ip(self) -> str:
        """The address the current request is believed to come from (mod_remoteip's
        useragent_ip): what %a logs and what address checks should use."""
        found = self.client_addr
        return found.ip if found is not None else self.peer[0]

    @property
    def client(self) -> tuple[str, int]:
        """``client_ip`` with its port: the client the error log names for what
        happens to the current request (a tunnel's or a stream's end included)."""
        found = self.client_addr
        return (found.ip, found.port) if found is not None else self.peer

    def rule_env(self) -> RuleEnv:
        return RuleEnv(self.tls, self.client_ip, self.started)

    def set_state(self, state: State) -> int:
        self.state = state
        self.epoch += 1
        return self.epoch

    # -- worker-side blocking helpers --------------------------------------------

    def send_all(self, data: bytes | memoryview, timeout: float) -> None:
        """Write everything, waiting (bounded) while the client's window is full."""
        view = memoryview(data)
        deadline = 0.0
        sock = self.sock
        while view:
            try:
                n = sock.send(view)
                view = view[n:]
                continue
            except (BlockingIOError, ssl.SSLWantWriteError):
                events = select.POLLOUT
            except ssl.SSLWantReadError:
                events = select.POLLIN
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            if not deadline:
                deadline = time.monotonic() + timeout
            self._wait(events, deadline)

    def send_some(self, data: bytes) -> bytes:
        """Write what the socket takes now; return the rest (for write completion)."""
        try:
            n = self.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return data
        except OSError as exc:
            raise ClientGone(str(exc)) from None
        return data[n:]

    def recv_more(self, timeout: float, size: int = 65536) -> bool:
        """Append bytes from the client to ``inbuf``; False on EOF."""
        deadline = 0.0
        while True:
            try:
                data = self.sock.recv(size)
            except (BlockingIOError, ssl.SSLWantReadError):
                events = select.POLLIN
            except ssl.SSLWantWriteError:
                events = select.POLLOUT
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            else:
                if not data:
                    return False
                self.inbuf += data
                self.bytes_in += len(data)
                return True
            if self.tls and isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                continue
            if not deadline:
                deadline = time.monotonic() + timeout
            self._wait(events, deadline)

    def recv_body(self, stage: ReadStage, timeout: float) -> bool:
        """Worker: ``recv_more`` for a request body being streamed upstream, bounded
        as httpd's mod_reqtimeout bounds every body read: by RequestReadTimeout's
        body ``stage`` (MinRate moves its deadline), continued from the listener if it
        began it; by ``timeout`` per read when the stage is off. HTTPError 408 when
        the deadline passes."""
        if not stage.timeout:
            return self.recv_more(timeout)
        if self.stage is not stage:  # dispatched before the body stage began
            self.start_stage(stage, time.monotonic())
        try:
            got = self.recv_more(max(0.001, self.read_deadline - time.monotonic()))
        except ClientTimeout:
            raise HTTPError(408, "request body read timeout") from None
        self.extend_deadline()
        return got

    def wait_writable(self, timeout: float) -> None:
        """Worker: block (bounded) until the client's window opens."""
        self._wait(select.POLLOUT, time.monotonic() + timeout)

    def _wait(self, events: int, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClientTimeout("timed out")
        poller = select.poll()
        poller.register(self.fd, events)
        if not poller.poll(left * 1000):
            raise ClientTimeout("timed out")

    def start_stage(self, stage: ReadStage, now: float) -> None:
        """Enter a mod_reqtimeout stage (head or body) as of ``now``."""
        self.stage = stage
        self.stage_start = now
        self.stage_bytes = self.bytes_in
        self.read_deadline = now + stage.timeout

    def extend_deadline(self) -> None:
        """MinRate: one more second per ``min_rate`` bytes, up to the stage's max."""
        stage = self.stage
        if stage is None or not stage.min_rate:
            return
        deadline = self.stage_start + stage.timeout + (
            self.bytes_in - self.stage_bytes) / stage.min_rate
        if stage.max:
            deadline = min(deadline, self.stage_start + stage.max)
        if deadline > self.read_deadline:
            self.read_deadline = deadline

    def keep_body(self, data: bytes, memory_limit: int) -> None:
        """Buffer request body bytes: memory up to ``memory_limit``, then a temp file
        that gets everything (what was in memory first). OSError if no temp file."""
        if self.body_file is None:
            if sum(map(len, self.body_parts)) + len(data) <= memory_limit:
                self.body_parts.append(data)
                return
            self.body_file = BodyFile()
            for part in self.body_parts:
                self.body_file.write(part)
            self.body_parts = []
        self.body_file.write(data)

    def drop_body(self) -> None:
        self.body_parts = []
        if self.body_file is not None:
            self.body_file.close()
            self.body_file = None

    def has_buffered_input(self) -> bool:
        """Bytes already here for a next (pipelined) request, parsed or decrypted."""
        if self.inbuf:
            return True
        return self.tls and isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
