"""A streamed request body (requestbuffering=off) is read under RequestReadTimeout's
body stage, as httpd's mod_reqtimeout bounds every read of a request body: a client
that stalls mid-body gets 408 and a closed connection after the body timeout (not
after ProxyTimeout), and the upstream connection, which saw half a request, is
closed; MinRate moves the deadline out for a client that keeps sending."""

from __future__ import annotations

import socket
import threading
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


def test_a_body_timeout_after_the_answer_began_aborts_the_connection(
    proxympm: Callable[..., Proxy]
) -> None:
    """An upstream that answers before it reads the body (its head reaches the
    client while the body is still being sent): when the client then stalls, the
    answer already on the wire cannot become a 408; the connection is cut."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(10)
    done = threading.Event()

    def upstream() -> None:
        conn, _ = lsock.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf and (data := conn.recv(65536)):
                buf += data
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            time.sleep(0.5)  # not reading: the proxy's send blocks and it reads the answer
            conn.settimeout(10)
            while not done.is_set():
                try:
                    if not conn.recv(1 << 20):
                        return
                except OSError:
                    return

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    big = 8 << 20
    try:
        proxy = proxympm('RequestReadTimeout body=2\nProxyTimeout 30\n'
                         'ProxyPass "/up" "http://127.0.0.1:{u}/up" requestbuffering=off '
                         'flushpackets=on\n', u=lsock.getsockname()[1])
        with RawClient(proxy.port, timeout=15) as client:
            client.send(HEAD % (big + 1000) + b"a" * big)  # then nothing more
            resp = client.read_response("POST")
            assert resp.status == 200 and not resp.complete, resp
            assert resp.body == b""
    finally:
        done.set()
        thread.join(10)
        lsock.close()
