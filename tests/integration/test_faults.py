"""Fault injection: broken and dying upstreams, dying children and arbiter, fd
exhaustion, an unusable temp dir, clients that leave at the worst moment, and abuse.
Each test counts outcomes; none of them may hang."""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import procs
from tests.support.backend import Backend
from tests.support.faults import HALF_TOTAL, MODES, FaultyUpstream, HalfServer, wrapped_command
from tests.support.net import IdleConnections, raise_nofile
from tests.support.rawhttp import RawClient, RawResponse, request_bytes
from tests.support.servers import Proxy

ProxyFactory = Callable[..., Proxy]


def _get(port: int, path: str, timeout: float = 10.0, close: bool = True) -> RawResponse:
    with RawClient(port, timeout=timeout) as c:
        hdrs = [("Connection", "close")] if close else []
        return c.request("GET", path, headers=hdrs)


def _workers_free(proxy: Proxy, threads: int, seconds: float = 1.0, prefix: str = "/ok") -> None:
    """``threads`` concurrent requests that each take ``seconds`` upstream all finish
    in about ``seconds``: no worker is stuck."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as ex:
        results = list(ex.map(lambda i: _get(proxy.port, f"{prefix}/slow/{seconds}?i={i}"),
                              range(threads)))
    elapsed = time.monotonic() - t0
    assert [r.status for r in results] == [200] * threads
    assert all(r.complete for r in results)
    assert elapsed < seconds * 1.8, f"{threads} concurrent requests took {elapsed:.2f}s"


# -- upstream dies mid-response ------------------------------------------------------------


def test_upstream_killed_mid_body(proxympm: ProxyFactory, backend_factory, free_port) -> None:
    port = free_port()
    half = HalfServer(port)
    try:
        proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{u}/" timeout=5 retry=0', u=port)
        # A pooled connection exists first: the broken response comes on it.
        assert _get(proxy.port, "/ok", close=False).status == 200
        with RawClient(proxy.port, timeout=8) as c:
            c.send(request_bytes("GET", "/half", f"127.0.0.1:{proxy.port}"))
            half.wait_half_sent()
            half.kill()
            t0 = time.monotonic()
            try:
                r = c.read_response()
            except ConnectionError:
                r = None  # closed before any response: the cut is visible too
            elapsed = time.monotonic() - t0
            if r is not None and r.status == 200:
                assert not r.complete, f"well-framed short body ({r.framing}, {len(r.body)} B)"
                assert len(r.body) < HALF_TOTAL
                assert c.eof
            elif r is not None:
                assert r.status == 502, r.status
            assert elapsed < 4, f"client saw the end only after {elapsed:.1f}s"
    finally:
        half.kill()
    # A new upstream on the same port: nothing of the dead one is reused.
    revived = backend_factory("revived", port=port)
    for i in range(10):
        r = _get(proxy.port, f"/after/{i}", close=False)
        assert r.status == 200 and r.complete, (i, r.status, r.body[:200])
    assert len(revived.requests) == 10


# -- upstreams that misbehave in every way ---------------------------------------------


def test_broken_upstreams_map_to_502_504_and_free_the_worker(
    proxympm: ProxyFactory, backend: Backend
) -> None:
    ups = {m: FaultyUpstream(m).start() for m in MODES}
    timeout = 2
    try:
        conf = ["ThreadsPerChild 8", "MaxRequestWorkers 16", "Timeout 10"]
        conf += [f'ProxyPass "/{m}/" "http://127.0.0.1:{u.port}/" timeout={timeout} retry=0'
                 for m, u in ups.items()]
        conf.append('ProxyPass "/ok/" "http://127.0.0.1:{b}/"')
        proxy = proxympm("\n".join(conf) + "\n", b=backend.port)

        def one(mode: str) -> tuple[str, object, bool, bool, float]:
            t0 = time.monotonic()
            with RawClient(proxy.port, timeout=timeout + 6) as c:
                try:
                    r = c.request("GET", f"/{mode}/x")
                except ConnectionError as exc:
                    return mode, f"closed: {exc}", False, True, time.monotonic() - t0
                except TimeoutError:
                    return mode, "client timeout (hang)", False, False, time.monotonic() - t0
                closed = c.eof or c.closed_by_peer(1.0)
                return mode, r.status, r.complete, closed, time.monotonic() - t0

        with ThreadPoolExecutor(len(MODES)) as ex:
            results = {m: rest for m, *rest in ex.map(one, MODES)}
        problems = []
        for mode, (status, complete, closed, elapsed) in results.items():
            limit = timeout + 1.5
            if elapsed > limit:
                problems.append(f"{mode}: answer after {elapsed:.2f}s > {limit}s")
            if mode in ("reset", "close_on_accept", "garbage"):
                ok = status == 502
            elif mode == "stall":
                ok = status == 504
            else:  # the head may already be out: then the cut must show
                ok = status in (502, 504) or (status == 200 and not complete and closed)
            if not ok:
                problems.append(f"{mode}: status={status} complete={complete} closed={closed}")
        assert not problems, f"{problems}\n{results}"
        # No worker is stuck on any of them.
        _workers_free(proxy, 8)
        assert "Traceback" not in proxy.error_log()
    finally:
        for u in ups.values():
            u.stop()


# -- the upstream closes idle pooled connections under our feet --------------------------


CLIENTS = 8  # 8 clients for 9 s: as many races as 4 for 18 s, in half the time


def test_upstream_keepalive_race_get_retried_post_never_replayed(
    proxympm: ProxyFactory, backend_factory
) -> None:
    # One upstream per client, so that each upstream sees gaps of about its timeout.
    ups = [backend_factory(f"short-ka{n}", idle_timeout=0.5) for n in range(CLIENTS)]
    proxy = proxympm("".join(f'ProxyPass "/u{n}/" "http://127.0.0.1:{u.port}/" timeout=5 '
                             "retry=0\n" for n, u in enumerate(ups)))
    duration = 9.0
    stop_at = time.monotonic() + duration
    lock = threading.Lock()
    sent_posts: list[str] = []
    get_errors: list[str] = []
    post_statuses: dict[int, int] = {}
    gets = 0

    def client(n: int) -> None:
        nonlocal gets
        rnd = random.Random(n)
        c = RawClient(proxy.port, timeout=10)
        i = 0
        try:
            while time.monotonic() < stop_at:
                time.sleep(rnd.uniform(0.44, 0.56))
                i += 1
                if i % 3 == 0:
                    pid = f"p{n}-{i}"
                    with lock:
                        sent_posts.append(pid)
                    try:
                        r = c.request("POST", f"/u{n}/post?id={pid}", body=b"x" * 100)
                        status = r.status
                    except (ConnectionError, OSError):
                        status = -1
                    with lock:
                        post_statuses[status] = post_statuses.get(status, 0) + 1
                else:
                    try:
                        r = c.request("GET", f"/u{n}/get/{i}")
                        ok = r.status == 200 and r.complete
                        err = f"{r.status} complete={r.complete}"
                    except (ConnectionError, OSError) as exc:
                        ok, err = False, repr(exc)
                    with lock:
                        gets += 1
                        if not ok:
                            get_errors.append(f"GET {n}/{i}: {err}")
                if c.eof:
                    c.close()
                    c = RawClient(proxy.port, timeout=10)
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 30)
    assert gets > 50
    # The race really happened: the upstream closed connections the proxy had pooled.
    accepted = [u.connections_accepted for u in ups]
    assert sum(accepted) > 40, accepted
    assert not get_errors, f"{len(get_errors)}/{gets} GETs failed: {get_errors[:10]}"
    seen = [r.target.split("id=", 1)[1] for u in ups for r in u.requests if r.method == "POST"]
    dupes = {p for p in seen if seen.count(p) > 1}
    assert not dupes, f"POSTs replayed upstream: {sorted(dupes)[:10]}"
    assert set(seen) <= set(sent_posts)
    assert len(seen) <= len(sent_posts)
    assert post_statuses.get(200, 0) >= len(sent_posts) * 0.8, post_statuses


# -- process deaths ----------------------------------------------------------------------


STATUS_CONF = """\
StartServers 2
<Location "/server-status">
    SetHandler server-status
    Require local
