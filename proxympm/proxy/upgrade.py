"""Protocol upgrades through the proxy (RFC 9110 7.8): the handshake side.

A route may allow upgrades (``upgrade=websocket``, ``upgrade=ANY``, or a ``ws://`` /
``wss://`` URL, as mod_proxy_http 2.4.47+). The worker forwards such a request with
``Connection: Upgrade`` and the client's ``Upgrade`` (``wanted_upgrade``,
``with_upgrade``); a backend that refuses answers a normal response, which is
relayed as usual. A ``101 Switching Protocols`` naming a protocol the client asked
for is passed on (``switched_head``), and the exchange returns a ``TunnelSpec`` that
the worker hands to the listener's tunnel relay (proxympm.mpm.tunnel).

Runs on worker threads; everything here is pure (no I/O).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from proxympm.config.model import HostConfig
from proxympm.http.errors import HTTPError
from proxympm.http.request import Request
from proxympm.http.response import Response
from proxympm.http.serialize import join_head, status_line
from proxympm.proxy.headers import client_response_headers


def _protocols(value: bytes) -> list[bytes]:
    """``websocket, h2c`` -> [b"websocket", b"h2c"] (the name before any ``/version``)."""
    return [p.strip(b" \t").split(b"/", 1)[0].lower() for p in value.split(b",")]


def wanted_upgrade(req: Request, allowed: str, websocket: bool) -> bytes | None:
    """The Upgrade value to send upstream, or None to proxy the request plainly.

    ``allowed`` is the route's ``upgrade=`` ("*" for ANY); a ``ws://``/``wss://``
    target allows ``websocket`` without it. As RFC 9110 7.8 asks, Upgrade counts only
    in an HTTP/1.1 request that lists it in Connection; proxympm also requires the
    request to have no body (a body before the switch has no use we know of)."""
    value = req.upgrade
    if (value is None or req.version != b"1.1" or b"upgrade" not in req.connection_tokens
            or req.has_body):
        return None
    if not allowed:
        if not websocket:
            return None
        allowed = "websocket"
    if allowed == "*":
        return value
    names = set(allowed.encode("ascii").split(b","))
    return value if any(p in names for p in _protocols(value)) else None


def with_upgrade(head: bytes, value: bytes) -> bytes:
    """An upstream request head that asks for the upgrade. ``value`` is the client's
    field, already validated by llhttp (no CR/LF/NUL)."""
    return head[:-2] + b"Connection: Upgrade\r\nUpgrade: %s\r\n\r\n" % value


def switched_head(resp: Response, requested: bytes, host_cfg: HostConfig, client_base: bytes,
                  server_name: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The 101 for the client, and its fields (for the access log).

    HTTPError(502) when the backend switched to a protocol the client did not ask
    for, or did not say which (httpd answers 502 too)."""
    got = None
    for i, lname in enumerate(resp.lnames):
        if lname == b"upgrade":
            got = resp.headers[i][1]
    if got is None or not set(_protocols(got)) <= set(_protocols(requested)):
        raise HTTPError(502, f"upstream switched protocols to {got!r} while "
                        f"{requested!r} was requested")
    headers = client_response_headers(resp, host_cfg, host_cfg.reverse_rules, client_base,
                                      server_name)
    headers += [(b"Upgrade", got), (b"Connection", b"Upgrade")]
    return join_head(status_line(101, resp.reason or None), headers), headers


@dataclass(slots=True)
class TunnelSpec:
    """What a worker hands the listener with the client connection after a 101."""

    upstream: socket.socket  # non-blocking; an SSLSocket for https:// and wss://
    leftover: bytes  # upstream bytes that came right after the 101 head
    idle_timeout: float


def idle_timeout(host_cfg: HostConfig, backend_timeout: float) -> float:
    return host_cfg.websocket_idle_timeout or max(host_cfg.timeout, backend_timeout)
