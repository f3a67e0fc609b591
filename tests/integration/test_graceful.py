"""Restarts and stops as an operator does them, under load: USR1 graceful restart
loses nothing, a bad new config keeps the old one serving, HUP restart, WINCH
graceful stop with GracefulShutdownTimeout, and the ``-k`` variants.

Every client here talks to 127.0.0.1 only and every loop is bounded in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter

from tests.support.backend import Backend
from tests.support.net import port_accepts
from tests.support.servers import Proxy

Cli = Callable[..., subprocess.CompletedProcess[str]]

CONFIG = """
StartServers 2
ServerLimit 16
ThreadsPerChild 4
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 64
KeepAliveTimeout 5
ProxyPass "/" "http://127.0.0.1:{b}/" timeout=10 retry=0
"""


def _session() -> requests.Session:
    """A keep-alive session that never retries: every failure is counted."""
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=0, pool_connections=1, pool_maxsize=1))
    return s


@dataclass
class Load:
    """Client threads hammering the proxy until ``stop`` is set; every request
    counted, every failure kept with its reason."""

    url: str
    keepalive_threads: int = 4
    new_conn_threads: int = 4
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def _check(self, what: str, s: requests.Session, method: str, path: str,
               body: bytes | None = None, headers: dict[str, str] | None = None) -> None:
        try:
            r = s.request(method, f"{self.url}{path}", data=body, headers=headers, timeout=15)
            good = r.status_code == 200 and (body is None or r.content == body)
            reason = f"{what}: status {r.status_code} body {r.content[:80]!r}"
        except requests.RequestException as exc:
            good, reason = False, f"{what}: {type(exc).__name__}: {exc}"
        with self.lock:
            if good:
                self.ok += 1
            else:
                self.failures.append(f"{time.monotonic():.3f} {reason}")

    def _keepalive(self, n: int) -> None:
        with _session() as s:
            i = 0
            while not self.stop.is_set():
                i += 1
                if i % 3 == 0:
                    self._check("keep-alive POST", s, "POST", "/echo",
                                body=f"body {n} {i}".encode() * 50)
                else:
                    self._check("keep-alive GET", s, "GET", f"/ka/{n}/{i}")

    def _new_conn(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            # half the time the client closes after the response, half the server does
            headers = {"Connection": "close"} if i % 2 else {}
            with _session() as s:
                self._check("new-connection GET", s, "GET", f"/new/{n}/{i}", headers=headers)

    def start(self) -> Load:
        for n in range(self.keepalive_threads):
            self.threads.append(threading.Thread(target=self._keepalive, args=(n,)))
        for n in range(self.new_conn_threads):
            self.threads.append(threading.Thread(target=self._new_conn, args=(n,)))
        for t in self.threads:
            t.daemon = True
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"


def _generation_up(proxy: Proxy, old: set[int], n: int, timeout: float = 15.0) -> set[int]:
    """Wait until ``n`` children that are not in ``old`` run; return them."""
    deadline = time.monotonic() + timeout
    while True:
        new = set(proxy.children()) - old
        if len(new) >= n:
            return new
        assert time.monotonic() < deadline, f"new generation not up: {new}"
        time.sleep(0.05)


def test_ten_graceful_restarts_under_load_lose_nothing(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    assert requests.get(f"{proxy.url}/warm", timeout=10).status_code == 200
    backend.reset()
    load = Load(proxy.url).start()
    try:
        time.sleep(1.0)
        for _ in range(10):
            os.kill(proxy.pid, signal.SIGUSR1)
            time.sleep(1.2)
        time.sleep(1.5)
    finally:
        load.finish()
    assert proxy.running(), proxy.diagnostics()
    assert not load.failures, (f"{len(load.failures)} of {load.ok + len(load.failures)} "
                               "requests failed:\n" + "\n".join(load.failures[:20]))
    assert load.ok > 200, f"only {load.ok} requests in the whole run"
    # every request reached the backend exactly once: nothing was retried or lost
    assert backend.wait_for_requests(load.ok, timeout=5) and len(backend.requests) == load.ok
    assert proxy.error_log().count("AH00493") == 10
    assert "AH00052" not in proxy.error_log(), proxy.error_log()
    # the last generation serves, older ones are gone
    deadline = time.monotonic() + 15
    while len(proxy.children()) != 2:
        assert time.monotonic() < deadline, f"children: {proxy.children()}"
        time.sleep(0.1)
    assert requests.get(f"{proxy.url}/after", timeout=10).status_code == 200


def test_listening_socket_never_refuses_during_restarts(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    """connect() keeps succeeding across graceful and hard restarts."""
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    refused: list[str] = []
    stop = threading.Event()

    def connect_loop() -> None:
        while not stop.is_set():
            if not port_accepts(proxy.port):
                refused.append(f"{time.monotonic():.3f}")
            time.sleep(0.002)

    t = threading.Thread(target=connect_loop, daemon=True)
    t.start()
    try:
        for sig in (signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR1, signal.SIGHUP):
            old = set(proxy.children())
            os.kill(proxy.pid, sig)
            _generation_up(proxy, old, 2)
            time.sleep(0.3)
    finally:
        stop.set()
        t.join(10)
    assert not refused, refused
    assert requests.get(f"{proxy.url}/after", timeout=10).status_code == 200