</Location>
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


def test_child_sigkilled_under_load(proxympm: ProxyFactory, backend: Backend) -> None:
    proxy = proxympm(STATUS_CONF, b=backend.port, wait_children=2)
    time.sleep(max(0.0, 2.2 - 0.0))  # past the arbiter's crash window
    kids = proxy.wait_children(2)
    victim = proxy.serving_child()
    stop_at = time.monotonic() + 4.0
    kill_at = time.monotonic() + 1.5
    lock = threading.Lock()
    outcomes: list[tuple[float, float, bool]] = []

    def load(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            t0 = time.monotonic()
            try:
                r = _get(proxy.port, f"/slow/0.05?c={n}&i={i}", timeout=5)
                ok = r.status == 200 and r.complete
            except (ConnectionError, OSError):
                ok = False
            with lock:
                outcomes.append((t0, time.monotonic(), ok))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, kill_at - time.monotonic()))
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(15)
    failed = [o for o in outcomes if not o[2]]
    assert len(failed) <= 8, f"{len(failed)} failures for 8 clients"
    late = [o for o in failed if o[0] > killed_at + 0.05]
    assert not late, f"requests started after the kill failed: {len(late)}"
    after = [o for o in outcomes if o[0] > killed_at + 0.1 and o[2]]
    assert len(after) > 20, "service did not continue after the kill"
    new = proxy.wait_children(2, timeout=10, exclude=(victim,))
    assert victim not in new and len(set(new) - set(kids)) >= 1
    proxy.wait_for_log("error", rf"child pid {victim} exit signal 9")
    assert _get(proxy.port, "/final").status == 200
    # The scoreboard recovers: two processes, the dead child's busy slots not leaked
    # (only this status request is busy), no connection still counted.
    deadline = time.monotonic() + 10
    while True:
        r = _get(proxy.port, "/server-status?auto")
        auto = dict(line.split(": ", 1) for line in r.body.decode().splitlines()[1:]
                    if ": " in line)
        settled = (auto.get("Processes") == "2" and auto.get("BusyWorkers") == "1"
                   and auto.get("Stopping") == "0" and "S" not in auto.get("Scoreboard", "S")
                   and int(auto.get("ConnsTotal", 99)) <= 1)
        if settled:
            break
        assert time.monotonic() < deadline, f"scoreboard did not recover: {auto}"
        time.sleep(0.2)
    assert int(auto["IdleWorkers"]) == 2 * 4 - 1


