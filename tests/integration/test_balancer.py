"""balancer:// through a real proxy: distribution, failover, hot standby, max and the
queue, in front of recording backends and a gunicorn sync app."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections import Counter
from collections.abc import Callable

import pytest
import requests

from tests.support.backend import Backend
from tests.support.interval_app import peak_overlap
from tests.support.scripted_upstream import Script, ScriptedUpstream
from tests.support.servers import Proxy

BALANCER = """
Timeout 10
<Proxy "balancer://app">
    BalancerMember "http://127.0.0.1:{a}" loadfactor={fa} {ka}
    BalancerMember "http://127.0.0.1:{b}" loadfactor={fb} {kb}
    BalancerMember "http://127.0.0.1:{c}" loadfactor={fc} {kc}
    ProxySet lbmethod={method} {settings}
</Proxy>
ProxyPass "/app/" "balancer://app/"
ProxyPassReverse "/app/" "balancer://app/"
"""


def _conf(a: int, b: int, c: int, *, method: str = "byrequests", fa: int = 1, fb: int = 1,
          fc: int = 1, ka: str = "", kb: str = "", kc: str = "",
          settings: str = "") -> dict[str, object]:
    return {"a": a, "b": b, "c": c, "method": method, "fa": fa, "fb": fb, "fc": fc,
            "ka": ka, "kb": kb, "kc": kc, "settings": settings}


def _get_many(url: str, n: int, workers: int = 8) -> list[requests.Response]:
    def one(i: int) -> requests.Response:
        with requests.Session() as s:
            return s.get(f"{url}/app/n{i}", timeout=20)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("method", ["byrequests", "bytraffic", "bybusyness", "p2c"])
def test_distribution_follows_loadfactor(
    method: str, proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend]
) -> None:
    a, b, c = (backend_factory(n) for n in "abc")
    proxy = proxympm(BALANCER, **_conf(a.port, b.port, c.port, method=method,
                                       fa=3, fb=2, fc=1))
    responses = _get_many(proxy.url, 600)
    assert all(r.status_code == 200 for r in responses)
    seen = Counter(r.json()["backend"] for r in responses)
    assert sum(seen.values()) == 600
    share = {k: v / 600 for k, v in seen.items()}
    # byrequests is exact (its credit is server-wide); the others follow the weights
    # loosely (they react to what is in flight, or to bytes counted at the end)
    tolerance = 0.02 if method == "byrequests" else 0.12
    assert abs(share["a"] - 3 / 6) <= tolerance, seen
    assert abs(share["b"] - 2 / 6) <= tolerance, seen
    assert abs(share["c"] - 1 / 6) <= tolerance + 0.02, seen
    assert (len(a.requests), len(b.requests), len(c.requests)) == (
        seen["a"], seen["b"], seen["c"])


def test_one_member_down_loses_no_get(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    free_port: Callable[[], int],
) -> None:
    a, c = backend_factory("a"), backend_factory("c")
    dead = free_port()  # nothing listens: connection refused
    proxy = proxympm(BALANCER, **_conf(a.port, dead, c.port, kb="retry=30"))
    responses = _get_many(proxy.url, 200)
    assert [r.status_code for r in responses] == [200] * 200
    assert {r.json()["backend"] for r in responses} == {"a", "c"}
    assert len(a.requests) + len(c.requests) == 200
    assert "disabling worker" in proxy.error_log()
    # a POST fails over too when the connection was refused: nothing was sent
    proxy2 = proxympm(BALANCER, **_conf(dead, a.port, c.port, settings="maxattempts=2"))
    for i in range(6):
        r = requests.post(f"{proxy2.url}/app/p{i}", data=b"x" * 100, timeout=10)
        assert r.status_code == 200


def test_post_is_not_replayed_after_the_member_took_it(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    dying = ScriptedUpstream(default=Script([], close=True)).start()  # reads, then hangs up
    try:
        a, c = backend_factory("a"), backend_factory("c")
        proxy = proxympm(BALANCER, **_conf(dying.port, a.port, c.port,
                                           fa=100, fb=1, fc=1))
        # the first request of a child goes to the heaviest member: the dying one
        r = requests.post(f"{proxy.url}/app/post", data=b"payload", timeout=10)
        assert r.status_code == 502
        assert len(dying.requests) == 1
        assert len(a.requests) + len(c.requests) == 0, "the POST was sent again"
        # a GET that met the same fate goes to another member, unseen by the client
        r = requests.get(f"{proxy.url}/app/get", timeout=10)
        assert r.status_code == 200
        assert len(dying.requests) == 2
        assert len(a.requests) + len(c.requests) == 1
    finally:
        dying.stop()


def test_hot_standby_only_when_the_others_are_down(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    free_port: Callable[[], int],
) -> None:
    a, b, standby = (backend_factory(n) for n in ("a", "b", "standby"))
    proxy = proxympm(BALANCER, **_conf(a.port, b.port, standby.port, kc="status=+H"))
    assert all(r.status_code == 200 for r in _get_many(proxy.url, 60))
    assert len(standby.requests) == 0
    assert len(a.requests) == len(b.requests) == 30
    a.stop()
    b.stop()
    responses = _get_many(proxy.url, 30, workers=1)
    assert [r.status_code for r in responses] == [200] * 30
    assert {r.json()["backend"] for r in responses} == {"standby"}


def test_all_members_down_is_503_with_retry_after(
    proxympm: Callable[..., Proxy], free_port: Callable[[], int]
) -> None:
    proxy = proxympm(BALANCER, **_conf(free_port(), free_port(), free_port(),
                                       ka="retry=20", kb="retry=20", kc="retry=20",
                                       settings="forcerecovery=Off"))
    first = requests.get(f"{proxy.url}/app/x", timeout=10)
    assert first.status_code == 503
    assert first.headers.get("Retry-After") is not None
    second = requests.get(f"{proxy.url}/app/y", timeout=10)
    assert second.status_code == 503
    assert 1 <= int(second.headers["Retry-After"]) <= 20
    assert "All workers are in error state" in proxy.error_log()


def test_max_caps_a_member_and_the_queue_waits(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    backend = backend_factory("only")
    conf = """
