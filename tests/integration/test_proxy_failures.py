"""Upstream failures and the statuses they map to: 503 (+ retry), 504, 502, and a
response body cut short (the client must see the cut, never a hang)."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from tests.support.backend import Backend
from tests.support.net import curl
from tests.support.rawhttp import RawClient
from tests.support.servers import Proxy

CONF = """
Timeout 10
ProxyPass "/dead/" "http://127.0.0.1:{dead}/" retry={retry}
ProxyPass "/app/" "http://127.0.0.1:{b}/" timeout=2 retry=5
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


def _proxy(
    proxympm: Callable[..., Proxy], backend: Backend, dead: int, retry: int = 5
) -> Proxy:
    return proxympm(CONF, b=backend.port, dead=dead, retry=retry)


def test_backend_down_is_503_and_retry_is_honoured(
    proxympm: Callable[..., Proxy],
    backend: Backend,
    backend_factory: Callable[..., Backend],
    free_port: Callable[[], int],
) -> None:
    dead_port = free_port()
    retry = 4
    proxy = _proxy(proxympm, backend, dead_port, retry)
    t0 = time.monotonic()
    assert requests.get(f"{proxy.url}/dead/x", timeout=10).status_code == 503
    revived = backend_factory("revived", port=dead_port)
    # Within `retry` the member stays in error: 503 again, and no connect attempt.
    assert requests.get(f"{proxy.url}/dead/y", timeout=10).status_code == 503
    assert time.monotonic() - t0 < retry - 1, "test too slow to check the retry window"
    assert revived.connections_accepted == 0, "proxy connected during the retry window"
    # Other routes are not affected.
    assert requests.get(f"{proxy.url}/fine", timeout=10).status_code == 200
    time.sleep(max(0.0, t0 + retry + 0.5 - time.monotonic()))
    r = requests.get(f"{proxy.url}/dead/z", timeout=10)
    assert r.status_code == 200
    assert r.json()["backend"] == "revived"
    assert revived.connections_accepted == 1


def test_slow_backend_is_504_after_timeout(
    proxympm: Callable[..., Proxy], backend: Backend, free_port: Callable[[], int]
) -> None:
    proxy = _proxy(proxympm, backend, free_port())
    t0 = time.monotonic()
    r = requests.get(f"{proxy.url}/app/slow/6", timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    assert 1.5 <= elapsed <= 4.5, f"504 after {elapsed:.2f}s, timeout=2"
    # A read timeout does not put the member in error: the next request is served.
    assert requests.get(f"{proxy.url}/app/ok", timeout=10).status_code == 200


def test_invalid_upstream_response_is_502(
    proxympm: Callable[..., Proxy], backend: Backend, free_port: Callable[[], int]
) -> None:
    proxy = _proxy(proxympm, backend, free_port())
    assert requests.get(f"{proxy.url}/garbage", timeout=10).status_code == 502
    assert requests.get(f"{proxy.url}/truncated", timeout=10).status_code == 502
    # The bad upstream connections were not pooled: a good request still works.
    r = requests.get(f"{proxy.url}/good", timeout=10)
    assert r.status_code == 200 and r.json()["target"] == "/good"


def test_truncated_body_is_visible_to_the_client(
    proxympm: Callable[..., Proxy], backend: Backend, free_port: Callable[[], int]
) -> None:
    """The upstream promises 1000 bytes, sends 500 and closes. The client must get a
    502 (if the proxy noticed before sending the head), a closed connection without a
    response, or a response whose framing is unfinished when the connection closes:
    never a hang, never a body that looks complete."""
    proxy = _proxy(proxympm, backend, free_port())
    t0 = time.monotonic()
    with RawClient(proxy.port, timeout=8) as c:
        try:
            r = c.request("GET", "/half")
        except ConnectionError:  # closed without any response: the client sees the cut
            r = None
        else:
            if r.status == 200:
                assert not r.complete, f"well-framed short body ({r.framing}): {r.raw_head!r}"
                assert c.eof, "connection left open after a cut body"
            else:
                assert r.status == 502
    assert time.monotonic() - t0 < 5
    if r is not None and r.status == 200:
        res = curl("-o", "/dev/null", f"{proxy.url}/half")
        assert res.returncode == 18, (res.returncode, res.stderr)  # partial file

