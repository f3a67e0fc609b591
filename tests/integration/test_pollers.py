"""The same listener on every poller this machine has: epoll, and the portable
selectors fallback (kqueue runs on BSD/macOS only and is not reachable here)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import socket
import time
from collections.abc import Callable

import pytest
import requests

from tests.support.backend import Backend, pattern_sha256
from tests.support.net import IdleConnections, raise_nofile
from tests.support.rawhttp import RawClient, request_bytes
from tests.support.servers import Proxy

CONF = """
StartServers 1
ServerLimit 1
ThreadsPerChild 2
MaxRequestWorkers 2
LogLevel info
KeepAliveTimeout 30
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


@pytest.fixture(params=["epoll", "selectors"])
def proxy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
          proxympm: Callable[..., Proxy], backend: Backend) -> Proxy:
    monkeypatch.setenv("PROXYMPM_POLLER", request.param)
    p = proxympm(CONF, b=backend.port)
    p.wait_for_log("error", rf"worker threads on {request.param}")
    return p


def test_keepalive_pipelining_and_idle_connections(proxy: Proxy, backend: Backend) -> None:
    raise_nofile(2048)
    with RawClient(proxy.port) as c:
        host = f"127.0.0.1:{proxy.port}"
        c.send(b"".join(request_bytes("GET", f"/p{i}", host) for i in range(3)))
        assert [c.read_response().status for _ in range(3)] == [200, 200, 200]
        assert c.request("GET", "/again").status == 200
    idle = IdleConnections(proxy.port, "/idle")
    try:
        assert idle.open(300, batch=32, timeout=60) == 300
        t0 = time.monotonic()
        assert requests.get(f"{proxy.url}/fresh", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 2.0
        assert idle.still_open() == 300
    finally:
        idle.close()


def test_write_completion_to_a_slow_reader(proxy: Proxy) -> None:
    # The response is bigger than the socket buffers: the tail is written as the
    # client drains it, while another client is served meanwhile.
    n = 8 << 20
    with RawClient(proxy.port, timeout=30) as slow:
        slow.send(request_bytes("GET", f"/bytes/{n}", f"127.0.0.1:{proxy.port}"))
        time.sleep(0.5)
        assert requests.get(f"{proxy.url}/meanwhile", timeout=5).status_code == 200
        r = slow.read_response()
        assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == pattern_sha256(n)


@pytest.mark.parametrize("poller", ["epoll", "selectors"])
def test_queued_requests_wait_without_a_thread_and_may_leave(
    poller: str, monkeypatch: pytest.MonkeyPatch, proxympm: Callable[..., Proxy],
    backend: Backend,
) -> None:
    """A capped plain backend: more requests queue than the child has threads; one
    whose client hangs up leaves the queue (EPOLLRDHUP, or a poll of each queued
    client where the poller cannot wait for a hang-up alone); the rest are served."""
    monkeypatch.setenv("PROXYMPM_POLLER", poller)
    proxy = proxympm(CONF.replace('ProxyPass "/" "http://127.0.0.1:{b}/"', """
ProxyPass /metrics !
<Location "/metrics">
    SetHandler metrics
</Location>
ProxyPass /c/ http://127.0.0.1:{b}/ max=1 acquire=30s
"""), b=backend.port)
    group = f"http://127.0.0.1:{backend.port}"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        held = pool.submit(requests.get, f"{proxy.url}/c/slow/1", timeout=20)
        backend.wait_for_requests(1)
        waiting = [pool.submit(requests.get, f"{proxy.url}/c/w{i}", timeout=20)
                   for i in range(3)]
        leaves = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
        leaves.sendall(b"GET /c/gone HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while proxy.queued(group) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        leaves.close()
        while proxy.queued(group) > 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert held.result().status_code == 200
        assert [f.result().status_code for f in waiting] == [200] * 3
    assert "/gone" not in [q.path for q in backend.requests]
    assert backend.max_concurrent == 1
