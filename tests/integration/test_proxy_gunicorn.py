"""gunicorn (sync workers, which close every connection) serving a WSGI app behind
proxympm, driven by requests."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import pytest
import requests

from tests.support.backend import pattern, pattern_sha256
from tests.support.servers import Gunicorn, Proxy

CONF = """
Timeout 30
ProxyPass "/wsgi/" "http://127.0.0.1:{g}/" timeout=10 retry=1
ProxyPass "/" "http://127.0.0.1:{g}/"
"""


@pytest.fixture
def stack(
    gunicorn_server: Callable[..., Gunicorn], proxympm: Callable[..., Proxy]
) -> tuple[Gunicorn, Proxy]:
    g = gunicorn_server(workers=2, worker_class="sync")
    return g, proxympm(CONF, g=g.port)


def test_sequential_requests_through_closing_upstream(stack: tuple[Gunicorn, Proxy]) -> None:
    g, proxy = stack
    pids = set()
    with requests.Session() as s:
        for i in range(20):
            r = s.get(f"{proxy.url}/wsgi/item/{i}?x={i}", timeout=10)
            assert r.status_code == 200, r.text
            echo = r.json()
            assert echo["path"] == f"/item/{i}" and echo["query"] == f"x={i}"
            assert echo["headers"]["X-Forwarded-For"] == "127.0.0.1"
            pids.add(echo["pid"])
    assert pids <= set(g.workers())


def test_two_sync_workers_serve_in_parallel(stack: tuple[Gunicorn, Proxy]) -> None:
    g, proxy = stack
    answers: list[dict[str, object]] = []

    def call() -> None:
        answers.append(requests.get(f"{proxy.url}/slow/1", timeout=10).json())

    t0 = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    elapsed = time.monotonic() - t0
    assert len(answers) == 2
    assert {a["pid"] for a in answers} == set(g.workers())
    assert elapsed < 1.9, f"two 1 s requests took {elapsed:.2f}s: not in parallel"


def test_upload_and_download(stack: tuple[Gunicorn, Proxy]) -> None:
    _, proxy = stack
    body = b"".join(pattern(10 << 20))
    r = requests.post(f"{proxy.url}/upload", data=body, timeout=30)
    assert r.status_code == 200
    assert r.json()["body_length"] == len(body)
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    r = requests.get(f"{proxy.url}/bytes/{10 << 20}", timeout=30)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == pattern_sha256(10 << 20)


def test_gunicorn_worker_killed_mid_service(stack: tuple[Gunicorn, Proxy]) -> None:
    """gunicorn replaces a dead worker; the proxy keeps serving (new connections)."""
    import os
    import signal

    g, proxy = stack
    victim = g.workers()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    ok = 0
    while ok < 5:
        assert time.monotonic() < deadline, "service did not recover"
        r = requests.get(f"{proxy.url}/wsgi/recover", timeout=10)
        ok = ok + 1 if r.status_code == 200 else 0
        time.sleep(0.1)
