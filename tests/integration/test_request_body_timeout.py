"""A streamed request body (requestbuffering=off) is read under RequestReadTimeout's
body stage, as httpd's mod_reqtimeout bounds every read of a request body: a client
that stalls mid-body gets 408 and a closed connection after the body timeout (not
after ProxyTimeout), and the upstream connection, which saw half a request, is
closed; MinRate moves the deadline out for a client that keeps sending."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.backend import Backend
from tests.support.rawhttp import RawClient
from tests.support.servers import Proxy

CONF = """
LogFormat "%>s %r" short
CustomLog {access_log} short
Timeout 30
ProxyTimeout 30
RequestReadTimeout header=5 body=1,MinRate=100000
ProxyPass "/up" "http://127.0.0.1:{b}/up" requestbuffering=off
"""
FIRST = 100_000  # past the listener's in-memory read-ahead: the worker streams the rest
HEAD = b"POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: %d\r\n\r\n"


def test_stalled_streamed_body_gets_408_after_the_body_timeout(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONF, b=backend.port)
    with RawClient(proxy.port, timeout=10) as client:
        client.send(HEAD % (FIRST * 3) + b"a" * FIRST)  # then nothing more
        t0 = time.monotonic()
        resp = client.read_response("POST")
        waited = time.monotonic() - t0
        assert resp.status == 408, resp
        assert "close" in resp.connection_tokens()
        assert client.closed_by_peer(5)
    # the body stage (1 s, plus 1 s per 100 kB received), not ProxyTimeout's 30 s
    assert waited < 10, waited
    proxy.wait_for_log("access", r"^408 POST /up HTTP/1.1$")
    # the upstream got half a request: its connection is closed, never pooled
    deadline = time.monotonic() + 5
    while backend.stats()["open_connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.stats()["open_connections"] == 0
    assert backend.stats()["connections_accepted"] == 1 and not backend.requests


def test_min_rate_keeps_a_steady_streamed_body_going(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    """Each 60 kB piece buys 0.6 s: five pieces 0.4 s apart take 2 s, twice the
    body timeout, and the request goes through."""
    proxy = proxympm(CONF, b=backend.port)
    piece = 60_000
    with RawClient(proxy.port, timeout=10) as client:
        client.send(HEAD % (FIRST + 5 * piece) + b"a" * FIRST)
        for _ in range(5):
            time.sleep(0.4)
            client.send(b"b" * piece)
        resp = client.read_response("POST")
        assert resp.status == 200, resp
    (req,) = backend.wait_for_requests(1)
    assert req.target == "/up" and req.body_length == FIRST + 5 * piece
