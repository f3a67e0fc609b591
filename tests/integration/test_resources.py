"""Resources stay bounded: 10,000 idle keep-alive connections, and a soak of mixed
traffic with random client aborts, each followed by a check that the children's
memory, descriptors and threads come back to where they started.

The soak runs ``PROXYMPM_SOAK_SECONDS`` (default 20 s, the suite's budget); run it for
ten minutes with ``PROXYMPM_SOAK_SECONDS=600 python -m pytest -k soak``. Figures are
printed (``-s``) so a long run can be recorded.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
import requests

from tests.support import procs
from tests.support.backend import Backend, pattern
from tests.support.net import IdleConnections, raise_nofile
from tests.support.rawhttp import RawClient, request_bytes
from tests.support.servers import Proxy

ProxyFactory = Callable[..., Proxy]

IDLE = 10_000
SOAK_SECONDS = float(os.environ.get("PROXYMPM_SOAK_SECONDS", "20"))


def _settle(pids: list[int], fds0: dict[int, int], slack: int, timeout: float) -> dict[int, int]:
    """Wait until every pid's fd count is within ``slack`` of its start."""
    deadline = time.monotonic() + timeout
    while True:
        fds = {pid: procs.fd_count(pid) for pid in pids}
        if all(fds[pid] <= fds0[pid] + slack for pid in pids) or time.monotonic() > deadline:
            return fds
        time.sleep(0.2)


# -- 10,000 idle keep-alive connections ------------------------------------------------------

