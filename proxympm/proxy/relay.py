"""The response side of an exchange: upstream response -> client, incrementally.

A ``ResponseRelay`` is created once the upstream's final response head is known.
It builds the client's head (hop-by-hop fields removed, ProxyPassReverse, Via,
our own framing), then ``pump`` decodes whatever upstream bytes are buffered and
writes them to the client: de-chunked and re-chunked for HTTP/1.1 clients when
the length is unknown, close-delimited for HTTP/1.0 clients. Small responses
leave in a single send together with their head.

Runs on one worker thread; the exchange drives it both after the request was sent
and, for upstreams that answer early, while the request body is still going up.
On a streaming route the worker then hands it over (``StreamSpec``): from there on
only the listener thread calls it (``take``), and the worker never touches it again.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from proxympm.config.model import HostConfig
from proxympm.http.body import LengthBody, NoBody
from proxympm.http.errors import ClientGone, HTTPError
from proxympm.http.request import Headers, Request
from proxympm.http.response import Response, response_body
from proxympm.http.serialize import join_head, status_line
from proxympm.proxy.header_rules import apply_response
from proxympm.proxy.headers import client_response_headers
from proxympm.proxy.spool import Spool

FLUSH_AT = 65536


@dataclass(slots=True)
class StreamSpec:
    """A streaming response whose body the listener relays from here on, so that no
    worker waits between the events of a server-sent event stream or a long poll."""

    upstream: socket.socket  # non-blocking; an SSLSocket for https://
    backend: str  # for the error log
    relay: ResponseRelay  # head already sent; decodes and re-frames the rest
    buf: bytearray  # upstream bytes not decoded yet
    timeout: float  # the backend timeout: longest silence between two pieces
    client_timeout: float  # Timeout: longest wait for the client to take a piece
    # Puts the upstream connection back in the pool once the body is complete and
    # nothing followed it; None: close it (not reusable).
    release: Callable[[], None] | None = None


class RelayError(Exception):
    """The upstream response body is broken: the client connection must be aborted."""


def client_head(client: object, resp: Response, req: Request, host_cfg: HostConfig,
                client_base: bytes, server_name: bytes, keepalive: bool, length: int | None,
                rechunk: bool) -> tuple[bytes, Headers]:
    """The client's response head and its fields: the upstream's, rewritten
    (client_response_headers, Header rules), then our framing: ``length`` as
    Content-Length, else chunked if ``rechunk``; Connection: close unless
    ``keepalive``. HeaderInjection (a rewritten value) propagates: nothing has been
    sent yet, the caller answers 502. Copied fields were validated by the parser."""
    headers: Headers = client_response_headers(
        resp, host_cfg, host_cfg.reverse_rules, client_base, server_name)
    rules = getattr(client, "rules", None)
    if rules is not None and (rules.response or rules.always):
        headers = apply_response(rules, headers, req.headers,
                                 client.rule_env())  # type: ignore[attr-defined]
    if length is not None:
        headers.append((b"Content-Length", b"%d" % length))
    elif rechunk:
        headers.append((b"Transfer-Encoding", b"chunked"))
    if not keepalive:
        headers.append((b"Connection", b"close"))
    return join_head(status_line(resp.status, resp.reason or None), headers), headers


class ResponseRelay:
    __slots__ = ("client", "decoder", "rechunk", "pending", "pending_len", "sent_any",
                 "timeout", "spool",
                 "buffering",
                 "body_bytes", "bytes_out", "headers", "status", "keepalive")

    def __init__(self, client: object, resp: Response, req: Request, host_cfg: HostConfig,
                 client_base: bytes, server_name: bytes, keepalive: bool,
                 buffering: bool = True) -> None:
        self.client = client
        self.buffering = buffering  # False (responsebuffering=off): wait for the client
        self.timeout = host_cfg.timeout
        self.decoder = response_body(resp, req.method)
        sized = isinstance(self.decoder, (LengthBody, NoBody))
        if req.version != b"1.1" and not sized:
            keepalive = False  # close-delimited for an HTTP/1.0 client
        self.keepalive = keepalive
        self.rechunk = req.version == b"1.1" and not sized
        length = resp.content_length if isinstance(self.decoder, LengthBody) or (
            req.method == b"HEAD" and resp.content_length is not None) else None
        head, self.headers = client_head(client, resp, req, host_cfg, client_base,
                                         server_name, keepalive, length, self.rechunk)
        self.status = resp.status
        # What is decoded but not passed on yet, as parts: joined once per flush
        # (never ``bytes +=``, which copies everything pending for every append).
        self.pending: list[bytes] = [head]
        self.pending_len = len(head)
        self.sent_any = False
        self.spool = Spool()  # what the client has not taken yet
        self.body_bytes = 0
        self.bytes_out = 0

    @property
    def done(self) -> bool:
        return self.decoder.done

    def pump(self, buf: bytearray) -> None:
        """Decode what ``buf`` holds and pass it on; raises RelayError on bad framing,
        ClientGone (from the client) if the client went away."""
        if self.decoder.done:
            return
        self._decode(buf)
        if self.decoder.done:
            return
        # A streaming route (flushpackets, responsebuffering=off) passes every piece
        # on as it arrives, the head at once: an event must not wait for the next.
        if self.pending and (self.sent_any or not self.buffering
                             or self.pending_len >= FLUSH_AT):
            self.flush()

    def _decode(self, buf: bytearray) -> None:
        try:
            data = self.decoder.feed(buf)
        except HTTPError as exc:
            raise RelayError(exc.detail) from None
        pending = self.pending
        if data:
            n = len(data)
            self.body_bytes += n
            if self.rechunk:
                pending += (b"%x\r\n" % n, data, b"\r\n")
                n += len(pending[-3]) + 2
            else:
                pending.append(data)
            self.pending_len += n
        if self.decoder.done and self.rechunk:
            pending.append(b"0\r\n\r\n")
            self.pending_len += 5

    def take(self, buf: bytearray | None) -> bytes:
        """For the listener relaying a streaming body (proxympm.mpm.tunnel): decode
        ``buf`` (None: the upstream closed) and return what the client gets next,
        without sending it. RelayError on bad or cut-short framing."""
        if buf is None:
            self.upstream_eof()
        elif not self.decoder.done:
            self._decode(buf)
        parts = self.pending
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.pending = []
        self.pending_len = 0
        self.bytes_out += len(data)
        return data

    def upstream_eof(self) -> None:
        try:
            self.decoder.eof()
        except HTTPError as exc:
            raise RelayError(exc.detail) from None
        if self.rechunk and self.decoder.done:
            self.pending.append(b"0\r\n\r\n")
            self.pending_len += 5

    def flush(self) -> None:
        """Pass ``pending`` on without waiting for the client: what its socket does
        not take now is spooled (memory, then a temp file) and the worker goes back
        to reading the upstream. Only a full spool makes the worker wait."""
        parts = self.pending
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.pending = []
        self.pending_len = 0
        self.bytes_out += len(data)
        self.sent_any = True
        if not self.buffering:
            self.client.send_all(data, self.timeout)  # type: ignore[attr-defined]
            return
        spool = self.spool
        if not spool:
            data = self.client.send_some(data)  # type: ignore[attr-defined]
            if not data:
                return
        spool.append(data)
        self._drain(wait=False)
        while spool.full:
            self._drain(wait=True)

    def _drain(self, wait: bool) -> None:
        client = self.client
        try:
            if wait:
                client.wait_writable(self.timeout)  # type: ignore[attr-defined]
            self.spool.send_to(client.sock)  # type: ignore[attr-defined]
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def finish(self) -> Spool | None:
        """The response is complete upstream: write what the socket takes now and
        return the rest for the listener's write completion (None: all sent)."""
        if self.pending:
            self.flush()
        elif self.spool:
            self._drain(wait=False)
        if self.spool:
            return self.spool
        self.spool.close()
        return None

    def salvage(self) -> None:
        """Before an abort: what was decoded so far still goes out (then the close)."""
        try:
            if self.pending:
                self.flush()
            while self.spool:
                self._drain(wait=True)
        except Exception:  # noqa: BLE001 - the connection is being aborted anyway
            pass
        self.spool.close()
