"""Dynamic children: the arbiter forks children while idle threads are below
MinSpareThreads and retires them (gracefully, one a second) above MaxSpareThreads,
within MaxRequestWorkers / ThreadsPerChild; a crash-looping child is backed off.

Clients talk to 127.0.0.1 only and every loop is bounded in time.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable

import requests

from tests.support.backend import Backend
from tests.support.servers import Proxy

SCALING = """
StartServers 1
ServerLimit 6
ThreadsPerChild 2
MaxRequestWorkers 12
MinSpareThreads 2
MaxSpareThreads 4
ProxyPass "/" "http://127.0.0.1:{b}/" timeout=10 retry=0
"""


def test_scales_up_under_load_and_down_after(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(SCALING, b=backend.port)
    assert requests.get(f"{proxy.url}/warm", timeout=10).status_code == 200
    time.sleep(1.5)
    assert len(proxy.children()) == 1, "idle 2 is within MinSpare 2 .. MaxSpare 4"
    stop = threading.Event()
    failures: list[str] = []
    ok = [0]
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.get(f"{proxy.url}/slow/0.3", timeout=15)
                    good, why = r.status_code == 200, f"status {r.status_code}"
                except requests.RequestException as exc:
                    good, why = False, repr(exc)
                with lock:
                    if good:
                        ok[0] += 1
                    else:
                        failures.append(why)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    peak = 1
    try:
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline and peak < 6:
            peak = max(peak, len(proxy.children()))
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert peak >= 4, f"only {peak} children under 8 busy clients"
    assert len(proxy.children()) <= 6, "more children than MaxRequestWorkers/TPC"
    # Load gone: one child retired a second until idle <= MaxSpare 4 (2 children).
    deadline = time.monotonic() + 15
    while len(proxy.children()) > 2:
        assert time.monotonic() < deadline, f"still {len(proxy.children())} children"
        time.sleep(0.2)
    assert "retiring child" in proxy.error_log()
    assert not failures, failures[:10]
    assert ok[0] > 20
    assert requests.get(f"{proxy.url}/after", timeout=10).status_code == 200
    assert "AH00052" not in proxy.error_log(), "a retired child must exit cleanly"


def test_spawn_rate_doubles_and_stops_at_max_request_workers(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    """MinSpareThreads above what MaxRequestWorkers allows: 1, 2, 4 ... up to the cap,
    then AH00484 once."""
    proxy = proxympm("""
StartServers 1
ServerLimit 8
ThreadsPerChild 1
MaxRequestWorkers 7
MinSpareThreads 50
MaxSpareThreads 60
ProxyPass "/" "http://127.0.0.1:{b}/"
""", b=backend.port)
    seen = [1]
    deadline = time.monotonic() + 8
    while len(proxy.children()) < 7:
        assert time.monotonic() < deadline, f"children: {seen}"
        n = len(proxy.children())
        if n != seen[-1]:
            seen.append(n)
        time.sleep(0.05)
    time.sleep(1.5)
    assert len(proxy.children()) == 7, "never beyond MaxRequestWorkers / ThreadsPerChild"
    # 1 -> 2 -> 4 -> 7 (1, 2, then 4 capped at 3): never one child at a time all the way
    assert len(seen) <= 5, seen
    proxy.wait_for_log("error", "AH00484")
    assert requests.get(f"{proxy.url}/x", timeout=10).status_code == 200


def test_crash_looping_child_is_backed_off(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(SCALING, b=backend.port)
    spawned: list[float] = []
    killed: set[int] = set()
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:  # every child dies at once, as if it crashed
        for kid in proxy.children():
            if kid not in killed:
                killed.add(kid)
                spawned.append(time.monotonic())
                os.kill(kid, signal.SIGKILL)
        time.sleep(0.01)
    gaps = [b - a for a, b in zip(spawned, spawned[1:], strict=False)]
    assert len(spawned) <= 6, f"{len(spawned)} children forked in 9 s of crashes: {gaps}"
    assert gaps and max(gaps) >= 1.8, gaps  # 1, 2, 4 s ...
    log = proxy.error_log()
    backoffs = [int(x) for x in re.findall(r"backing off (\d+)s before respawn", log)]
    assert backoffs[:3] == [1, 2, 4], log
    # once the children live again, service resumes by itself
    new = proxy.wait_children(1, timeout=20, exclude=tuple(killed))
    assert new
    deadline = time.monotonic() + 10
    while True:
        try:
            if requests.get(f"{proxy.url}/back", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "no service after the crash loop ended"
        time.sleep(0.2)


def test_max_connections_per_child_recycles_without_loss(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(SCALING + "MaxConnectionsPerChild 10\n", b=backend.port)
    first = set(proxy.children())
    seen: set[int] = set(first)
    failures = []
    deadline = time.monotonic() + 20
    n = 0
    while n < 60 and time.monotonic() < deadline:
        n += 1
        try:
            r = requests.get(f"{proxy.url}/n{n}", headers={"Connection": "close"}, timeout=10)
            if r.status_code != 200:
                failures.append(r.status_code)
        except requests.RequestException as exc:
            failures.append(repr(exc))
        seen.update(proxy.children())
    assert n == 60 and not failures, failures
    assert len(seen) >= 4, f"children were not recycled: {seen}"
    assert "AH00052" not in proxy.error_log(), proxy.error_log()