IDLE_CONF = """\
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4
MinSpareThreads 1
MaxSpareThreads 16
KeepAliveTimeout 300
MaxKeepAliveRequests 0
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


@pytest.mark.timeout(300)
def test_10000_idle_keepalive_connections_cost_little_and_are_given_back(
    proxympm: ProxyFactory, backend: Backend
) -> None:
    # Default MPM settings apart from one child: AsyncRequestWorkerFactor as shipped.
    assert raise_nofile(IDLE * 2 + 1024) >= IDLE * 2, "the hard fd limit is too low here"
    proxy = proxympm(IDLE_CONF, b=backend.port)
    child = proxy.serving_child()
    warm = IdleConnections(proxy.port, "/warm")
    assert warm.open(500, batch=128, timeout=60) == 500, warm.failures
    warm.close()
    fds0 = {child: 0}
    time.sleep(1.0)
    fds0[child] = procs.fd_count(child)
    threads0 = len(procs.thread_ids(child))
    rss0 = procs.rss_kib(child)
    assert rss0

    peaks = []
    for round_ in (1, 2):
        idle = IdleConnections(proxy.port, "/idle")
        try:
            held = idle.open(IDLE, batch=256, timeout=180)
            assert held == IDLE, f"round {round_}: only {held} held: {idle.failures}"
            time.sleep(0.5)
            rss_held = procs.rss_kib(child)
            assert rss_held
            peaks.append(rss_held)
            per_conn = (rss_held - rss0) / IDLE
            print(f"\nround {round_}: 10,000 idle: child RSS {rss0} KiB -> {rss_held} KiB, "
                  f"{per_conn:.2f} KiB per connection")
            assert per_conn <= 3.0, f"{per_conn:.2f} KiB of RSS per idle connection"
            assert len(procs.thread_ids(child)) == threads0, "threads grew with idle conns"
            # Everyone else is still served at once, and the parked ones are alive.
            r = requests.get(f"{proxy.url}/newcomer", timeout=10)
            assert r.status_code == 200 and r.json()["target"] == "/newcomer"
            assert idle.still_open() == IDLE, "the proxy dropped idle keep-alive connections"
            for sock in idle.held[:: IDLE // 10]:
                sock.settimeout(10)
                sock.sendall(request_bytes("GET", "/again", f"127.0.0.1:{proxy.port}"))
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        finally:
            idle.close()

        fds = _settle([child], fds0, slack=4, timeout=30)
        assert fds[child] <= fds0[child] + 4, f"fds {fds0[child]} -> {fds[child]} after closing"
        assert len(procs.thread_ids(child)) == threads0
        rss_after = procs.rss_kib(child)
        assert rss_after
        print(f"round {round_}: after closing them: child RSS {rss_after} KiB")
        assert rss_after <= rss_held + 1024
    # CPython's allocator keeps freed per-connection memory as a high-water mark (its
    # arenas are returned only when wholly empty) and reuses it: a second crowd of
    # 10,000 costs nothing more. That is the bound; growth here would be a leak.
    assert peaks[1] <= peaks[0] + 2048, f"RSS peaks {peaks}: the second 10,000 cost more"
    assert child in proxy.children(), "the child was replaced"


# -- soak: mixed traffic with random aborts -----------------------------------------------

SOAK_CONF = """\
StartServers 2
ServerLimit 2
ThreadsPerChild 8
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 64
KeepAliveTimeout 5
Timeout 10
ProxyTimeout 10
ProxyPass "/app/" "http://127.0.0.1:{g}/" timeout=10
ProxyPass "/" "http://127.0.0.1:{b}/" timeout=10
"""

DOWNLOAD = 1 << 20
UPLOAD = 256 << 10
DOWNLOAD_BODY = b"".join(pattern(DOWNLOAD))
UPLOAD_BODY = bytes(random.Random(3).getrandbits(8) for _ in range(UPLOAD))
UPLOAD_SHA = hashlib.sha256(UPLOAD_BODY).hexdigest()


class _Soak:
    """Clients doing one random thing after another until told to stop, counting every
    outcome. Requests that complete must be right; aborted ones are the test's point."""

    def __init__(self, proxy: Proxy, seed: int) -> None:
        self.proxy = proxy
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.post_ids: list[str] = []
        self.stop = threading.Event()

    def _note(self, what: str, error: str | None = None) -> None:
        with self.lock:
            self.outcomes[what] += 1
            if error:
                self.errors.append(f"{what}: {error}")

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        actions = [
            (self._get_app, 30), (self._get_small, 25), (self._download, 8),
            (self._download_abort, 8), (self._upload, 8), (self._upload_abort, 6),
            (self._head_abort, 6), (self._slow, 4), (self._connect_only, 5),
        ]
        funcs = [f for f, _ in actions]
        weights = [w for _, w in actions]
        while not self.stop.is_set():
            action = rng.choices(funcs, weights)[0]
            try:
                action(session, rng)
            except (requests.RequestException, OSError) as exc:
                self._note(action.__name__, repr(exc))
            if rng.random() < 0.1:
                # pause about the app server's keep-alive timeout so pooled connections
                # are closed by it just as requests arrive
                time.sleep(rng.uniform(0.0, 0.3))

    def _get_app(self, session: requests.Session, rng: random.Random) -> None:
        r = session.get(f"{self.proxy.url}/app/soak/{rng.randrange(10**6)}", timeout=15)
        ok = r.status_code == 200 and r.json()["method"] == "GET"
        self._note("get_app", None if ok else f"{r.status_code} {r.text[:200]}")

    def _get_small(self, session: requests.Session, rng: random.Random) -> None:
        r = session.get(f"{self.proxy.url}/small?i={rng.randrange(10**6)}", timeout=15)
        ok = r.status_code == 200 and r.json()["target"].startswith("/small?")
        self._note("get_small", None if ok else f"{r.status_code} {r.text[:200]}")

    def _download(self, session: requests.Session, rng: random.Random) -> None:
        r = session.get(f"{self.proxy.url}/bytes/{DOWNLOAD}", timeout=15)
        ok = r.status_code == 200 and r.content == DOWNLOAD_BODY
        self._note("download", None if ok else f"{r.status_code} len {len(r.content)}")

    def _upload(self, session: requests.Session, rng: random.Random) -> None:
        pid = f"p{rng.getrandbits(48):x}"
        with self.lock:
            self.post_ids.append(pid)
        r = session.post(f"{self.proxy.url}/upload?id={pid}", data=UPLOAD_BODY, timeout=15)
        ok = r.status_code == 200 and r.json()["body_sha256"] == UPLOAD_SHA
        self._note("upload", None if ok else f"{r.status_code} {r.text[:200]}")

    def _raw(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=10)
        # abort with a reset, the rudest way a client can leave
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return s

    def _download_abort(self, session: requests.Session, rng: random.Random) -> None:
        s = self._raw()
        try:
            s.sendall(request_bytes("GET", f"/bytes/{DOWNLOAD}", self._host()))
            s.recv(rng.choice((1, 4096, 65536)))
        finally:
            s.close()
        self._note("download_abort")

    def _upload_abort(self, session: requests.Session, rng: random.Random) -> None:
        s = self._raw()
        try:
            head = (f"POST /upload HTTP/1.1\r\nHost: {self._host()}\r\n"
                    f"Content-Length: {UPLOAD}\r\n\r\n").encode()
            s.sendall(head + UPLOAD_BODY[: rng.randrange(1, UPLOAD)])
        finally:
            s.close()
        self._note("upload_abort")

    def _head_abort(self, session: requests.Session, rng: random.Random) -> None:
        s = self._raw()
        try:
            s.sendall(b"GET /never HTTP/1.1\r\nHost: x\r\nX-Half: ")
        finally:
            s.close()
        self._note("head_abort")

    def _slow(self, session: requests.Session, rng: random.Random) -> None:
        if rng.random() < 0.5:
            r = session.get(f"{self.proxy.url}/slow/0.2", timeout=15)
            self._note("slow", None if r.status_code == 200 else str(r.status_code))
            return
        s = self._raw()  # leaves while the upstream is still working on it
        try:
            s.sendall(request_bytes("GET", "/slow/0.3", self._host()))
            time.sleep(0.05)
        finally:
            s.close()
        self._note("slow_abort")

    def _connect_only(self, session: requests.Session, rng: random.Random) -> None:
        s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=10)
        s.close()
        self._note("connect_only")

    def _host(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    def drive(self, clients: int, seconds: float,
              watch: list[int] | tuple[int, ...] = (), samples: int = 10) -> list[list[int]]:
        """Run ``clients`` for ``seconds``; RSS of the ``watch`` pids at each tenth."""
        self.stop.clear()
        threads = [threading.Thread(target=self.run, args=(self.rng.getrandbits(32),))
                   for _ in range(clients)]
        for t in threads:
            t.start()
        curve = []
        for _ in range(samples):
            time.sleep(seconds / samples)
            curve.append([procs.rss_kib(pid) or 0 for pid in watch])
        self.stop.set()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a soak client is stuck"
        return curve


def _footprint(pids: list[int]) -> dict[int, tuple[int, int, int]]:
    return {pid: (procs.fd_count(pid), len(procs.thread_ids(pid)), procs.rss_kib(pid) or 0)
            for pid in pids}


@pytest.mark.timeout(SOAK_SECONDS + 150)
def test_soak_mixed_traffic_with_aborts_leaks_nothing(
    proxympm: ProxyFactory, backend_factory, gunicorn_server
) -> None:
    raise_nofile(4096)
    # Both backends close idle keep-alive connections after 2 s, as gunicorn does by
    # default, so pooled connections die just as requests are sent on them: GETs must
    # not fail for it and POSTs must never be replayed.
    backend = backend_factory("soak", idle_timeout=2.0)
    # gthread workers keep connections alive and close them after 2 s idle, as deployed
    app = gunicorn_server(workers=2, worker_class="gthread",
                          args=("--threads", "8", "--keep-alive", "2"))
    proxy = proxympm(SOAK_CONF, b=backend.port, g=app.port, wait_children=2)
    children = proxy.wait_children(2)
    soak = _Soak(proxy, seed=int(os.environ.get("PROXYMPM_SOAK_SEED", "1128")))

    soak.drive(clients=8, seconds=min(5.0, SOAK_SECONDS / 4))  # warm every path
    time.sleep(1.0)
    before = _footprint(children)
    warm_outcomes: int = sum(soak.outcomes.values())

    t0 = time.monotonic()
    curve = soak.drive(clients=12, seconds=SOAK_SECONDS, watch=children)
    elapsed = time.monotonic() - t0

    assert sorted(proxy.children()) == sorted(children), "a child died or was replaced"
    # Idle pooled upstream connections come and go: up to one per worker thread and
    # one for the listener, per backend (2 here), are legitimately open at any time.
    slack = 2 * (8 + 1) + 4
    fds = _settle(children, {p: before[p][0] for p in children}, slack=slack, timeout=20)
    time.sleep(1.0)  # idle children give freed heap memory back (proxympm/mpm/memtrim.py)
    after = _footprint(children)
    total = sum(soak.outcomes.values()) - warm_outcomes
    print(f"\nsoak {elapsed:.0f}s, {total} actions: {dict(soak.outcomes)}")
    for pid in children:
        print(f"child {pid}: fds {before[pid][0]} -> {after[pid][0]}, threads "
              f"{before[pid][1]} -> {after[pid][1]}, RSS {before[pid][2]} -> {after[pid][2]} KiB")

    print("RSS KiB per tenth of the run:", [list(c) for c in zip(*curve, strict=True)])
    assert not soak.errors, f"{len(soak.errors)} failed: {soak.errors[:10]}"
    assert total > 100
    for pid in children:
        assert fds[pid] <= before[pid][0] + slack, f"child {pid} fds {before[pid][0]} -> {fds[pid]}"
        assert after[pid][1] == before[pid][1], f"child {pid} threads changed"
        # Memory comes back to a bound of its warm start (pooled connections and
        # CPython's arenas may hold some).
        assert after[pid][2] <= before[pid][2] + 12 * 1024, (
            f"child {pid} RSS {before[pid][2]} -> {after[pid][2]} KiB")

    # No POST reached the backend twice; every completed upload reached it once.
    seen = Counter(r.target.split("id=", 1)[1] for r in backend.requests
                   if r.method == "POST" and "id=" in r.target)
    assert not [k for k, n in seen.items() if n > 1], "a POST was replayed"
    assert len(seen) >= soak.outcomes["upload"]
    # Nothing of an aborted head reached anyone.
    assert not [r for r in backend.requests if r.target.startswith("/never")]
    # And the server is as good as new.
    with RawClient(proxy.port) as c:
        assert c.request("GET", "/final").status == 200


def test_memory_is_returned_after_traffic_the_listener_forwarded_itself(
        proxympm: Callable[..., Proxy], backend: Backend) -> None:
    """The child trims freed memory once enough requests went through it, counting the
    small ones the listener forwards inline (no worker ever sees them)."""
    proxy = proxympm('LogLevel debug\nProxyPass "/" "http://127.0.0.1:{b}/" retry=0\n',
                     b=backend.port)
    with requests.Session() as s:
        for i in range(1200):  # more than memtrim.TRIM_AFTER_REQUESTS
            assert s.get(f"{proxy.url}/r{i}", timeout=10).status_code == 200
    deadline = time.monotonic() + 15
    while "free memory returned to the system" not in proxy.error_log():
        assert time.monotonic() < deadline, proxy.error_log()[-2000:]
        time.sleep(0.1)
    assert "inline exchange failed" not in proxy.error_log()
