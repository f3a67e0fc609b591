"""Connection reuse at both ends, pipelining, and the client keep-alive limits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import requests

from tests.support.backend import Backend, pattern
from tests.support.net import curl
from tests.support.rawhttp import RawClient, request_bytes
from tests.support.servers import Proxy

# One serving child, so that one upstream pool sees every request.
ONE_CHILD = """
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4
KeepAliveTimeout {kat}
MaxKeepAliveRequests {mkr}
Timeout 10
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


@pytest.fixture
def make_proxy(proxympm: Callable[..., Proxy], backend: Backend) -> Callable[..., Proxy]:
    def make(kat: float = 5, mkr: int = 100) -> Proxy:
        return proxympm(ONE_CHILD, b=backend.port, kat=kat, mkr=mkr)

    return make


def test_requests_session_reuses_one_connection_at_both_ends(
    make_proxy: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = make_proxy()
    n = 10
    with requests.Session() as s:
        for i in range(n):
            r = s.get(f"{proxy.url}/seq/{i}", timeout=10)
            assert r.status_code == 200
            assert r.json()["target"] == f"/seq/{i}"
        pools = s.get_adapter(proxy.url).poolmanager.pools
        opened = sum(pools[key].num_connections for key in pools.keys())
        assert opened == 1, f"{opened} client connections: the proxy closed the first one"
    assert len(backend.requests) == n
    assert backend.connections_accepted == 1, "upstream connection not reused"
    assert [r.number_on_connection for r in backend.requests] == list(range(1, n + 1))


def test_curl_reuses_connection_and_separate_clients_share_the_pool(
    make_proxy: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = make_proxy()
    urls = [f"{proxy.url}/c{i}" for i in range(4)]
    out_args = [a for u in urls for a in ("-o", "/dev/null", u)]
    r = curl("-w", "%{http_code} %{num_connects}\\n", *out_args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["200 1", "200 0", "200 0", "200 0"]
    for i in range(3):  # separate client connections, one after another
        assert curl("-o", "/dev/null", f"{proxy.url}/sep{i}").returncode == 0
    assert len(backend.requests) == 7
    assert backend.connections_accepted == 1


def test_pipelined_requests_answered_in_order(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy()
    host = f"127.0.0.1:{proxy.port}"
    batch = (
        request_bytes("GET", "/slow/0.5?n=1", host)
        + request_bytes("POST", "/echo", host, body=b"second body")
        + request_bytes("GET", "/third?n=3", host)
    )
    with RawClient(proxy.port) as c:
        c.send(batch)  # all three in one write
        first = c.read_response()
        second = c.read_response("POST")
        third = c.read_response()
    assert first.status == second.status == third.status == 200
    assert json.loads(first.body)["target"] == "/slow/0.5?n=1"
    assert second.body == b"second body"
    assert json.loads(third.body)["target"] == "/third?n=3"


def test_max_keepalive_requests_closes_after_the_limit(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(mkr=3)
    with RawClient(proxy.port) as c:
        for i in range(3):
            r = c.request("GET", f"/k{i}")
            assert r.status == 200
        assert "close" in r.connection_tokens(), r.raw_head
        assert c.closed_by_peer(3)


def test_keepalive_timeout_closes_idle_client(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(kat=1)
    with RawClient(proxy.port) as c:
        assert c.request("GET", "/idle").status == 200
        t0 = time.monotonic()
        assert c.closed_by_peer(6), "idle keep-alive connection never closed"
        waited = time.monotonic() - t0
    assert 0.5 <= waited <= 4, waited


def test_connection_close_from_client_is_honoured(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy()
    with RawClient(proxy.port) as c:
        r = c.request("GET", "/bye", headers=[("Connection", "close")])
        assert r.status == 200
        assert "close" in r.connection_tokens()
        assert c.closed_by_peer(3)


def test_http10_client_gets_unchunked_body_and_close(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy()
    with RawClient(proxy.port) as c:
        c.send(b"GET /chunked/50000 HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.header("Transfer-Encoding") is None, r.raw_head
        assert r.body == b"".join(pattern(50000))
        assert c.closed_by_peer(3)


def test_upstream_close_is_not_reused(
    make_proxy: Callable[..., Proxy], backend: Backend
) -> None:
    """The backend answers /close with Connection: close; the next request must go on a
    fresh upstream connection and succeed."""
    proxy = make_proxy()
    with requests.Session() as s:
        assert s.get(f"{proxy.url}/close", timeout=10).status_code == 200
        for i in range(3):
            assert s.get(f"{proxy.url}/after{i}", timeout=10).status_code == 200
    assert backend.connections_accepted == 2