def test_arbiter_sigkilled_children_exit(proxympm: ProxyFactory, backend: Backend) -> None:
    proxy = proxympm({"StartServers": 2, "ProxyPass": f'"/" "http://127.0.0.1:{backend.port}/"'},
                     wait_children=2)
    kids = [procs.stat(k) for k in proxy.wait_children(2)]
    assert _get(proxy.port, "/x").status == 200
    os.kill(proxy.pid, signal.SIGKILL)
    assert proxy.proc is not None
    proxy.proc.wait(5)
    left = procs.wait_gone([k for k in kids if k is not None], 5)
    assert not left, f"children still alive 5s after the arbiter died: {left}"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()


# -- file descriptors run out ---------------------------------------------------------------


def test_fd_exhaustion_keeps_serving_and_recovers(
    proxympm: ProxyFactory, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    raise_nofile(4096)
    monkeypatch.setenv("PROXYMPM_CMD", wrapped_command(nofile=256))
    proxy = proxympm('KeepAliveTimeout 30\nProxyPass "/" "http://127.0.0.1:{b}/"',
                     b=backend.port)
    child = proxy.serving_child()
    with open(f"/proc/{child}/limits") as f:
        assert any("open files" in line and " 256 " in line for line in f)
    idle = IdleConnections(proxy.port, "/idle")
    try:
        held = idle.open(400, batch=64, timeout=4)
        assert 100 < held < 400, (held, idle.failures)
        # It says that it stopped accepting for lack of descriptors.
        log = proxy.error_log()
        assert any(w in log for w in ("AH00478", "Too many open files", "not accepting")), log
        # It keeps serving the connections it holds.
        for sock in idle.held[:20]:
            sock.sendall(request_bytes("GET", "/again", f"127.0.0.1:{proxy.port}"))
        for sock in idle.held[:20]:
            sock.settimeout(5)
            data = sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 "), data[:100]
    finally:
        idle.close()
    # And accepts again by itself once clients have left.
    deadline = time.monotonic() + 8
    while True:
        try:
            r = _get(proxy.port, "/recovered", timeout=3)
            if r.status == 200:
                break
        except (ConnectionError, OSError):
            pass
        assert time.monotonic() < deadline, "no longer accepting after clients left"
    assert proxy.running() and procs.alive(child)


# -- the temp dir is unusable ---------------------------------------------------------------


def test_unusable_tmpdir_upload_and_slow_download_work(
    proxympm: ProxyFactory, backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    missing = tmp_path / "no-such-dir"
    monkeypatch.setenv("PROXYMPM_CMD", wrapped_command(tmpdir=str(missing)))
    proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{b}/" timeout=10', b=backend.port)
    body = os.urandom(1 << 20)
    with RawClient(proxy.port, timeout=15) as c:
        r = c.request("POST", "/echo", body=body)
    assert r.status == 200 and r.body == body
    size = 8 << 20
    with RawClient(proxy.port, timeout=15) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        c.send(request_bytes("GET", f"/bytes/{size}", f"127.0.0.1:{proxy.port}"))
        time.sleep(1.0)  # a slow reader: the proxy would spool past 256 KiB
        r = c.read_response()
    assert r.status == 200 and r.complete and len(r.body) == size
    assert proxy.running() and "Traceback" not in proxy.error_log() + proxy.stderr()
    # The operator hears that TMPDIR is unusable and that it streamed instead.
    log = proxy.error_log()
    assert "streaming" in log and "temp file" in log, log


# -- clients that leave at the worst moment ---------------------------------------------------


def _abandon(port: int, kind: int) -> None:
    host = f"127.0.0.1:{port}"
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if kind == 0:  # mid-request head
            s.sendall(f"GET /never HTTP/1.1\r\nHost: {host}\r\nX-Half: ".encode())
        elif kind == 1:  # mid-upload
            s.sendall(f"POST /upload HTTP/1.1\r\nHost: {host}\r\n"
                      f"Content-Length: {1 << 20}\r\n\r\n".encode() + b"u" * (100 << 10))
        else:  # mid-download
            s.sendall(request_bytes("GET", f"/bytes/{1 << 20}", host))
            s.recv(4096)
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


def test_abandoning_clients_leak_no_fds_or_threads(
    proxympm: ProxyFactory, backend: Backend
) -> None:
    proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{b}/" timeout=10', b=backend.port)
    child = proxy.serving_child()
    for kind in (0, 1, 2) * 4:  # warm up: pool, temp files, lazily made objects
        _abandon(proxy.port, kind)
    assert _get(proxy.port, "/warm", close=True).status == 200
    time.sleep(0.5)
    fds0, threads0 = procs.fd_count(child), len(procs.thread_ids(child))
    kinds = [0] * 5000 + [1] * 3500 + [2] * 1500  # 10,000 clients, as the issue asks
    random.Random(7).shuffle(kinds)
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda k: _abandon(proxy.port, k), kinds))
    before_downloads = sum(1 for r in backend.requests if r.path.startswith("/bytes/"))
    deadline = time.monotonic() + 8
    while True:
        fds, threads = procs.fd_count(child), len(procs.thread_ids(child))
        if fds <= fds0 + 6 and threads == threads0:
            break
        assert time.monotonic() < deadline, (
            f"fds {fds0} -> {fds}, threads {threads0} -> {threads}")
        time.sleep(0.2)
    assert procs.alive(child), "the child died"
    # Nothing of an abandoned upload or head reached the upstream.
    assert not [r for r in backend.requests if r.path in ("/upload", "/never")]
    assert before_downloads <= 1500 + 4
    _workers_free(proxy, 4, 0.5, prefix="")