Timeout 10
ThreadsPerChild 8
MaxRequestWorkers 8
<Proxy balancer://one>
    BalancerMember http://127.0.0.1:{b} max=2
    ProxySet timeout=10
</Proxy>
ProxyPass /app/ balancer://one/
"""
    proxy = proxympm(conf, b=backend.port)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(
            lambda i: requests.get(f"{proxy.url}/app/slow/0.5", timeout=20).status_code,
            range(6)))
    assert codes == [200] * 6
    assert backend.max_concurrent == 2
    assert time.monotonic() - t0 >= 1.4  # three rounds of two


def test_gunicorn_behind_max_never_sees_more_than_max(
    proxympm: Callable[..., Proxy], gunicorn_server: Callable[..., object],
) -> None:
    gun = gunicorn_server(app="tests.support.interval_app:app", workers=2)
    conf = """
Timeout 20
ThreadsPerChild 8
MaxRequestWorkers 8
<Proxy balancer://gun>
    BalancerMember http://127.0.0.1:{g} max=2
    ProxySet timeout=15
</Proxy>
ProxyPass /app/ balancer://gun/
"""
    proxy = proxympm(conf, g=gun.port)  # type: ignore[attr-defined]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(
            lambda i: requests.get(f"{proxy.url}/app/slow/1", timeout=30), range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    intervals = [(float(r.headers["X-App-Start"]), float(r.headers["X-App-End"]))
                 for r in responses]
    assert peak_overlap(intervals) <= 2
    assert len({r.headers["X-App-Pid"] for r in responses}) == 2


def test_queue_timeout_is_503_with_retry_after(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    backend = backend_factory("only")
    conf = """
Timeout 10
<Proxy balancer://one>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=1
</Proxy>
ProxyPass /app/ balancer://one/
"""
    proxy = proxympm(conf, b=backend.port)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(requests.get, f"{proxy.url}/app/slow/3", timeout=10)
        time.sleep(0.3)
        t0 = time.monotonic()
        r = requests.get(f"{proxy.url}/app/fast", timeout=10)
        waited = time.monotonic() - t0
        assert slow.result().status_code == 200
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert 0.8 <= waited < 2.5
    assert len(backend.requests) == 1


def test_client_that_leaves_the_queue_is_dropped(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    backend = backend_factory("only")
    conf = """
Timeout 10
<Proxy balancer://one>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=10
</Proxy>
ProxyPass /app/ balancer://one/
"""
    proxy = proxympm(conf, b=backend.port)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(requests.get, f"{proxy.url}/app/slow/1.5", timeout=10)
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"GET /app/gone HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)  # queued behind the slow one, then the client leaves
        assert slow.result().status_code == 200
    assert requests.get(f"{proxy.url}/app/after", timeout=10).status_code == 200
    paths = [q.path for q in backend.requests]
    assert paths == ["/slow/1.5", "/after"], paths
    assert "queued" not in proxy.stderr()


def test_failonstatus_failontimeout_and_member_timeouts(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    a, b = backend_factory("a"), backend_factory("b")
    conf = """
Timeout 10
<Proxy "balancer://fs">
    BalancerMember "http://127.0.0.1:{a}" retry=30
    BalancerMember "http://127.0.0.1:{b}" retry=30 timeout=1
    ProxySet failonstatus=503 failontimeout=On forcerecovery=Off
</Proxy>
<Proxy "balancer://ttl">
    BalancerMember "http://127.0.0.1:{a}" ttl=1
</Proxy>
ProxyPass "/fs/" "balancer://fs/"
ProxyPass "/ttl/" "balancer://ttl/"
"""
    proxy = proxympm(conf, a=a.port, b=b.port)
    # byrequests alternates a, b: a answers 503, which still goes to the client
    first = requests.get(f"{proxy.url}/fs/status/503", timeout=10)
    assert first.status_code == 503
    assert "Retry-After" not in first.headers  # the member's own answer, relayed
    assert [q.path for q in a.requests] == ["/status/503"]
    proxy.wait_for_log("error", r"into error state due to status code 503")
    # a is in error now: b serves, and b's own timeout=1 cuts a slow answer
    t0 = time.monotonic()
    slow = requests.get(f"{proxy.url}/fs/slow/3", timeout=10)
    # (a GET that timed out fails over, as in httpd; nobody is left: 503)
    assert slow.status_code == 503 and time.monotonic() - t0 < 2.5
    assert [q.path for q in b.requests] == ["/slow/3"]
    # failontimeout put b in error too; with forcerecovery=Off that is a 503
    r = requests.get(f"{proxy.url}/fs/x", timeout=10)
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 28
    # ttl: an idle pooled connection older than ttl is not reused
    a_conns = a.connections_accepted
    with requests.Session() as s:
        assert s.get(f"{proxy.url}/ttl/1", timeout=10).status_code == 200
        assert s.get(f"{proxy.url}/ttl/2", timeout=10).status_code == 200
        assert a.connections_accepted == a_conns + 1  # reused at once
        time.sleep(1.3)
        assert s.get(f"{proxy.url}/ttl/3", timeout=10).status_code == 200
    assert a.connections_accepted == a_conns + 2
