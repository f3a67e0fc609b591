"""One proxied request, upstream side: the state machine a worker thread runs.

Phases (named as nginx's upstream module names them): CONNECT (pooled or new, to
the address the backend name's rotation puts first: ``resolver.AddressSet``),
SEND (request head and body; an upstream that answers early is relayed while we
send), READ_HEAD (status line and fields, 1xx skipped), RELAY (response body to
the client, in relay.py), DONE (connection pooled or closed).

``classify`` below is the one place that maps a failure in a phase to what the
client sees and whether the request may be retried: every status decision about
upstream failures lives there.

A ``balancer://`` route (``_balanced``) picks a member per attempt from
``proxympm.proxy.balancer`` (its sticky-session member if the request names one;
maybe waiting in the server-wide ``max`` queue: with ``may_park`` the wait is not
here but in the listener, see ``Outcome.parked``), runs one attempt on it, and goes
to another member only when the failed attempt was safe to repeat (``_attempt``'s
second result): nothing sent, or nothing answered to a replayable request. A plain
route with ``max`` (``_capped``) waits the same way for a slot of its one backend.
Every attempt on a member reports its bytes and time to the response head back
(``release``), for bytraffic and peakewma.

Thread model: runs entirely in one worker thread; touches the client connection
(owned by that worker for the duration), the shared Pool (locked internally),
the BackendState error flag (a float written whole, read without a lock), the
balancers and the resolver's address sets (both locked internally).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from proxympm.config.model import HostConfig, ReadStage, WorkerParams
from proxympm.http.body import BodyDecoder
from proxympm.http.errors import HTTPError
from proxympm.http.proxy_protocol import build_v1, build_v2
from proxympm.http.request import Headers, Request
from proxympm.http.response import Response, read_response_head
from proxympm.http.serialize import HeaderInjection, error_response
from proxympm.proxy import upstream
from proxympm.proxy.backend_table import AddressMarks
from proxympm.proxy.balancer import Balancer, Member, Parked, Verdict, session_route
from proxympm.proxy.header_rules import error_headers
from proxympm.proxy.headers import upstream_request_head
from proxympm.proxy.metrics import BackendStats
from proxympm.proxy.pool import BackendState, Pool, Upstream
from proxympm.proxy.relay import RelayError, ResponseRelay, StreamSpec, client_head
from proxympm.proxy.resolver import AddressSet, Endpoint, Resolver
from proxympm.proxy.routing import Target, strip_port
from proxympm.proxy.spool import BodyFile, Spool
from proxympm.proxy.upgrade import (
    TunnelSpec,
    idle_timeout,
    switched_head,
    wanted_upgrade,
    with_upgrade,
)
from proxympm.tls import ClientContexts

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
RECV_SIZE = 65536
INLINE_DONE, INLINE_WAIT, INLINE_HANDOFF = 0, 1, 2
INLINE_SPOOL = 128 * 1024  # an inline response spooling more than this goes to a worker
ROUND_BYTES = 16 * 1024  # an inline response up to this size is sent after its round
# The listener's receive buffer for inline exchanges (one thread uses it): a 64 KiB
# response and its head arrive in one recv, and no bytes object is allocated per recv.
_SCRATCH = memoryview(bytearray(256 * 1024))


class ClientSide(Protocol):
    """What the exchange needs of the client connection (implemented by the MPM)."""

    inbuf: bytearray
    tls: bool
    sock: socket.socket

    def send_all(self, data: bytes | memoryview, timeout: float) -> None: ...
    def send_some(self, data: bytes) -> bytes: ...
    def recv_more(self, timeout: float, size: int = 65536) -> bool: ...
    def recv_body(self, stage: ReadStage, timeout: float) -> bool: ...
    def wait_writable(self, timeout: float) -> None: ...


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
    spool: Spool | None = None  # response tail for the listener's write completion
    unsent: bytes = b""  # the whole response, not sent yet (inline: sent in a batch)
    tunnel: TunnelSpec | None = None  # switched protocols: the worker hands it over
    stream: StreamSpec | None = None  # a streaming body the listener relays from here
    reused: bool = False  # the (last) upstream connection came from the pool
    head_after: float | None = None  # seconds from the attempt's start to the response head
    # The request waits in a ``max`` queue: nothing was sent, the caller hands the
    # connection to the listener and calls ``forward`` again with this token.
    parked: Parked | None = None


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
    if exc.phase == "resolve":
        # The name has no address (yet): unavailable, but not the backend's fault;
        # the DNS thread keeps trying, so the backend is not put in error state.
        return Decision(503, False, False)
    if exc.phase == "connect":
        # mod_proxy: refused or connect timeout is 503 and the worker goes in error.
        return Decision(503, True, False)
    if exc.phase == "tls":
        # A handshake or verification failure is a misconfiguration, not an outage:
        # 502 (mod_ssl's answer for a failed peer check), backend not put in error.
        return Decision(502, False, False)
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

    __slots__ = ("pool", "resolver", "log", "server_name", "tls", "stats")

    def __init__(self, pool: Pool, resolver: Resolver, log: ErrorLogger,
                 server_name: bytes, tls: ClientContexts,
                 stats: BackendStats | None = None) -> None:
        self.pool = pool
        self.resolver = resolver
        self.log = log
        self.server_name = server_name
        self.tls = tls
        self.stats = stats  # per-backend counters (server-status, metrics)

    def bind_thread(self, index: int) -> None:
        """Worker thread, once: its own per-backend counters."""
        if self.stats is not None:
            self.stats.bind(index)

    # -- the request ---------------------------------------------------------------

    def forward(self, client: ClientSide, peer: tuple[str, int], req: Request,
                body: BodyDecoder, body_parts: list[bytes], body_file: BodyFile | None,
                host_cfg: HostConfig,
                target: Target, params: WorkerParams, upstream_path: bytes,
                client_keepalive: bool, resume: _Flow | None = None,
                parked: Parked | None = None, may_park: bool = False) -> Outcome:
        """One proxied request. ``resume``: an inline exchange the listener began
        (``start_inline``) and could not finish without blocking; continue it.
        ``may_park``: a wait in a ``max`` queue returns ``Outcome(parked=token)``
        instead of blocking; ``parked``: that token, its wait over (``result``)."""
        if target.balancer is not None:
            return self._balanced(client, peer, req, body, body_parts, body_file, host_cfg,
                                  target.balancer, params, upstream_path, client_keepalive,
                                  parked, may_park)
        if target.capped is not None:
            return self._capped(client, peer, req, body, body_parts, body_file, host_cfg,
                                target, params, upstream_path, client_keepalive,
                                parked, may_park)
        return self._attempt(client, peer, req, body, body_parts, body_file, host_cfg,
                             target, params, upstream_path, client_keepalive,
                             resume=resume)[0]

    def _capped(self, client: ClientSide, peer: tuple[str, int], req: Request,
                body: BodyDecoder, body_parts: list[bytes], body_file: BodyFile | None,
                host_cfg: HostConfig, target: Target, params: WorkerParams,
                upstream_path: bytes, client_keepalive: bool, parked: Parked | None = None,
                may_park: bool = False) -> Outcome:
        """A plain ProxyPass with ``max=N``: wait (FIFO, server-wide) for one of its N
        slots, up to ``acquire`` (default: the worker's timeout); then 503."""
        group = target.capped
        assert group is not None
        wait = params.acquire or params.timeout or host_cfg.proxy_timeout or host_cfg.timeout
        got: Member | Verdict | Parked | None
        if parked is not None:
            got = parked.result
            assert got is not None
        else:
            got = group.acquire(0, time.monotonic() + wait, _client_gone_probe(client),
                                park=may_park)
            if isinstance(got, Parked):
                got.wait = wait
                return Outcome(parked=got)
        if isinstance(got, Verdict):
            if got.reason == "busy":
                self.log.error("proxy", f"AH00940: {target.name}: no free slot (max="
                               f"{params.max}) within {wait:g}s", peer)
            else:
                self.log.error("proxy", f"AH00940: HTTP: disabled connection for "
                               f"({target.name})", peer)
            verdict = Verdict(got.reason, max(1, round(wait)) if got.reason == "busy"
                              else got.retry_after)
            return self._unavailable(client, req, body, target.name, verdict)
        out = Outcome()
        try:
            out = self._attempt(client, peer, req, body, body_parts, body_file, host_cfg,
                                target, params, upstream_path, client_keepalive)[0]
        finally:
            group.release(got, *_traffic(req, body_file, body_parts, out))
        return out

    def _balanced(self, client: ClientSide, peer: tuple[str, int], req: Request,
                  body: BodyDecoder, body_parts: list[bytes], body_file: BodyFile | None,
                  host_cfg: HostConfig, balancer: Balancer, route_params: WorkerParams,
                  upstream_path: bytes, client_keepalive: bool, parked: Parked | None = None,
                  may_park: bool = False) -> Outcome:
        """One request through a balancer: pick a member (maybe after queueing),
        forward, and on a failure that is safe to repeat, go to another member.
        A failover may queue (and park) too: its deadline is the first one's."""
        settings = balancer.settings
        got: Member | Verdict | Parked | None = None
        if parked is not None:  # back from the listener: the wait is over
            deadline, excluded, failed, tries = (parked.deadline, parked.excluded,
                                                 parked.failed, parked.tries)
            got = parked.result
            assert got is not None
        else:
            deadline = time.monotonic() + settings.timeout
            excluded = failed = 0  # bitmasks of members: not to use now / that failed
            tries = 0
        if parked is None and settings.stickysession:
            route = session_route(settings, req.target,
                                  [v for n, (_, v) in zip(req.lnames, req.headers, strict=True)
                                   if n == b"cookie"])
            excluded, refused = balancer.sticky(route)
            if refused is not None:
                self.log.error("proxy", f"AH01167: {balancer.name}: the member of route "
                               f"{route} is unusable and nofailover is On", peer)
                return self._unavailable(client, req, body, balancer.name, refused)
        gone = _client_gone_probe(client)
        while True:
            if got is None:
                got = balancer.acquire(excluded, deadline, gone, park=may_park)
            if isinstance(got, Parked):
                got.failed, got.tries = failed, tries
                return Outcome(parked=got)
            if isinstance(got, Verdict):
                if got.reason == "down":
                    self.log.error("proxy", f"AH01170: {balancer.name}: All workers are in "
                                   "error state", peer)
                else:
                    self.log.error("proxy", f"AH00940: {balancer.name}: no member free within "
                                   f"the balancer timeout ({settings.timeout:g}s)", peer)
                return self._unavailable(client, req, body, balancer.name, got)
            member = got
            tries += 1
            out = Outcome()
            try:
                out, may_fail_over = self._attempt(
                    client, peer, req, body, body_parts, body_file, host_cfg, member.target,
                    member.params, member.upstream_path(upstream_path), client_keepalive,
                    member=member, balancer=balancer, buffering=route_params.response_buffering,
                    upgrade=route_params.upgrade)
            finally:
                balancer.release(member, *_traffic(req, body_file, body_parts, out))
            if not out.error and out.status in settings.failonstatus:
                if balancer.mark_failed(member):
                    self.log.error("proxy", f"AH01110: {balancer.name}: forcing worker "
                                   f"({member.name}) into error state due to status code "
                                   f"{out.status} matching 'failonstatus'", peer)
            if out.error and may_fail_over and tries <= balancer.maxattempts:
                failed |= member.bit
                excluded = failed  # a sticky session fails over like any request
                self.log.info("proxy", f"{balancer.name}: {member.name} failed; trying "
                              "another member", peer)
                got = None
                continue
            if out.error == 503:
                verdict = balancer.state(excluded)
                if verdict is not None:
                    return self._unavailable(client, req, body, balancer.name, verdict)
            return out

    def _unavailable(self, client: ClientSide, req: Request, body: BodyDecoder, backend: str,
                     verdict: Verdict) -> Outcome:
        """503 with Retry-After, written by us (the worker's error path has no
        extra headers); the connection closes, as after any 503 (httpd)."""
        head_only = req.method == b"HEAD"
        extra = [(b"Retry-After", b"%d" % verdict.retry_after)]
        rules = getattr(client, "rules", None)
        if rules is not None and rules.always:
            extra += error_headers(rules.always, client.rule_env(), req.headers)
        data = error_response(503, close=True, extra=extra, head_only=head_only)
        head = data if head_only else error_response(503, close=True, extra=extra,
                                                     head_only=True)
        # (logged in the access log with the backend's name)
        spool = Spool()
        spool.append(data)
        return Outcome(status=503, body_bytes=len(data) - len(head), bytes_out=len(data),
                       backend=backend, client_keepalive=False, spool=spool, headers=extra)

    def _attempt(self, client: ClientSide, peer: tuple[str, int], req: Request,
                 body: BodyDecoder, body_parts: list[bytes], body_file: BodyFile | None,
                 host_cfg: HostConfig, target: Target, params: WorkerParams,
                 upstream_path: bytes, client_keepalive: bool, member: Member | None = None,
                 balancer: Balancer | None = None,
                 buffering: bool | None = None,
                 upgrade: str | None = None,
                 resume: _Flow | None = None) -> tuple[Outcome, bool]:
        """``_attempt_on``, counted per backend (requests, errors, latency)."""
        stats = self.stats
        row = stats.begin(target, balancer.name if balancer is not None else None) \
            if stats is not None else None
        if row is None:
            return self._attempt_on(client, peer, req, body, body_parts, body_file, host_cfg,
                                    target, params, upstream_path, client_keepalive, member,
                                    balancer, buffering, upgrade, resume)
        started = time.monotonic()
        try:
            result = self._attempt_on(client, peer, req, body, body_parts, body_file,
                                      host_cfg, target, params, upstream_path,
                                      client_keepalive, member, balancer, buffering, upgrade,
                                      resume)
        except BaseException:
            BackendStats.end(row, started, 0, False, False)  # the client went away
            raise
        out = result[0]
        BackendStats.end(row, started, out.status if not out.error else 0,
                         bool(out.error or out.aborted), out.reused)
        return result

    def _attempt_on(self, client: ClientSide, peer: tuple[str, int], req: Request,
                    body: BodyDecoder, body_parts: list[bytes], body_file: BodyFile | None,
                    host_cfg: HostConfig, target: Target, params: WorkerParams,
                    upstream_path: bytes, client_keepalive: bool,
                    member: Member | None = None, balancer: Balancer | None = None,
                    buffering: bool | None = None,
                    upgrade: str | None = None,
                    resume: _Flow | None = None) -> tuple[Outcome, bool]:
        """One request on one backend. Returns the outcome and, if it failed, whether
        nothing the backend could have acted on was sent (so another member may be
        tried: a connect failure for any method; a failure before the response for a
        replayable request)."""
        out = Outcome(backend=target.name, client_keepalive=client_keepalive)
        if buffering is None:
            buffering = params.response_buffering
        ctx: ssl.SSLContext | None = None
        sni = ""
        if target.scheme == "https":
            ctx = self.tls.for_host(host_cfg)
            # mod_proxy: SNI is the client's Host under ProxyPreserveHost, else the
            # backend's name; a pooled TLS connection only serves the same identity.
            sni = (strip_port(req.host).decode("ascii", "replace")
                   if host_cfg.preserve_host and req.host else target.origin_host)
        state = self.pool.backend(target, f"{sni}|{id(ctx)}" if ctx is not None else "")
        addrs = self.resolver.address_set(target.host, target.port, target.srv)
        errors = target.errors
        if errors is not None and errors.w[errors.i] > time.monotonic() * 1e6:
            # in error state server-wide (another child may have found it so)
            self.log.error("proxy", f"AH00940: HTTP: disabled connection for ({target.name})",
                           peer)
            if resume is not None and resume.up is not None:
                resume.up.sock.close()
            out.error = 503
            return out, False
        timeout = params.timeout or host_cfg.proxy_timeout or host_cfg.timeout
        buffered = body.done
        if not buffered:
            body_length = req.content_length
        elif body_file is not None:
            body_length = body_file.size
        else:
            body_length = sum(map(len, body_parts))
        replayable = buffered and req.method in IDEMPOTENT
        try:
            head = upstream_request_head(
                req, host_cfg, upstream_path, target.host_header, peer[0], client.tls,
                self.server_name, body_length if req.has_body else None,
                getattr(client, "client_addr", None), getattr(client, "keep_proto", False),
            )
        except HeaderInjection as exc:  # a config value that would split the request
            self.log.error("proxy", f"AH01144: refusing to send a request to "
                           f"{target.name}: {exc}", peer)
            out.error = 500
            return out, False
        switch = wanted_upgrade(req, params.upgrade if upgrade is None else upgrade,
                                target.websocket)
        if switch is not None:
            head = with_upgrade(head, switch)
        # A PROXY header binds the upstream connection to this client: never pooled.
        proxy_header = _proxy_header(params.proxyprotocol, client, peer)
        # this worker's addresses that another request (in any child) found refusing,
        # and those its health checks took out (never tried, unless all of them are)
        marks = member.marks if member is not None else (
            target.errors.marks if target.errors is not None else None)
        skip = member.marks.skipped() if member is not None and member.hc else None
        attempts = 0
        started = time.monotonic()
        after_refusal: Sequence[Endpoint] | None = None  # see _refused_after_header
        while True:
            attempts += 1
            up: Upstream | None = None
            reused = False
            first, after_refusal = after_refusal, None
            order: Sequence[Endpoint] = ()
            if resume is not None:  # begun by the listener (sent, if it has ``up``)
                flow, resume = resume, None
                up = flow.up
                reused = out.reused = up is not None
                first = flow.order  # the address the round robin gave it: keep it
            else:
                flow = _Flow(self, client, req, host_cfg, client_keepalive, buffering, addrs)
                flow.upgrade = switch
            try:
                if up is None:
                    # this request's address first, then fallbacks
                    if first is not None:
                        order = first
                    else:
                        order = addrs.order(skip, marks.down() if marks is not None
                                            and len(addrs.endpoints) > 1 else None)
                    if order and not params.disablereuse and proxy_header is None:
                        up = self.pool.take_idle(state, params.ttl, order[0].sockaddr)
                    reused = out.reused = up is not None
                    if up is None:
                        up = self._connect(target, params, timeout, ctx, sni, order, marks,
                                           proxy_header)
                    flow.attach(up)
                    flow.send(head, body, body_parts, body_file, buffered, timeout)
                else:
                    flow.resume(timeout)
                if flow.relay is None:
                    flow.read_head(timeout)
                if flow.switched is not None:
                    flow.switch(out, idle_timeout(host_cfg, timeout))
                    return out, False
            except UpstreamFailure as exc:
                if up is not None:
                    up.sock.close()
                refused = (proxy_header is not None and up is not None
                           and exc.phase in ("send", "read_head") and exc.before_response
                           and not exc.timeout)
                if refused:
                    assert up is not None
                    left = self._refused_after_header(up, order, params, marks)
                    if replayable:
                        if left:
                            self.log.error("proxy", f"AH01114: HTTP: failed to make "
                                           f"connection to backend: {target.name} "
                                           f"({exc.reason} after the PROXY header); trying "
                                           "the next address", peer)
                            after_refusal = left
                            continue
                        exc = UpstreamFailure("connect", f"{exc.reason} after the PROXY "
                                              "header", refused=True)
                decision = classify(exc, reused, replayable)
                if decision.retry_fresh and attempts == 1:
                    self.log.info("proxy", f"reused connection to {target.name} failed "
                                  f"({exc.reason}); retrying on a fresh one", peer)
                    continue
                self._log_failure(exc, target, peer)
                mark = decision.mark_failed or refused or (
                    balancer is not None and balancer.settings.failontimeout
                    and exc.timeout and exc.phase == "read_head")
                if mark and params.retry > 0:
                    if member is None and target.capped is not None:
                        # its cap's record: the queue learns it is down
                        marked = target.capped.mark_failed(target.capped.members[0])
                    elif member is None:
                        if errors is not None:
                            errors.fail(params.retry)
                        marked = True
                    else:
                        assert balancer is not None
                        marked = balancer.mark_failed(member)
                    if marked:
                        self.log.error("proxy", f"AH00959: ap_proxy_connect_backend "
                                       f"disabling worker for ({target.name}) for "
                                       f"{params.retry:g}s", peer)
                out.error = decision.status
                # nothing sent (connect/TLS), or nothing answered to a replayable request
                safe = exc.phase in ("resolve", "connect", "tls") or (
                    replayable and exc.phase in ("send", "read_head") and exc.before_response)
                return out, safe
            except ClientBodyError as exc:
                if up is not None:
                    up.sock.close()
                self.log.info("proxy", f"client request body broken: {exc.detail}", peer)
                if flow.relay is not None and flow.relay.sent_any:
                    # the upstream's early answer is on the wire already: it cannot
                    # become ours, the connection is cut (httpd: once sent, it stays)
                    flow.relay.salvage()
                    flow._fill(out)
                    out.aborted = True
                    return out, False
                out.error = exc.status
                return out, False
            except (HTTPError, HeaderInjection) as exc:  # invalid response head
                if up is not None:
                    up.sock.close()
                detail = exc.detail if isinstance(exc, HTTPError) else str(exc)
                self.log.error("proxy", f"AH01102: invalid response from {target.name}: "
                               f"{detail}", peer)
                out.error = 502
                return out, False
            except RelayError as exc:
                flow.abort(out, f"AH01110: error reading the response body from "
                           f"{target.name}: {exc}")
                return out, False
            except BaseException:
                if up is not None:
                    up.sock.close()  # e.g. the client went away: never pool a half exchange
                raise
            break
        out.head_after = time.monotonic() - started
        flow.finish(state, params, timeout, out)
        return out, False

    # -- inline exchanges (listener thread) -------------------------------------------
    #
    # A small request on a plain-HTTP route, whose body (if any) is already buffered,
    # needs no thread: the listener sends it on a pooled upstream connection, waits for
    # the answer on its own poller, and relays it without blocking. Each step gives up
    # (the connection goes to a worker, which continues the same flow with the blocking
    # code above) as soon as it would have to wait on anything but that one upstream
    # socket: no pooled connection (connect), a partial send, a response that would fill
    # the spool, a timeout, EOF or an error (the worker sees the same socket state and
    # classifies it as it always does).

    def inline_plan(self, target: Target | None, params: WorkerParams) -> InlinePlan | None:
        """What inline exchanges to ``target`` need, looked up once per route (the
        listener keeps it); None: a request there is never an inline exchange (not
        a balancer's or a capped backend's either: their shared slots are taken and
        given back around the exchange, by the worker)."""
        if (target is None or target.balancer is not None or target.capped is not None
                or target.scheme != "http" or not params.response_buffering
                or params.disablereuse or params.proxyprotocol):
            return None
        return InlinePlan(target, params, self.pool.backend(target),
                          self.resolver.address_set(target.host, target.port, target.srv),
                          target.host_header)

    def start_inline(self, client: ClientSide, peer: tuple[str, int], req: Request,
                     body_parts: list[bytes], host_cfg: HostConfig, plan: InlinePlan,
                     upstream_path: bytes, client_keepalive: bool) -> _Flow | None:
        """Listener thread, for a request with its body (if any) buffered, to a route
        with a ``plan``: take a pooled connection and make the request's bytes
        (``unsent``), for ``send_inline``. None: nothing done. A flow without ``up``
        (nothing to send; its ``order`` keeps the address picked for it) must go to
        a worker."""
        target, params, state, addrs = plan.target, plan.params, plan.state, plan.addrs
        errors = target.errors
        now = time.monotonic()
        if errors is not None and errors.w[errors.i] > now * 1e6:
            return None  # the worker logs and answers 503
        order = addrs.order(None, errors.marks.down() if errors is not None
                            and len(addrs.endpoints) > 1 else None)
        if not order:
            return None
        flow = _Flow(self, client, req, host_cfg, client_keepalive, True, addrs)
        flow.order = order
        flow.started = now
        # the listener's watched connections first: no EOF check needed (pool.py)
        up = (self.pool.take_watched(state, params.ttl, order[0].sockaddr)
              or self.pool.take_idle(state, params.ttl, order[0].sockaddr))
        if up is None:
            return flow
        try:
            head = upstream_request_head(
                req, host_cfg, upstream_path, plan.host_header, peer[0], client.tls,
                self.server_name, sum(map(len, body_parts)) if req.has_body else None,
                getattr(client, "client_addr", None), getattr(client, "keep_proto", False),
            )
        except HeaderInjection:
            self.pool.put_back(state, up)
            return flow  # the worker refuses it and logs why
        flow.attach(up)
        flow.state = state
        flow.params = params
        flow.timeout = params.timeout or host_cfg.proxy_timeout or host_cfg.timeout
        flow.unsent = head + b"".join(body_parts) if body_parts else head
        return flow

    def send_inline(self, flow: _Flow, peer: tuple[str, int]) -> None:
        """Listener thread: send what ``start_inline`` prepared (``unsent``) without
        blocking. Then ``up`` is None (the pooled connection was stale and is closed:
        a worker starts afresh), or ``unsent`` holds what the socket did not take (a
        worker sends it), or the request is out: wait for the answer."""
        up = flow.up
        data = flow.unsent
        assert up is not None
        try:
            n = up.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:  # a stale pooled connection: the worker starts afresh
            up.sock.close()
            flow.up = None
            flow.unsent = b""
            self.log.info("proxy", f"reused connection to {up.target.name} failed "
                          f"({exc.strerror or exc}); retrying on a fresh one", peer)
            return
        if n < len(data):
            flow.unsent = data[n:]
        else:
            flow.unsent = b""
            flow.upload_complete = True

    def pump_inline(self, flow: _Flow) -> int:
        """Listener thread: take what the upstream has sent and relay it. Returns
        INLINE_DONE (call ``finish_inline``), INLINE_WAIT (wait for the socket to be
        readable again) or INLINE_HANDOFF (a worker must continue). ClientGone
        propagates (the client went away; the upstream socket is closed)."""
        up = flow.up
        assert up is not None
        sock = up.sock
        scratch = _SCRATCH
        try:
            while True:
                relay = flow.relay
                if relay is not None and len(relay.spool) >= INLINE_SPOOL:
                    return INLINE_HANDOFF  # a big response: a worker streams it
                try:
                    n = sock.recv_into(scratch)
                except BlockingIOError:
                    return INLINE_WAIT
                except OSError:
                    return INLINE_HANDOFF
                if not n:
                    return INLINE_HANDOFF
                flow.buf += scratch[:n]
                if relay is None:
                    try:
                        resp = flow._final_head()
                        if resp is None:
                            continue
                        if flow.whole(resp):
                            return INLINE_DONE  # finish_inline relays it in one piece
                        flow._relay(resp)
                    except (HTTPError, HeaderInjection):
                        return INLINE_HANDOFF  # the worker parses it again and answers 502
                    relay = flow.relay
                    assert relay is not None
                try:
                    relay.pump(flow.buf)
                except RelayError as exc:
                    flow.failed = exc
                    return INLINE_HANDOFF
                if relay.done:
                    return INLINE_DONE
        except BaseException:
            sock.close()  # never pool a half exchange
            raise

    def finish_inline(self, flow: _Flow) -> Outcome:
        """Listener thread: the response is complete; pool the upstream connection and
        hand what the client has not taken yet to write completion."""
        assert flow.up is not None and flow.state is not None and flow.params is not None
        target = flow.up.target
        out = Outcome(backend=target.name, client_keepalive=flow.keepalive, reused=True)
        if flow.whole_size is not None:
            flow.finish_whole(out)
        else:
            flow.finish(flow.state, flow.params, flow.timeout, out)
        stats = self.stats  # counted once it is over (a handed-off one counts in a worker)
        row = stats.begin(target, None) if stats is not None else None
        if row is not None:
            BackendStats.end(row, flow.started, out.status, bool(out.aborted), True)
        return out

    # -- phases --------------------------------------------------------------------

    def _connect(self, target: Target, params: WorkerParams, timeout: float,
                 ctx: ssl.SSLContext | None, sni: str, order: Sequence[Endpoint],
                 marks: AddressMarks | None, proxy_header: bytes | None = None) -> Upstream:
        """A new connection: the first address of ``order`` that accepts one (an
        address that refuses is offered last by every child's rotation for ``retry``
        seconds)."""
        ctimeout = params.connectiontimeout or timeout
        if not order:
            raise UpstreamFailure("resolve", f"DNS lookup failure for: {target.host}")
        last = "no address"
        for ep in order:
            try:
                sock = upstream.connect(ep.family, ep.sockaddr, ctimeout)
            except (TimeoutError, OSError) as exc:
                last = ("connect timed out" if isinstance(exc, TimeoutError)
                        else exc.strerror or str(exc))
                if len(order) > 1 and params.retry > 0 and marks is not None:
                    marks.mark_down(ep.sockaddr, params.retry)
                continue
            if params.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if proxy_header is not None:  # before TLS: the peer reads it off the raw socket
                try:
                    upstream.send_duplex(sock, proxy_header, ctimeout, lambda: None)
                except (OSError, TimeoutError) as exc:  # as a failed connect: next address
                    sock.close()
                    last = f"sending the PROXY header: {exc}"
                    if len(order) > 1 and params.retry > 0 and marks is not None:
                        marks.mark_down(ep.sockaddr, params.retry)
                    continue
            if ctx is not None:
                try:
                    sock = upstream.handshake(sock, ctx, sni, ctimeout)
                except ssl.SSLCertVerificationError as exc:
                    raise UpstreamFailure("tls", f"certificate verification failed for "
                                          f"{sni}: {exc.verify_message}") from None
                except (ssl.SSLError, OSError) as exc:
                    raise UpstreamFailure("tls", f"SSL handshake failed: {exc}") from None
                except TimeoutError:
                    raise UpstreamFailure("connect", "TLS handshake timed out",
                                          timeout=True) from None
            return Upstream(sock, target, addr=ep.sockaddr)
        raise UpstreamFailure("connect", last, refused=True)

    @staticmethod
    def _refused_after_header(up: Upstream, order: Sequence[Endpoint], params: WorkerParams,
                              marks: AddressMarks | None) -> Sequence[Endpoint]:
        """A connection opened with a PROXY header was reset or closed before any
        answer: the backend refused it (a header, or a source address, it does not
        accept), as one refuses a connect. Its address is avoided for ``retry``, as a
        refused one is (``_connect``); returns the addresses after it in ``order``,
        which an idempotent request goes on to."""
        if len(order) > 1 and params.retry > 0 and marks is not None:
            marks.mark_down(up.addr, params.retry)
        for i, ep in enumerate(order):
            if ep.sockaddr == up.addr:
                return order[i + 1:]
        return ()

    def client_base(self, client: ClientSide, req: Request) -> bytes:
        """``scheme://host`` as the client addressed us (for ProxyPassReverse)."""
        scheme = b"https://" if client.tls else b"http://"
        return scheme + (req.host or self.server_name)

    def _log_failure(self, exc: UpstreamFailure, target: Target, peer: tuple[str, int]) -> None:
        if exc.phase == "resolve":
            self.log.error("proxy", f"AH00898: {exc.reason} (no address for "
                           f"{target.name})", peer)
        elif exc.phase == "connect":
            self.log.error("proxy", f"AH01114: HTTP: failed to make connection to backend: "
                           f"{target.name} ({exc.reason})", peer)
        elif exc.phase == "tls":
            self.log.error("proxy", f"AH01084: error during SSL handshake with remote server "
                           f"{target.name}: {exc.reason}", peer)
        elif exc.timeout:
            self.log.error("proxy", f"AH01102: timeout reading status line from {target.name}",
                           peer)
        else:
            self.log.error("proxy", f"AH01102: error reading status line from {target.name}: "
                           f"{exc.reason}", peer)


@dataclass(frozen=True, slots=True)
class InlinePlan:
    """A route's backend, as inline exchanges use it (``Exchange.inline_plan``)."""

    target: Target
    params: WorkerParams
    state: BackendState  # its pooled connections
    addrs: AddressSet
    host_header: bytes


class _Flow:
    """One attempt of one request on one upstream connection (worker thread only)."""

    __slots__ = ("ex", "client", "req", "host_cfg", "keepalive", "up", "buf", "relay",
                 "relay_resp", "upload_complete", "upstream_closed", "recv",
                 "send_duplex", "buffering", "addrs", "upgrade", "switched", "state",
                 "params", "timeout", "unsent", "failed", "timed_out", "order", "started",
                 "whole_size")

    def __init__(self, ex: Exchange, client: ClientSide, req: Request, host_cfg: HostConfig,
                 keepalive: bool, buffering: bool, addrs: AddressSet | None = None) -> None:
        self.ex = ex
        self.addrs = addrs
        self.buffering = buffering
        self.client = client
        self.req = req
        self.host_cfg = host_cfg
        self.keepalive = keepalive
        self.up: Upstream | None = None
        self.buf = bytearray()  # upstream bytes not yet relayed
        self.relay: ResponseRelay | None = None
        self.relay_resp: Response | None = None
        self.upload_complete = False
        self.upstream_closed = False
        self.recv = upstream.recv
        self.send_duplex = upstream.send_duplex
        self.upgrade: bytes | None = None  # the Upgrade asked of the upstream
        self.switched: Response | None = None  # its 101, once read
        # An inline exchange (started by the listener, maybe continued by a worker):
        self.state: BackendState | None = None
        self.params: WorkerParams | None = None
        self.timeout = 0.0
        self.unsent = b""  # request bytes the upstream's window did not take
        self.failed: RelayError | None = None  # the body framing broke while inline
        self.timed_out = False  # the listener's wait for the upstream ran out
        self.order: Sequence[Endpoint] | None = None  # the addresses picked for it
        self.started = 0.0  # monotonic, when the listener began it (backend latency)
        # ``whole``: (body bytes in ``buf``, the Content-Length to send or None) of a
        # response complete in ``buf``; None: it goes through a ResponseRelay
        self.whole_size: tuple[int, int | None] | None = None

    def resume(self, timeout: float) -> None:
        """Worker: continue an inline exchange where the listener left it."""
        assert self.up is not None
        if self.failed is not None:
            raise self.failed
        if self.timed_out:
            if self.relay is None:
                raise UpstreamFailure("read_head", "timed out reading the response head",
                                      timeout=True)
            raise RelayError("timed out reading the response body")
        if self.unsent:
            try:
                self.send_duplex(self.up.sock, self.unsent, timeout, self._early)
                self.upload_complete = True
            except _StopSending:
                pass
            except TimeoutError:
                raise UpstreamFailure("send", "timed out sending the request",
                                      timeout=True) from None
            except OSError as exc:
                if self.relay is None:
                    raise UpstreamFailure("send", exc.strerror or str(exc),
                                          before_response=not self.buf) from None
            self.unsent = b""

    def attach(self, up: Upstream) -> None:
        self.up = up
        if isinstance(up.sock, ssl.SSLSocket):
            self.recv = upstream.recv_tls
            self.send_duplex = upstream.send_duplex_tls

    # SEND ---------------------------------------------------------------------------

    def send(self, head: bytes, body: BodyDecoder, body_parts: list[bytes],
             body_file: BodyFile | None, buffered: bool, timeout: float) -> None:
        assert self.up is not None
        sock = self.up.sock
        try:
            if buffered:
                data = head + b"".join(body_parts) if body_parts else head
                self.send_duplex(sock, data, timeout, self._early)
                if body_file is not None:
                    upstream.sendfile_duplex(sock, body_file.fd, body_file.size, timeout,
                                             self._early)
            else:  # a large body, streamed from the client as it arrives
                chunked = self.req.content_length is None
                frame = _chunk if chunked else bytes
                self.send_duplex(sock, head + b"".join(map(frame, body_parts)), timeout,
                                     self._early)
                body_parts.clear()
                inbuf = self.client.inbuf
                while True:
                    data = body.feed(inbuf)  # a partial chunk line stays in inbuf
                    if data:
                        self.send_duplex(sock, frame(data), timeout, self._early)
                    if body.done:
                        break
                    # the client's pace: RequestReadTimeout's body stage (408),
                    # else Timeout per read, as httpd; ProxyTimeout is the upstream's
                    if not self.client.recv_body(self.host_cfg.read_timeout.body,
                                                 self.host_cfg.timeout):
                        body.eof()
                if chunked:
                    self.send_duplex(sock, b"0\r\n\r\n", timeout, self._early)
            self.upload_complete = True
        except _StopSending:
            return  # the upstream answered and stopped reading: relay that answer
        except TimeoutError:
            raise UpstreamFailure("send", "timed out sending the request",
                                  timeout=True) from None
        except HTTPError as exc:  # the client's body framing broke mid-stream
            raise ClientBodyError(exc.status, exc.detail) from None
        except OSError as exc:
            if self.relay is not None:
                return  # it already answered (e.g. 413) and closed: relay the answer
            raise UpstreamFailure("send", exc.strerror or str(exc),
                                  before_response=not self.buf) from None

    def _early(self) -> None:
        """The upstream speaks while we still send: take it in (bounded by relaying)."""
        assert self.up is not None
        try:
            data = self.up.sock.recv(RECV_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # nothing yet (for TLS: a record without application data)
        except OSError as exc:
            if self.relay is not None:
                raise _StopSending from None
            raise UpstreamFailure("send", exc.strerror or str(exc),
                                  before_response=not self.buf) from None
        if not data:
            self.upstream_closed = True
            if self.relay is None and self.switched is None:
                self._start_relay()
            if self.relay is None:
                raise UpstreamFailure("send", "upstream closed while receiving the request",
                                      before_response=not self.buf)
            self.relay.upstream_eof()
            raise _StopSending
        self.buf += data
        if self.relay is None and self.switched is None:
            self._start_relay()
        if self.relay is not None:
            self.relay.pump(self.buf)

    # READ_HEAD ------------------------------------------------------------------------

    def _start_relay(self) -> None:
        resp = self._final_head()
        if resp is not None:
            self._relay(resp)

    def _final_head(self) -> Response | None:
        """The final response head from ``buf``, once complete (None: not yet, or a
        101 that went to ``switched``)."""
        while True:
            resp = read_response_head(self.buf)
            if resp is None:
                return None
            if resp.status >= 200:
                return resp  # interim 1xx are consumed here: we answered 100-continue
            if resp.status == 101:
                if self.upgrade is None:
                    raise HTTPError(502, "upstream switched protocols unasked")
                self.switched = resp  # the rest of ``buf`` belongs to the new protocol
                return None

    def _relay(self, resp: Response) -> None:
        self.relay = ResponseRelay(
            self.client, resp, self.req, self.host_cfg, self.ex.client_base(self.client, self.req),
            self.ex.server_name, self.keepalive, self.buffering)
        self.relay_resp = resp

    def read_head(self, timeout: float) -> None:
        assert self.up is not None
        # The answer is never there right after the request went out: wait before
        # the first recv instead of paying for a failed one (plain TCP only; TLS may
        # hold decrypted bytes that poll() cannot see).
        wait_first = not self.buf and self.recv is upstream.recv
        while True:
            self._start_relay()
            if self.relay is not None or self.switched is not None:
                return
            try:
                if wait_first:
                    upstream.wait(self.up.sock, upstream.POLLIN, timeout)
                    wait_first = False
                data = self.recv(self.up.sock, timeout)
            except TimeoutError:
                raise UpstreamFailure("read_head", "timed out reading the response head",
                                      timeout=True) from None
            except OSError as exc:
                raise UpstreamFailure("read_head", exc.strerror or str(exc),
                                      before_response=not self.buf) from None
            if not data:
                raise UpstreamFailure("read_head", "upstream closed before the response head",
                                      before_response=not self.buf)
            self.buf += data

    # A WHOLE small response (inline exchanges): no relay -----------------------------

    def whole(self, resp: Response) -> bool:
        """Listener: is ``resp`` (head parsed) complete in ``buf``, with a size known
        from its head? Then it needs no ResponseRelay: ``finish_whole`` sends it with
        its head in one piece. The framing is ``response_body``'s and the relay's."""
        method = self.req.method
        if method == b"HEAD" or resp.status in (204, 304):
            # no body; a HEAD response keeps the Content-Length its GET would have
            self.whole_size = (0, resp.content_length if method == b"HEAD" else None)
        elif resp.chunked or resp.content_length is None or len(self.buf) < resp.content_length:
            return False
        else:
            self.whole_size = (resp.content_length, resp.content_length)
        self.relay_resp = resp
        return True

    def finish_whole(self, out: Outcome) -> None:
        """Listener: the response ``whole`` found complete becomes ``out.unsent``, for
        the listener to send with the others it completes in the same round (see
        Listener._send_round), or, past ROUND_BYTES, is sent now (what the socket does
        not take goes to write completion); the upstream connection goes back to
        the pool."""
        resp, up, buf = self.relay_resp, self.up, self.buf
        assert resp is not None and up is not None and self.whole_size is not None
        size, length = self.whole_size
        if size == len(buf):
            body = bytes(buf)
            buf.clear()
        else:  # more than the response: the connection is not pooled
            body = bytes(buf[:size])
            del buf[:size]
        if self._poolable(self.params) and not buf:  # type: ignore[arg-type]
            self._release(self.state)  # type: ignore[arg-type]
        else:
            up.sock.close()
        self.up = None
        try:
            head, headers = client_head(
                self.client, resp, self.req, self.host_cfg,
                self.ex.client_base(self.client, self.req), self.ex.server_name,
                self.keepalive, length, False)
        except HeaderInjection as exc:
            self.ex.log.error("proxy", f"AH01102: invalid response from "
                              f"{up.target.name}: {exc}")
            out.error = 502
            return
        data = head + body if body else head
        out.status = resp.status
        out.headers = headers
        out.body_bytes = size
        out.bytes_out = len(data)
        if len(data) <= ROUND_BYTES:
            out.unsent = data
            return
        # A big one goes now: a round's worth of them held until its end would be
        # freed together, and the allocator would hand the memory back to the
        # kernel (and fault it in again) every round.
        rest = self.client.send_some(data)  # ClientGone: the caller closes the client
        if rest:
            out.spool = spool = Spool()
            spool.append(rest)

    # SWITCHED (101): the 101 goes to the client, the sockets to the listener --------

    def switch(self, out: Outcome, idle: float) -> None:
        resp, up = self.switched, self.up
        assert resp is not None and up is not None and self.upgrade is not None
        head, headers = switched_head(resp, self.upgrade, self.host_cfg,
                                      self.ex.client_base(self.client, self.req),
                                      self.ex.server_name)
        self.client.send_all(head, self.host_cfg.timeout)  # ClientGone: caller closes up
        out.status = 101
        out.headers = headers
        out.bytes_out = len(head)
        out.client_keepalive = False
        out.tunnel = TunnelSpec(up.sock, bytes(self.buf), idle)

    # RELAY and DONE --------------------------------------------------------------------

    def finish(self, state: BackendState, params: WorkerParams, timeout: float,
               out: Outcome) -> None:
        relay = self.relay
        up = self.up
        assert relay is not None and up is not None
        try:
            relay.pump(self.buf)
            if (not relay.done and not self.buffering and self.upload_complete
                    and not relay.pending and not relay.spool):
                # A streaming route: the head and what came with it are out; the
                # listener relays the rest as it comes, and this worker is free.
                out.stream = StreamSpec(
                    up.sock, up.target.name, relay, self.buf, timeout, self.host_cfg.timeout,
                    (lambda: self._release(state)) if self._poolable(params) else None)
                self._fill(out)
                return
            while not relay.done:
                try:
                    data = self.recv(up.sock, timeout)
                except TimeoutError:
                    raise RelayError("timed out reading the response body") from None
                except OSError as exc:
                    raise RelayError(exc.strerror or str(exc)) from None
                if data:
                    self.buf += data
                    relay.pump(self.buf)
                else:
                    relay.upstream_eof()
        except RelayError as exc:
            self.abort(out, f"AH01110: error reading the response body from "
                       f"{up.target.name}: {exc}")
            return
        except BaseException:
            up.sock.close()  # the client went away mid-relay: not reusable
            raise
        if self._poolable(params) and not self.buf:
            self._release(state)
        else:
            up.sock.close()
        self.up = None  # pooled or closed: no longer this flow's to close on an error
        if relay.spool.spill_error:
            self.ex.log.warn("proxy", f"AH01111: response buffering: "
                             f"{relay.spool.spill_error}")
        out.spool = relay.finish()
        self._fill(out)
        if not self.upload_complete:
            out.client_keepalive = False  # the rest of the request body was never read

    def _poolable(self, params: WorkerParams) -> bool:
        """Whether the upstream connection may carry another request once the response
        body is complete and nothing followed it (the caller checks that part: a
        worker at once, the listener's stream relay at the end). One test for both
        relays, so a PROXY header's connection is never kept by either."""
        return (self.upload_complete and not self.upstream_closed
                and self.relay_resp is not None and self.relay_resp.keep_alive
                and not params.disablereuse and not params.proxyprotocol)

    def _release(self, state: BackendState) -> None:
        """Back to the pool, unless the name's address set dropped its address
        meanwhile (a stream can outlive its address). Worker or listener thread."""
        assert self.up is not None
        self.ex.pool.release(state, self.up, self.addrs.listed if self.addrs else None)

    def abort(self, out: Outcome, message: str) -> None:
        assert self.up is not None
        self.up.sock.close()
        self.ex.log.error("proxy", message)
        if self.relay is not None:
            self.relay.salvage()
            self._fill(out)
        out.aborted = True

    def _fill(self, out: Outcome) -> None:
        relay = self.relay
        assert relay is not None
        out.status = relay.status
        out.headers = relay.headers
        out.body_bytes = relay.body_bytes
        out.bytes_out = relay.bytes_out
        out.client_keepalive = out.client_keepalive and relay.keepalive


def _client_gone_probe(client: ClientSide):  # type: ignore[no-untyped-def]
    """A check, for a request waiting in a balancer queue, that its client is still
    there: the peer shut down its side, or the socket is in error (poll, no read:
    pipelined bytes stay where they are)."""
    events = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)

    def gone() -> bool:
        try:
            fd = client.sock.fileno()
            if fd < 0:
                return True
            poller = select.poll()
            poller.register(fd, events)
            return any(ev & events for _, ev in poller.poll(0))
        except (OSError, ValueError):
            return True

    return gone


def _traffic(req: Request, body_file: BodyFile | None, body_parts: list[bytes],
             out: Outcome) -> tuple[int, int, float | None, bool]:
    """What an attempt weighed, for the member's shared record: bytes sent (request
    head and body, as received), bytes read (as relayed), time to the response
    head, and whether it failed."""
    sent = req.head_size + (body_file.size if body_file is not None
                            else sum(map(len, body_parts)))
    return sent, out.bytes_out, out.head_after, bool(out.error)


class ClientBodyError(HTTPError):
    """The client's streamed request body was malformed or cut short."""


class _StopSending(Exception):
    """The upstream answered and closed or reset: stop the upload, relay the answer."""


def _proxy_header(version: str, client: ClientSide, peer: tuple[str, int]) -> bytes | None:
    """``proxyprotocol=v1|v2``: the believed client as source, the address the client
    connected to as destination."""
    if not version:
        return None
    local = getattr(client, "local", None) or ("0.0.0.0", 0)
    build = build_v2 if version == "v2" else build_v1
    return build((peer[0], peer[1]), (local[0], local[1]))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


InlineFlow = _Flow  # what the listener holds for an inline exchange in flight
