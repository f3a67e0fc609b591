"""Inline exchanges: the listener thread forwards a small request itself on a pooled
upstream connection and hands it to a worker the moment it would have to wait on
anything else (proxympm/mpm/listener.py, Exchange.start_inline).

Every request after the first on a keep-alive upstream takes that path, so these
tests first pool a connection, then check that what happens next is what the worker
path has always done: timeouts answer 504 on time, big responses reach slow readers
whole, broken answers are 502 and never pooled, a client that leaves mid-exchange
costs nobody else anything.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.support.backend import Backend
from tests.support.rawhttp import RawClient, request_bytes
from tests.support.scripted_upstream import Script, ScriptedUpstream, once
from tests.support.servers import Proxy

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
ProxyFactory = Callable[..., Proxy]


def test_silent_upstream_on_a_pooled_connection_is_504_on_time(
        proxympm: ProxyFactory) -> None:
    up = ScriptedUpstream(answers={b"/stall": Script([(4.0, OK)])}).start()
    try:
        proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{u}/" timeout=1 retry=0\n',
                         u=up.port)
        with RawClient(proxy.port, timeout=10) as c:
            assert c.request("GET", "/first").status == 200  # pools the connection
            t0 = time.monotonic()
            r = c.request("GET", "/stall")
            elapsed = time.monotonic() - t0
            assert r.status == 504
            assert 0.9 <= elapsed < 2.5, elapsed
            # The client connection stays usable; the silent upstream one is not pooled.
            assert c.request("GET", "/after").status == 200
        assert up.connections_accepted == 2
        assert "Traceback" not in proxy.error_log()
    finally:
        up.stop()


def test_answers_after_a_pooled_exchange_are_parsed_strictly(
        proxympm: ProxyFactory) -> None:
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nok\n"
    up = ScriptedUpstream(answers={b"/bad": once(bad)}).start()
    try:
        proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{u}/" timeout=3\n', u=up.port)
        with RawClient(proxy.port) as c:
            assert c.request("GET", "/first").status == 200
            assert c.request("GET", "/bad").status == 502
        with RawClient(proxy.port) as c:
            assert c.request("GET", "/again").status == 200
        # The connection that carried the bad answer was dropped, not pooled.
        assert up.connections_accepted == 2
    finally:
        up.stop()


def test_big_response_on_a_pooled_connection_reaches_a_slow_reader(
        proxympm: ProxyFactory, backend: Backend) -> None:
    size = 3 << 20  # far past what an inline exchange spools: a worker finishes it
    proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{b}/"\n', b=backend.port)
    with RawClient(proxy.port) as c:
        assert c.request("GET", "/status/200").status == 200
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        c.send(request_bytes("GET", f"/bytes/{size}", f"127.0.0.1:{proxy.port}"))
        time.sleep(0.3)  # let the proxy fill the client's window before we read
        r = c.read_response()
        assert r.status == 200 and r.complete and len(r.body) == size
        assert c.request("GET", "/status/200").status == 200
    assert backend.connections_accepted == 1  # the pooled connection carried all three


def test_client_leaving_mid_exchange_costs_nobody_else(
        proxympm: ProxyFactory, backend: Backend) -> None:
    proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{b}/"\nThreadsPerChild 2\n'
                     "MaxRequestWorkers 2\n", b=backend.port)
    for _ in range(6):
        c = RawClient(proxy.port)
        assert c.request("GET", "/status/200").status == 200
        c.send(request_bytes("GET", "/slow/0.5", f"127.0.0.1:{proxy.port}"))
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # reset while the upstream is still thinking
    with RawClient(proxy.port) as c:
        for _ in range(5):
            r = c.request("GET", "/status/200")
            assert r.status == 200 and r.complete
    time.sleep(0.8)  # the abandoned exchanges finish upstream meanwhile
    with RawClient(proxy.port) as c:
        assert c.request("GET", "/status/200").status == 200
    assert "Traceback" not in proxy.error_log()


def test_idle_pooled_connection_that_sends_bytes_is_closed_at_once(
        proxympm: ProxyFactory) -> None:
    """An idle pooled connection stays in the listener's poller: bytes it should not
    have sent are seen as they come, and the connection is closed then, not when a
    request would next have gone out on it."""
    junk = Script([(0.0, OK), (0.2, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")])
    up = ScriptedUpstream(answers={b"/second": junk}).start()
    try:
        proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{u}/"\n', u=up.port)
        with RawClient(proxy.port) as c:
            assert c.request("GET", "/first").status == 200  # a worker connects
            assert c.request("GET", "/second").status == 200  # inline, then pooled
            assert up.wait_closed(1, 3.0)  # closed by the proxy with nobody asking
            r = c.request("GET", "/third")
            assert r.status == 200 and r.body == b"ok\n"
            assert c.request("GET", "/fourth").status == 200
        assert up.connections_accepted == 2  # the fresh one was pooled and reused
        assert "Traceback" not in proxy.error_log()
    finally:
        up.stop()


def test_idle_pooled_connection_closed_by_the_backend_is_never_used(
        proxympm: ProxyFactory) -> None:
    """The backend closes a keep-alive connection while it is idle in the pool: the
    listener sees the EOF, so the next request goes out on a fresh connection at
    once, without the failed first try that a dead pooled connection costs."""
    up = ScriptedUpstream(answers={b"/second": Script([(0.0, OK)], close=True)}).start()
    try:
        proxy = proxympm('LogLevel info\nProxyPass "/" "http://127.0.0.1:{u}/"\n',
                         u=up.port)
        with RawClient(proxy.port) as c:
            assert c.request("GET", "/first").status == 200
            assert c.request("GET", "/second").status == 200  # then the backend closes
            time.sleep(0.5)
            assert c.request("GET", "/third").status == 200
            assert c.request("GET", "/fourth").status == 200
        assert up.connections_accepted == 2
        log = proxy.error_log()
        assert "retrying on a fresh one" not in log, log
        assert "Traceback" not in log
    finally:
        up.stop()


def test_head_and_204_on_a_pooled_connection_are_framed_as_without_a_body(
        proxympm: ProxyFactory, backend: Backend) -> None:
    """The listener sends a whole small response itself: a HEAD answer keeps the
    Content-Length its GET would have and carries no body, a 204 has neither, and
    the next response on the connection starts where it should."""
    proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{b}/"\n', b=backend.port)
    with RawClient(proxy.port) as c:
        assert c.request("GET", "/status/200").status == 200  # pools the connection
        r = c.request("HEAD", "/bytes/5000")
        assert r.status == 200 and r.header("Content-Length") == "5000" and r.body == b""
        r = c.request("GET", "/status/204")
        assert r.status == 204 and r.header("Content-Length") is None and r.body == b""
        r = c.request("GET", "/bytes/10")
        assert r.status == 200 and r.header("Content-Length") == "10" and len(r.body) == 10
    assert backend.connections_accepted == 1  # all of it inline, on the pooled one
