"""One proxied request, upstream side: the state machine a worker thread runs.

Phases (named as nginx's upstream module names them): CONNECT (pooled or new),
SEND (request head and body), READ_HEAD (status line and fields, 1xx skipped),
RELAY (response body to the client), DONE (connection pooled or closed).

``classify`` below is the one place that maps a failure in a phase to what the
client sees and whether the request may be retried: every status decision about
upstream failures lives there.

Thread model: runs entirely in one worker thread; touches the client connection
(owned by that worker for the duration), the shared Pool (locked internally) and
the BackendState error flag (a float written whole, read without a lock).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Protocol

from proxympm.config.model import HostConfig, WorkerParams
from proxympm.http.body import BodyDecoder, LengthBody, NoBody
from proxympm.http.errors import HTTPError
from proxympm.http.request import Headers, Request
from proxympm.http.response import Response, read_response_head, response_body
from proxympm.http.serialize import HeaderInjection, serialize_head, status_line
from proxympm.proxy.headers import client_response_headers, upstream_request_head
from proxympm.proxy.pool import BackendState, Pool, Upstream
from proxympm.proxy.resolver import Resolver
from proxympm.proxy.routing import Target

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
RECV_SIZE = 65536


class ClientSide(Protocol):
    """What the exchange needs of the client connection (implemented by the MPM)."""

    inbuf: bytearray
    tls: bool

    def send_all(self, data: bytes | memoryview, timeout: float) -> None: ...
    def send_some(self, data: bytes) -> bytes: ...
    def recv_more(self, timeout: float, size: int = 65536) -> bool: ...


class ErrorLogger(Protocol):
    def error(self, module: str, message: str, client: tuple[str, int] | None = None) -> None: ...
    def warn(self, module: str, message: str, client: tuple[str, int] | None = None) -> None: ...
    def info(self, module: str, message: str, client: tuple[str, int] | None = None) -> None: ...


@dataclass(slots=True)
class Outcome:
    """What happened, for the access log and for the connection's next state."""

    status: int = 0
    body_bytes: int = 0
    bytes_out: int = 0
    backend: str | None = None
    headers: Headers = field(default_factory=list)
    error: int = 0  # a status proxympm must answer itself (nothing was sent yet)
    aborted: bool = False  # the client connection must be closed now
    client_keepalive: bool = True
    pending: bytes = b""  # response tail for the listener's write completion


class UpstreamFailure(Exception):
    """Raised inside a phase; ``classify`` turns it into a decision."""

    def __init__(self, phase: str, reason: str, *, timeout: bool = False,
                 refused: bool = False, before_response: bool = True) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason
        self.timeout = timeout
        self.refused = refused
        self.before_response = before_response


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # what the client gets (if nothing was sent yet)
    mark_failed: bool  # put the backend in error state for ``retry`` seconds
    retry_fresh: bool  # try once more on a fresh connection (reused conn, idempotent)


def classify(exc: UpstreamFailure, reused: bool, replayable: bool) -> Decision:
    """Upstream failure -> client status and retry decision (the only such table)."""
    if exc.phase == "connect":
        # mod_proxy: refused or connect timeout is 503 and the worker goes in error.
        return Decision(503, True, False)
    if exc.phase == "send":
        if reused and replayable:
            return Decision(502, False, True)
        return Decision(504 if exc.timeout else 502, False, False)
    if exc.phase == "read_head":
        if exc.timeout:
            return Decision(504, False, False)
        if exc.before_response and reused and replayable:
            return Decision(502, False, True)
        return Decision(502, False, False)
    return Decision(502, False, False)  # invalid response head


