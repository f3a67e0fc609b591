"""The event MPM's promise (Apache's event MPM docs): idle keep-alive connections are
parked with the listener thread, not held by workers. One child with
ThreadsPerChild 4 holds 2,000 idle keep-alive clients and still answers a new client
at once, without growing beyond its 4 workers and 1 listener.

Thread accounting (Python 3.11 does not name OS threads, so threads are counted, not
identified): a serving child has ThreadsPerChild workers + 1 listener thread, and
either runs the listener on its main thread (5 threads) or keeps a separate main
thread (6 threads). Anything else — and any growth while connections are held —
fails the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from tests.support import procs
from tests.support.backend import Backend
from tests.support.net import IdleConnections, raise_nofile
from tests.support.rawhttp import request_bytes
from tests.support.servers import Proxy

IDLE = 2000
THREADS_PER_CHILD = 4

CONF = f"""
StartServers 1
ServerLimit 1
ThreadsPerChild {THREADS_PER_CHILD}
MaxRequestWorkers {THREADS_PER_CHILD}
MinSpareThreads 1
MaxSpareThreads 16
KeepAliveTimeout 100
MaxKeepAliveRequests 0
Timeout 30
ProxyPass "/" "http://127.0.0.1:{{b}}/"
"""


def test_one_child_holds_2000_idle_keepalive_connections(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    # Both we and the proxy (which inherits our limits) need > 2,000 descriptors.
    assert raise_nofile(IDLE * 2 + 512) >= IDLE + 256
    proxy = proxympm(CONF, b=backend.port)
    assert requests.get(f"{proxy.url}/warm", timeout=10).status_code == 200
    child = proxy.serving_child()
    threads_before = len(procs.thread_ids(child))
    assert threads_before in (THREADS_PER_CHILD + 1, THREADS_PER_CHILD + 2), (
        f"child {child} runs {threads_before} threads: {procs.thread_names(child)}")

    idle = IdleConnections(proxy.port, "/idle")
    try:
        t0 = time.monotonic()
        held = idle.open(IDLE, batch=64, timeout=90)
        setup = time.monotonic() - t0
        assert held == IDLE, f"only {held} held after {setup:.1f}s: {idle.failures}"

        t1 = time.monotonic()
        r = requests.get(f"{proxy.url}/newcomer", timeout=10)
        latency = time.monotonic() - t1
        assert r.status_code == 200 and r.json()["target"] == "/newcomer"
        assert latency < 2.0, f"new client waited {latency:.2f}s behind idle connections"

        assert idle.still_open() == IDLE, "the proxy dropped idle keep-alive connections"
        assert child in proxy.children(), "the serving child died or was replaced"
        threads_after = len(procs.thread_ids(child))
        assert threads_after == threads_before, (
            f"threads grew {threads_before} -> {threads_after} with {IDLE} idle connections")
        assert procs.fd_count(child) >= IDLE, "the child is not the one holding them"

        # The parked connections are really alive: wake 20 of them up.
        for sock in idle.held[:: IDLE // 20]:
            sock.settimeout(10)
            sock.sendall(request_bytes("GET", "/again", f"127.0.0.1:{proxy.port}"))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 "), "parked connection not served"
    finally:
        idle.close()
