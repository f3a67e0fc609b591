"""Worker threads: each serves complete requests, one at a time.

A worker takes a connection whose request head is complete off the queue, picks
the virtual host and route, runs the upstream exchange, writes the response
without waiting on an idle client, and hands the connection back: to keep-alive,
to write completion for a tail the client has not taken yet, or to a lingering
close. A pipelined request already in the buffer is served by the same worker
at once, without a trip through the poller. A request that must wait in a
``max`` queue is handed back to the listener (``Listener.park``) with its token,
and comes back to some worker once the wait is over (``serve_one`` resumes it).

Every method here runs on a worker thread, except ``start_inline`` and
``finish_inline``: the listener calls them on its own instance (never started as a
thread, no scoreboard slot) to serve inline exchanges (see listener.py); ``_begin``
and ``conclude`` are shared by both paths. Otherwise: ``done`` is written only by its own
worker and read by the listener (admission).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxympm.config.model import HostConfig
from proxympm.http.errors import ClientGone, HTTPError
from proxympm.http.request import Request
from proxympm.http.serialize import error_response
from proxympm.log import AccessLog, AccessRecord, ErrorLog
from proxympm.mpm.connection import Connection
from proxympm.mpm.listener import Listener
from proxympm.mpm.scoreboard import (
    CLOSING_C,
    DEAD,
    KEEPALIVE_K,
    LOG_L,
    READ_R,
    READY_,
    WRITE_W,
    WorkerScore,
)
from proxympm.proxy import header_rules
from proxympm.proxy.client_address import believe
from proxympm.proxy.exchange import IDEMPOTENT, Exchange, InlineFlow, InlinePlan, Outcome
from proxympm.proxy.routing import HostTable, Route, Router
from proxympm.proxy.spool import Spool

if TYPE_CHECKING:
    from proxympm.status import StatusPage

# httpd's ap_status_drops_connection: after these, the connection is closed.
DROPS_CONNECTION = frozenset({400, 408, 411, 413, 414, 417, 421, 431, 500, 501, 503, 505})


class Worker:
    def __init__(self, index: int, work_queue: queue.SimpleQueue, listener: Listener,
                 exchange: Exchange, hosts: HostTable, routers: dict[int, Router],
                 access_logs: dict[int, list[AccessLog]], error_log: ErrorLog,
                 score: WorkerScore | None = None,
                 status_page: StatusPage | None = None) -> None:
        self.index = index
        self.queue = work_queue
        self.listener = listener
        self.exchange = exchange
        self.hosts = hosts
        self.routers = routers
        self.access_logs = access_logs
        self.log = error_log
        self.done = 0
        self.score = score  # this thread's scoreboard slot (written only here)
        # the listener's instance: counts an inline request it completed (scoreboard)
        self.count_inline: Callable[[int], None] | None = None
        # the listener's instance: each route's InlinePlan (None: never inline)
        self.plans: dict[int, InlinePlan | None] = {}
        self.status_page = status_page
        self.thread = threading.Thread(target=self.run, name=f"worker-{index}", daemon=True)

    def run(self) -> None:
        score = self.score
        self.exchange.bind_thread(self.index)
        if score is not None:
            score.status(READY_)
        while True:
            conn = self.queue.get()
            if conn is None:
                if score is not None:
                    score.status(DEAD)
                return
            try:
                self.serve(conn)
            except Exception:  # noqa: BLE001 - one bad request must not kill the worker
                self.log.error("mpm", "AH00000: worker failed: "
                               + traceback.format_exc().replace("\n", " | "), conn.client)
                self.listener.close(conn)
            finally:
                self.done += 1
                if score is not None:
                    score.status(READY_)
                self.listener.worker_freed()

    def serve(self, conn: Connection) -> None:
        listener = self.listener
        while True:
            try:
                then = self.serve_one(conn)
            except ClientGone:
                listener.close(conn)
                return
            if then is None:
                return
            if self.score is not None:
                self.score.status(CLOSING_C if then else KEEPALIVE_K)
            if not listener.start_write(conn, then_close=then):
                return
            # a pipelined request is complete in the buffer: serve it here

    def serve_one(self, conn: Connection) -> bool | None:
        """Serve ``conn.request``. Returns whether to close after writing
        ``conn.out`` (True/False), or None if the connection was already handed on."""
        req = conn.request
        body = conn.body
        assert req is not None and body is not None
        score = self.score
        if conn.parked is not None:  # back from a ``max`` queue: the wait is over
            token = conn.parked
            conn.parked = None
            host, start, keepalive, route, upstream_path, client = token.context
            if score is not None:
                score.begin(WRITE_W if body.done else READ_R, req.request_line, client,
                            req.host or b"", conn.requests, start)
            out = self.exchange.forward(
                conn, client, req, body, conn.body_parts, conn.body_file, host,
                route.target, route.params, upstream_path, keepalive, parked=token,
                may_park=True,
            )
            if out.parked is not None:  # a failover that queues again
                return self._park(conn, out, host, start, keepalive, route, upstream_path,
                                  client)
            return self.conclude(conn, host, out, start, keepalive)
        if conn.inline is not None:  # the listener began it (and maybe sent it upstream)
            flow, host, start, keepalive, route, upstream_path, client = conn.inline
            conn.inline = None
            if score is not None:
                score.begin(WRITE_W, req.request_line, client, req.host or b"",
                            conn.requests, start)
            out = self.exchange.forward(
                conn, client, req, body, conn.body_parts, conn.body_file, host,
                route.target, route.params, upstream_path, keepalive, resume=flow,
            )
            return self.conclude(conn, host, out, start, keepalive)
        start = time.time()
        host = self.hosts.by_name(conn.local[0], conn.local[1], req.host)
        conn.requests += 1
        client = self._begin(conn, host, start)
        if score is not None:
            score.begin(WRITE_W if body.done else READ_R, req.request_line, client,
                        req.host or b"", conn.requests, start)
        keepalive = self._keepalive(conn, host)
        out: Outcome
        if conn.sni_host is not None and host is not conn.sni_host:
            out = Outcome(error=421)
        else:
            asterisk = req.path == b"*"  # OPTIONS * goes to whoever serves "/"
            match = self.routers[id(host)].match(b"/" if asterisk else req.path)
            if match is None:
                out = Outcome(error=404)
            elif match[0].access is not None and not match[0].access.allows(
                    client[0], conn.local[0]):  # mod_remoteip's client, as httpd
                self.log.error("authz_core", f"AH01630: client denied by server "
                               f"configuration: {req.path.decode('latin-1')}", client)
                out = Outcome(error=403)
            elif match[0].target is None:
                out = self._handle(match[0], req, keepalive and body.done)
            else:
                route, upstream_path = match
                if asterisk:
                    upstream_path = b"*"
                assert route.target is not None
                out = self.exchange.forward(
                    conn, client, req, body, conn.body_parts, conn.body_file, host,
                    route.target, route.params, upstream_path, keepalive,
                    may_park=self.listener.queued is not None,  # else it waits here
                )
                if out.parked is not None:
                    return self._park(conn, out, host, start, keepalive, route,
                                      upstream_path, client)
        return self.conclude(conn, host, out, start, keepalive)

    def _park(self, conn: Connection, out: Outcome, host: HostConfig, start: float,
              keepalive: bool, route: Route, upstream_path: bytes,
              client: tuple[str, int]) -> None:
        """``forward`` said the request must wait in a ``max`` queue: the connection
        goes to the listener with what resuming it needs (this thread is free at once)."""
        token = out.parked
        assert token is not None
        token.context = (host, start, keepalive, route, upstream_path, client)
        conn.parked = token
        self.listener.park(conn)
        return None

    def _begin(self, conn: Connection, host: HostConfig, start: float) -> tuple[str, int]:
        """Per-request state on the connection (start time, believed client address,
        Header rules, request rules applied); returns the client address to forward."""
        req = conn.request
        assert req is not None
        conn.started = start
        conn.client_addr = (believe(host, conn.peer, req)
                            if host.remote_ip_header or host.add_forwarded else None)
        conn.rules = rules = header_rules.select(host, req.path)
        conn.keep_proto = False
        if rules is not None and rules.request:
            headers, named = header_rules.apply_request(rules.request, req, conn.rule_env(),
                                                        req.headers)
            req.headers = headers
            req.lnames = [name.lower() for name, _ in headers]
            conn.keep_proto = b"x-forwarded-proto" in named
        return conn.client

    def _keepalive(self, conn: Connection, host: HostConfig) -> bool:
        """May the connection stay open after this request (``conn.requests`` counts
        it already)?"""
        req = conn.request
        assert req is not None
        return (
            host.keepalive
            and req.keep_alive
            and not self.listener.stopping
            and (host.max_keepalive_requests == 0 or conn.requests < host.max_keepalive_requests)
        )

    def conclude(self, conn: Connection, host: HostConfig, out: Outcome, start: float,
                 keepalive: bool) -> bool | None:
        """After the exchange: the response (or our error answer) becomes the
        connection's output, the access log gets its line. Returns what ``serve_one``
        returns."""
        req = conn.request
        body = conn.body
        assert req is not None and body is not None
        rules = conn.rules
        score = self.score
        # a request body left unread (a refused request's, a handler's) is never
        # parsed as a next request: close (lingering) instead
        close = not out.client_keepalive or not keepalive or not body.done
        if out.error:
            out.status = out.error
            close = close or out.error in DROPS_CONNECTION
            extra = (header_rules.error_headers(rules.always, conn.rule_env(), req.headers)
                     if rules is not None and rules.always else None)
            conn.out = error_response(out.error, close=close, extra=extra,
                                      head_only=req.method == b"HEAD")
            out.headers = extra or []
        elif out.aborted:
            self._access(conn, host, out, start, "X")
            if score is not None:
                score.end(out.bytes_out)
            self.listener.close(conn)
            return None
        elif out.tunnel is not None:  # 101: the listener relays it from now on
            self._access(conn, host, out, start, "-")
            if score is not None:
                score.end(out.bytes_out)
            self.listener.tunnels.adopt(conn, out.tunnel)
            return None
        elif out.stream is not None:  # a streaming body: the listener relays the rest
            status = "-" if close else "+"

            def done(body_bytes: int, bytes_out: int) -> None:  # listener thread, at the end
                out.body_bytes, out.bytes_out = body_bytes, bytes_out
                self._access(conn, host, out, start, status)

            if score is not None:  # what the worker sent; the listener sends the rest
                score.end(out.bytes_out)
            self.listener.tunnels.adopt_stream(conn, out.stream, close, done)
            return None
        else:
            conn.out = out.unsent
            conn.spool = out.spool
        if score is not None:
            score.status(LOG_L)
        self._access(conn, host, out, start, "-" if close else "+")
        if score is not None:
            score.end(out.bytes_out or len(conn.out))
        return close

    # -- inline exchanges: these run on the listener thread ------------------------------

    def start_inline(self, conn: Connection) -> InlineFlow | None:
        """Listener thread: start ``conn.request`` as an inline exchange if it can be
        one (see Exchange.start_inline); the context goes to ``conn.inline``."""
        req = conn.request
        body = conn.body
        assert req is not None and body is not None
        if (not body.done or conn.body_file is not None or req.upgrade is not None
                or req.method not in IDEMPOTENT):
            return None
        host = self.hosts.by_name(conn.local[0], conn.local[1], req.host)
        if (conn.sni_host is not None and host is not conn.sni_host) or req.path == b"*":
            return None
        match = self.routers[id(host)].match(req.path)
        if match is None:
            return None  # 404: the worker's
        route, upstream_path = match
        plan = self.plans.get(id(route), False)
        if plan is False:  # routes live as long as the child: looked at once
            plan = self.plans[id(route)] = (
                None if route.access is not None  # checked by the worker
                else self.exchange.inline_plan(route.target, route.params))
        if plan is None:
            return None
        start = time.time()
        conn.requests += 1
        client = self._begin(conn, host, start)
        keepalive = self._keepalive(conn, host)
        flow = self.exchange.start_inline(
            conn, client, req, conn.body_parts, host, plan, upstream_path, keepalive)
        # A flow that has no upstream connection (or no flow) goes to a worker, which
        # forwards it with this request's rules already applied (they must not run
        # twice) to the address already picked (the round robin moves once).
        conn.inline = (flow, host, start, keepalive, route, upstream_path, client)
        return flow

    def finish_inline(self, conn: Connection) -> bool | None:
        """Listener thread: the inline response is complete upstream (as ``serve_one``)."""
        assert conn.inline is not None
        flow, host, start, keepalive = conn.inline[:4]
        conn.inline = None
        out = self.exchange.finish_inline(flow)
        then = self.conclude(conn, host, out, start, keepalive)
        if self.count_inline is not None:
            self.count_inline(out.bytes_out or len(conn.out))
        return then

    def _handle(self, route: Route, req: Request, keepalive: bool) -> Outcome:
        """A Location with SetHandler (server-status, metrics), or a 404."""
        page = self.status_page
        if route.handler is None or page is None:
            return Outcome(error=404)
        status, headers, data = page.respond(route.handler, req.method, req.target, req.host,
                                             close=not keepalive)
        spool = Spool()
        spool.append(data)
        body = 0 if req.method == b"HEAD" else int(dict(headers)[b"Content-Length"])
        return Outcome(status=status, body_bytes=body, bytes_out=len(data), headers=headers,
                       client_keepalive=keepalive, spool=spool)

    def _access(self, conn: Connection, host: HostConfig, out: Outcome, start: float,
                status: str) -> None:
        logs = self.access_logs.get(id(host))
        if not logs:
            return
        req = conn.request
        assert req is not None
        rec = AccessRecord(
            remote_addr=conn.client_ip, remote_port=conn.peer[1], peer_addr=conn.peer[0],
            local_addr=conn.local[0], local_port=conn.local[1],
            method=req.method, target=req.target, version=b"HTTP/" + req.version,
            request_line=req.request_line, status=out.status, body_bytes=out.body_bytes,
            bytes_in=req.head_size + body_size(conn),
            bytes_out=out.bytes_out, start=start, duration=time.time() - start,
            request_headers=[(n.lower(), v) for n, v in req.headers],
            response_headers=[(n.lower(), v) for n, v in out.headers],
            server_name=host.server_name or "", server_port=conn.local[1],
            keepalives=conn.requests - 1, conn_status=status, backend=out.backend,
        )
        for log in logs:
            log.write(rec)


def body_size(conn: Connection) -> int:
    if conn.body_file is not None:
        return conn.body_file.size
    return sum(map(len, conn.body_parts))


def log_request_error(logs: dict[int, list[AccessLog]], error_log: ErrorLog,
                      exc: HTTPError, conn: Connection,
                      client: tuple[str, int] | None = None) -> None:
    """Listener thread: an error answered before any worker saw the request.
    ``client``: the one mod_remoteip believes, if the head was parsed."""
    client = client or conn.peer
    error_log.info("core", f"AH00567: request failed: {exc.detail}", client)
    host = conn.host_cfg
    for log in logs.get(id(host), ()):
        rec = AccessRecord(
            remote_addr=client[0], remote_port=conn.peer[1], peer_addr=conn.peer[0],
            local_addr=conn.local[0], local_port=conn.local[1],
            request_line=b"-", status=exc.status, start=time.time(),
            server_name=host.server_name or "", server_port=conn.local[1], conn_status="-",
        )
        log.write(rec)