class Exchange:
    """Per-child upstream machinery shared by all workers."""

    __slots__ = ("pool", "resolver", "log", "server_name")

    def __init__(self, pool: Pool, resolver: Resolver, log: ErrorLogger,
                 server_name: bytes) -> None:
        self.pool = pool
        self.resolver = resolver
        self.log = log
        self.server_name = server_name

    # -- the request ---------------------------------------------------------------

    def forward(self, client: ClientSide, peer: tuple[str, int], req: Request,
                body: BodyDecoder, body_parts: list[bytes], host_cfg: HostConfig,
                target: Target, params: WorkerParams, upstream_path: bytes,
                client_keepalive: bool) -> Outcome:
        out = Outcome(backend=target.name, client_keepalive=client_keepalive)
        state = self.pool.backend(target)
        now = time.monotonic()
        if state.failed_until > now:
            self.log.error("proxy", f"AH00940: HTTP: disabled connection for ({target.name})",
                           peer)
            out.error = 503
            return out
        timeout = params.timeout or host_cfg.proxy_timeout or host_cfg.timeout
        buffered = body.done
        body_length = sum(map(len, body_parts)) if buffered else req.content_length
        replayable = buffered and req.method in IDEMPOTENT
        head = upstream_request_head(
            req, host_cfg, upstream_path, target.host_header, peer[0], client.tls,
            self.server_name, body_length if req.has_body else None,
        )
        attempts = 0
        while True:
            attempts += 1
            up: Upstream | None = None
            reused = False
            try:
                if not params.disablereuse:
                    up = self.pool.take_idle(state, params.ttl)
                reused = up is not None
                if up is None:
                    up = self._connect(target, params, timeout)
                self._send(up, head, client, body, body_parts, buffered, req, timeout)
                resp, up_buf = self._read_head(up, req, timeout)
            except UpstreamFailure as exc:
                if up is not None:
                    up.sock.close()
                decision = classify(exc, reused, replayable)
                if decision.retry_fresh and attempts == 1:
                    self.log.info("proxy", f"reused connection to {target.name} failed "
                                  f"({exc.reason}); retrying on a fresh one", peer)
                    continue
                self._log_failure(exc, target, params, peer)
                if decision.mark_failed and params.retry > 0:
                    state.failed_until = time.monotonic() + params.retry
                    self.log.error("proxy", f"AH00959: ap_proxy_connect_backend disabling "
                                   f"worker for ({target.name}) for {params.retry:g}s", peer)
                out.error = decision.status
                return out
            except HTTPError as exc:  # invalid response head
                up.sock.close()
                self.log.error("proxy", f"AH01102: invalid response from {target.name}: "
                               f"{exc.detail}", peer)
                out.error = 502
                return out
            break
        self._relay(up, state, resp, up_buf, client, req, host_cfg, params, timeout, out)
        return out

    # -- phases --------------------------------------------------------------------

    def _connect(self, target: Target, params: WorkerParams, timeout: float) -> Upstream:
        ctimeout = params.connectiontimeout or timeout
        addrs = self.resolver.addresses(target.host, target.port)
        if not addrs:
            raise UpstreamFailure("connect", f"DNS lookup failure for {target.host}")
        last = "no address"
        for family, addr in addrs:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(ctimeout)
            try:
                sock.connect(addr)
            except TimeoutError:
                sock.close()
                last = "connect timed out"
                continue
            except OSError as exc:
                sock.close()
                last = exc.strerror or str(exc)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if params.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.settimeout(timeout)
            return Upstream(sock, target)
        raise UpstreamFailure("connect", last, refused=True)

    def _send(self, up: Upstream, head: bytes, client: ClientSide, body: BodyDecoder,
              body_parts: list[bytes], buffered: bool, req: Request, timeout: float) -> None:
        sock = up.sock
        try:
            if buffered:
                sock.sendall(head + b"".join(body_parts) if body_parts else head)
                return
            # Streaming a large body: read from the client as it comes.
            chunked = req.content_length is None
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(_chunk(part) if chunked else part)
            body_parts.clear()
            while not body.done:
                if not client.inbuf and not client.recv_more(timeout):
                    body.eof()
                data = body.feed(client.inbuf)
                if data:
                    sock.sendall(_chunk(data) if chunked else data)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except TimeoutError:
            raise UpstreamFailure("send", "timed out sending the request", timeout=True) from None
        except OSError as exc:
            raise UpstreamFailure("send", exc.strerror or str(exc)) from None

    def _read_head(self, up: Upstream, req: Request,
                   timeout: float) -> tuple[Response, bytearray]:
        buf = bytearray()
        sock = up.sock
        while True:
            resp = read_response_head(buf)
            if resp is not None:
                if 100 <= resp.status < 200:
                    continue  # interim responses are consumed here (we answered 100 ourselves)
                return resp, buf
            try:
                data = sock.recv(RECV_SIZE)
            except TimeoutError:
                raise UpstreamFailure("read_head", "timed out reading the response head",
                                      timeout=True) from None
            except OSError as exc:
                raise UpstreamFailure("read_head", exc.strerror or str(exc),
                                      before_response=not buf) from None
            if not data:
                raise UpstreamFailure("read_head", "upstream closed before the response head",
                                      before_response=not buf)
            buf += data

    def _relay(self, up: Upstream, state: BackendState, resp: Response, buf: bytearray,
               client: ClientSide, req: Request, host_cfg: HostConfig, params: WorkerParams,
               timeout: float, out: Outcome) -> None:
        decoder = response_body(resp, req.method)
        out.status = resp.status
        sized = isinstance(decoder, (LengthBody, NoBody))
        if req.version != b"1.1" and not sized:
            out.client_keepalive = False  # close-delimited for an HTTP/1.0 client
        rechunk = req.version == b"1.1" and not sized
        headers = client_response_headers(
            resp, host_cfg, host_cfg.reverse_rules, self._client_base(client, req), self.server_name
        )
        head_cl = req.method == b"HEAD" and resp.content_length is not None
        if isinstance(decoder, LengthBody) or head_cl:
            headers.append((b"Content-Length", b"%d" % (resp.content_length or 0)))
        elif rechunk:
            headers.append((b"Transfer-Encoding", b"chunked"))
        if not out.client_keepalive:
            headers.append((b"Connection", b"close"))
        out.headers = headers
        try:
            head = serialize_head(status_line(resp.status, resp.reason or None), headers)
        except HeaderInjection as exc:
            up.sock.close()
            self.log.error("proxy", f"AH01102: invalid header from {up.target.name}: {exc}")
            out.error = 502
            out.status = 0
            return
        pending = head
        sent_any = False
        try:
            while True:
                try:
                    data = decoder.feed(buf)
                except HTTPError as exc:
                    raise UpstreamFailure("relay", exc.detail) from None
                if data:
                    out.body_bytes += len(data)
                    pending += _chunk(data) if rechunk else data
                if decoder.done:
                    break
                if len(pending) >= RECV_SIZE or (pending and sent_any):
                    client.send_all(pending, host_cfg.timeout)
                    out.bytes_out += len(pending)
                    sent_any = True
                    pending = b""
                try:
                    chunk = up.sock.recv(RECV_SIZE)
                except TimeoutError:
                    raise UpstreamFailure("relay", "timed out reading the response body") from None
                except OSError as exc:
                    raise UpstreamFailure("relay", exc.strerror or str(exc)) from None
                if not chunk:
                    try:
                        decoder.eof()
                    except HTTPError as exc:
                        raise UpstreamFailure("relay", exc.detail) from None
                    continue
                buf += chunk
        except UpstreamFailure as exc:
            up.sock.close()
            self.log.error("proxy", f"AH01110: error reading the response body from "
                           f"{up.target.name}: {exc.reason}")
            if pending:
                try:
                    client.send_all(pending, host_cfg.timeout)
                except Exception:  # noqa: BLE001 - the connection is aborted anyway
                    pass
            out.aborted = True
            return
        except BaseException:
            up.sock.close()  # client went away mid-relay: the upstream is not reusable
            raise
        if rechunk:
            pending += b"0\r\n\r\n"
        reusable = resp.keep_alive and not buf and not params.disablereuse
        if reusable:
            self.pool.release(state, up)
        else:
            up.sock.close()
        rest = client.send_some(pending) if pending else b""
        out.bytes_out += len(pending) - len(rest)
        out.pending = rest

    def _client_base(self, client: ClientSide, req: Request) -> bytes:
        scheme = b"https://" if client.tls else b"http://"
        return scheme + (req.host or self.server_name)

    def _log_failure(self, exc: UpstreamFailure, target: Target, params: WorkerParams,
                     peer: tuple[str, int]) -> None:
        if exc.phase == "connect":
            self.log.error("proxy", f"AH01114: HTTP: failed to make connection to backend: "
                           f"{target.name} ({exc.reason})", peer)
        elif exc.timeout:
            self.log.error("proxy", f"AH01102: timeout reading status line from {target.name}",
                           peer)
        else:
            self.log.error("proxy", f"AH01102: error reading status line from {target.name}: "
                           f"{exc.reason}", peer)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