# -- abuse from one client -------------------------------------------------------------------


def test_pipelining_and_connection_flood_do_not_starve_others(
    proxympm: ProxyFactory, backend: Backend
) -> None:
    raise_nofile(4096)
    proxy = proxympm('ProxyPass "/" "http://127.0.0.1:{b}/"', b=backend.port)
    stop = threading.Event()
    latencies: list[float] = []
    errors: list[str] = []

    def victim() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = _get(proxy.port, "/victim", timeout=5)
                if r.status != 200 or not r.complete:
                    errors.append(str(r.status))
            except (ConnectionError, OSError) as exc:
                errors.append(repr(exc))
            latencies.append(time.monotonic() - t0)
            time.sleep(0.02)

    pipelined = {"responses": 0}

    def pipeliner() -> None:
        host = f"127.0.0.1:{proxy.port}"
        blob = b"".join(request_bytes("GET", f"/p/{i}", host) for i in range(1000))
        with RawClient(proxy.port, timeout=20) as c:
            c.send(blob)
            for i in range(1000):
                try:
                    r = c.read_response()
                except (ConnectionError, OSError):
                    break
                assert r.status == 200 and f'"/p/{i}"' in r.body.decode(), (i, r.status)
                pipelined["responses"] += 1

    vt = threading.Thread(target=victim)
    vt.start()
    time.sleep(0.3)
    flood = IdleConnections(proxy.port, "/flood")
    try:
        with ThreadPoolExecutor(3) as ex:
            futs = [ex.submit(pipeliner), ex.submit(pipeliner)]
            flooded = flood.open(600, batch=128, timeout=20)
            for f in futs:
                f.result(30)
    finally:
        stop.set()
        vt.join(10)
        flood.close()
    assert not errors, errors[:10]
    assert len(latencies) >= 10
    assert max(latencies) < 1.5, f"victim waited {max(latencies):.2f}s"
    assert pipelined["responses"] >= 100
    assert flooded >= 500, flood.failures

