"""Server-wide balancer state with two serving children: ``max`` and its FIFO queue
across children, recovery from a child killed while holding slots, failover with a
member killed under load, sticky sessions, and active health checks run once for
the whole server by the watchdog."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import requests

from tests.support.backend import Backend
from tests.support.interval_app import peak_overlap
from tests.support.servers import Gunicorn, Proxy

TWO_CHILDREN = """
Timeout 30
StartServers 2
ServerLimit 2
ThreadsPerChild 12
MaxRequestWorkers 24
MinSpareThreads 1
MaxSpareThreads 48
LogFormat "%P %>s %U" pids
CustomLog {access_log} pids
"""


def _serving_pids(proxy: Proxy) -> set[str]:
    return {line.split()[0] for line in proxy.access_log().splitlines() if line.strip()}


def test_gunicorn_sync_workers_behind_a_server_wide_max(
    proxympm: Callable[..., Proxy], gunicorn_server: Callable[..., Gunicorn],
) -> None:
    """20 concurrent clients, two proxympm children, gunicorn with 2 sync workers
    and max=2: every request succeeds, no worker ever has two requests at once, and
    no request waits inside gunicorn (its accept queue) behind a slow one."""
    gun = gunicorn_server(app="tests.support.interval_app:app", workers=2)
    proxy = proxympm(TWO_CHILDREN + """
<Proxy balancer://gun>
    BalancerMember http://127.0.0.1:{g} max=2
    ProxySet timeout=30
</Proxy>
ProxyPass /app/ balancer://gun/
""", g=gun.port, wait_children=2)
    # A queued request holds no worker thread, so nothing makes a child stop
    # accepting while its requests queue: which child takes a burst is the kernel's
    # choice. The cap must hold across children, so a burst that one child took
    # whole is sent again (at most twice more).
    spread = False
    for _ in range(3):
        seen = len(proxy.access_log().splitlines())
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(
                lambda i: requests.get(f"{proxy.url}/app/slow/0.5?i={i}", timeout=60),
                range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        intervals = [(float(r.headers["X-App-Start"]), float(r.headers["X-App-End"]))
                     for r in responses]
        assert peak_overlap(intervals) <= 2
        by_pid: dict[str, list[tuple[float, float]]] = {}
        for r, iv in zip(responses, intervals, strict=True):
            by_pid.setdefault(r.headers["X-App-Pid"], []).append(iv)
        assert len(by_pid) == 2
        assert all(peak_overlap(ivs) == 1 for ivs in by_pid.values())
        waited = [int(r.headers["X-App-Waited-Ms"]) for r in responses]
        assert max(waited) < 250, f"requests sat in gunicorn's accept queue: {waited}"
        lines = proxy.access_log().splitlines()[seen:]
        if len({line.split()[0] for line in lines if line.strip()}) == 2:
            spread = True
            break
    assert spread, "both proxympm children served"


def test_queue_timeout_is_503_with_retry_after_in_every_child(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    backend = backend_factory("only")
    # three threads per child: a burst of six keeps one child's workers busy for a
    # moment (until the requests park), so the other child may take some
    conf = TWO_CHILDREN.replace("ThreadsPerChild 12", "ThreadsPerChild 3").replace(
        "MaxRequestWorkers 24", "MaxRequestWorkers 6")
    proxy = proxympm(conf + """
<Proxy balancer://one>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=1
</Proxy>
ProxyPass /app/ balancer://one/
""", b=backend.port, wait_children=2)
    # A queued request holds no worker thread, so which child takes a burst is the
    # kernel's choice: bursts go out (while the slow request keeps the one slot)
    # until both children have answered some with the queue timeout's 503.
    holder = socket.create_connection(("127.0.0.1", proxy.port), timeout=15)
    holder.sendall(b"GET /app/slow/12 HTTP/1.1\r\nHost: x\r\n\r\n")
    backend.wait_for_requests(1)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for burst in range(4):
            t0 = time.monotonic()
            others = list(pool.map(
                lambda i, b=burst: requests.get(f"{proxy.url}/app/f{b}-{i}", timeout=10),
                range(6)))
            waited = time.monotonic() - t0
            assert [r.status_code for r in others] == [503] * 6
            assert all(r.headers["Retry-After"] == "1" for r in others)
            assert 0.8 <= waited < 2.9
            five03 = {line.split()[0] for line in proxy.access_log().splitlines()
                      if line.split()[1:2] == ["503"]}
            if len(five03) == 2:
                break
    holder.close()  # it held the slot throughout; its answer is not the point here
    assert len(five03) == 2, "the 503s came from both children"
    assert [q.path for q in backend.requests] == ["/slow/12"]


def test_a_client_that_hangs_up_while_queued_loses_its_place(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    backend = backend_factory("only")
    proxy = proxympm(TWO_CHILDREN + """
<Proxy balancer://one>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=10
</Proxy>
ProxyPass /app/ balancer://one/
""", b=backend.port, wait_children=2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(requests.get, f"{proxy.url}/app/slow/1.5", timeout=10)
        backend.wait_for_requests(1)
        gone = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
                for _ in range(3)]
        for i, sock in enumerate(gone):
            sock.sendall(b"GET /app/gone%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        time.sleep(0.2)  # queued ahead of the next request
        after = pool.submit(requests.get, f"{proxy.url}/app/after", timeout=10)
        time.sleep(0.2)
        for sock in gone:
            sock.close()  # the first three in line hang up
        assert slow.result().status_code == 200
        t0 = time.monotonic()
        assert after.result().status_code == 200
        assert time.monotonic() - t0 < 1.0, "the slot went to a client that had left"
    assert [q.path for q in backend.requests] == ["/slow/1.5", "/after"]


def test_a_child_killed_while_holding_slots_gives_them_back(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    backend = backend_factory("only")
    proxy = proxympm(TWO_CHILDREN + """
<Proxy balancer://one>
    BalancerMember http://127.0.0.1:{b} max=2
    ProxySet timeout=2
</Proxy>
ProxyPass /app/ balancer://one/
ProxyPass /plain/ http://127.0.0.1:{b}/ max=1 acquire=1500
""", b=backend.port, wait_children=2)
    held = [threading.Thread(target=_swallow, args=(f"{proxy.url}/app/slow/20",)),
            threading.Thread(target=_swallow, args=(f"{proxy.url}/app/slow/20",)),
            threading.Thread(target=_swallow, args=(f"{proxy.url}/plain/slow/20",))]
    for t in held:
        t.start()
    backend.wait_for_requests(3)
    # every slot is taken: a new request waits out the queue timeout
    r = requests.get(f"{proxy.url}/app/blocked", timeout=10)
    assert r.status_code == 503
    old = proxy.children()
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    proxy.wait_children(2, exclude=tuple(old))
    for t in held:
        t.join(10)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(
            lambda p: requests.get(f"{proxy.url}/app/{p}", timeout=10).status_code,
            ["slow/0.3", "slow/0.3"]))
    assert codes == [200, 200]
    assert requests.get(f"{proxy.url}/plain/again", timeout=10).status_code == 200
    leaked = re.findall(r"left (\d+) backend requests in flight", proxy.error_log())
    assert sum(map(int, leaked)) == 3, proxy.error_log()


def _swallow(url: str) -> None:
    try:
        requests.get(url, timeout=30)
    except requests.RequestException:
        pass  # its child was killed under it


def test_plain_proxypass_max_is_server_wide(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    backend = backend_factory("plain")
    proxy = proxympm(TWO_CHILDREN + """
ProxyPass /q/ http://127.0.0.1:{b}/ max=1
ProxyPass /short/ http://127.0.0.1:{b}/ max=1 acquire=300
""", b=backend.port, wait_children=2)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(
            lambda i: requests.get(f"{proxy.url}/q/slow/0.4", timeout=10).status_code,
            range(4)))
    assert codes == [200] * 4
    assert backend.max_concurrent == 1
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(requests.get, f"{proxy.url}/q/slow/1.5", timeout=10)
        backend.wait_for_requests(5)
        r = requests.get(f"{proxy.url}/short/x", timeout=10)  # same backend, same cap
        assert slow.result().status_code == 200
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"


def test_plain_proxypass_error_state_is_server_wide(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    free_port: Callable[[], int],
) -> None:
    """One child finds a plain backend refusing: the other child answers 503 at once,
    without a connection attempt (a listener on that port would have seen one), until
    ``retry`` is over; then it is tried again."""
    dead, retry = free_port(), 4
    proxy = proxympm(TWO_CHILDREN + """
ProxyPass /dead/ http://127.0.0.1:{dead}/ retry=4
ProxyPass /capped/ http://127.0.0.1:{dead2}/ retry=4 max=2
""", dead=dead, dead2=free_port(), wait_children=2)
    t0 = time.monotonic()
    assert requests.get(f"{proxy.url}/dead/first", timeout=10).status_code == 503
    revived = backend_factory("revived", port=dead)  # from now on a connect would be seen
    first = None
    pids: dict[str, set[str]] = {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for i in range(10):  # rounds of concurrent connections, until both children served
            codes = list(pool.map(lambda k: requests.get(f"{proxy.url}/dead/{k}",
                                                         timeout=10).status_code,
                                  range(i * 8, i * 8 + 8)))
            assert codes == [503] * 8
            for line in proxy.access_log().splitlines():
                pid, status, path = line.split()
                if path.startswith("/dead/"):
                    pids.setdefault(pid, set()).add(status)
                    if path == "/dead/first":
                        first = pid
            if len(pids) == 2:
                break
    assert first is not None and len(pids) == 2, f"one child served them all: {pids}"
    assert time.monotonic() - t0 < retry - 0.5, "test too slow to check the retry window"
    assert revived.connections_accepted == 0, "a child connected during the retry window"
    log = proxy.error_log()
    assert len(re.findall(rf"failed to make connection to backend: http://127.0.0.1:{dead}",
                          log)) == 1, log
    # the same for a capped plain backend (its record also holds its max)
    for i in range(2):
        assert requests.get(f"{proxy.url}/capped/{i}", timeout=10).status_code == 503
    proxy.wait_for_log("error", r"disabled connection for \(http://127.0.0.1:\d+\)")
    assert len(re.findall(r"failed to make connection", proxy.error_log())) == 2
    time.sleep(max(0.0, t0 + retry + 0.3 - time.monotonic()))
    r = requests.get(f"{proxy.url}/dead/later", timeout=10)
    assert r.status_code == 200 and r.json()["backend"] == "revived"
    assert revived.connections_accepted == 1


def test_a_graceful_restart_keeps_max_server_wide(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    """While the old generation finishes a request, the new one must not start a
    second on a max=1 backend: it waits its turn in the same queue."""
    backend = backend_factory("one")
    proxy = proxympm(TWO_CHILDREN.replace("ServerLimit 2", "ServerLimit 4") + """
ProxyPass /q/ http://127.0.0.1:{b}/ max=1 acquire=10000
""", b=backend.port, wait_children=2)
    old = set(proxy.children())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(requests.get, f"{proxy.url}/q/slow/1.5", timeout=15)
        backend.wait_for_requests(1)
        os.kill(proxy.pid, signal.SIGUSR1)  # graceful restart, same config
        deadline = time.monotonic() + 10
        while not (set(proxy.children()) - old) or len(set(proxy.children()) - old) < 2:
            assert time.monotonic() < deadline, "no new generation"
            time.sleep(0.05)
        t0 = time.monotonic()
        quick = requests.get(f"{proxy.url}/q/slow/0.1", timeout=15)  # a new child's
        waited = time.monotonic() - t0
        assert slow.result().status_code == 200
    assert quick.status_code == 200
    assert backend.max_concurrent == 1, "the new generation ran a second request"
    assert waited > 0.3, f"served after {waited:.2f}s: it did not wait for the slot"


def test_member_killed_under_load_loses_no_get_and_replays_no_post(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    a, b = backend_factory("a"), backend_factory("b")
    proxy = proxympm(TWO_CHILDREN + """
<Proxy balancer://app>
    BalancerMember http://127.0.0.1:{a} retry=30
    BalancerMember http://127.0.0.1:{b} retry=30
</Proxy>
ProxyPass /app/ balancer://app/
""", a=a.port, b=b.port, wait_children=2)
    results: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with requests.Session() as s:
            for i in range(30):
                method = "POST" if i % 3 == 0 else "GET"
                try:
                    r = s.request(method, f"{proxy.url}/app/slow/0.05?id={k}-{i}",
                                  data=b"p" * 64 if method == "POST" else None, timeout=10)
                    code = r.status_code
                except requests.RequestException:
                    code = 0
                with lock:
                    results.append((f"{k}-{i}", i, code))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    a.wait_for_requests(20)
    b.stop()  # killed under load: its connections drop, new ones are refused
    for t in threads:
        t.join(60)
    assert len(results) == 180
    gets = [code for rid, i, code in results if i % 3]
    assert gets == [200] * len(gets), Counter(gets)
    seen = Counter(q.target.split("id=")[1] for q in a.requests + b.requests
                   if q.method == "POST")
    assert max(seen.values()) == 1, "a POST reached the backends twice"
    for rid, i, code in results:
        if i % 3 == 0 and code == 200:
            assert seen[rid] == 1
    assert "disabling worker" in proxy.error_log()


def test_sticky_sessions_by_cookie_and_url_parameter(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    free_port: Callable[[], int],
) -> None:
    a, b = backend_factory("a"), backend_factory("b")
    dead = free_port()
    conf = TWO_CHILDREN + """
<Proxy balancer://s>
    BalancerMember http://127.0.0.1:{a} route=r1
    BalancerMember http://127.0.0.1:{b} route=r2
    BalancerMember http://127.0.0.1:{dead} route=r3 retry=30
    ProxySet stickysession=JSESSIONID|jsessionid scolonpathdelim=On
</Proxy>
<Proxy balancer://strict>
    BalancerMember http://127.0.0.1:{a} route=r1
    BalancerMember http://127.0.0.1:{dead} route=r3
    ProxySet stickysession=JSESSIONID nofailover=On
</Proxy>
ProxyPass /s/ balancer://s/
ProxyPass /strict/ balancer://strict/
"""
    proxy = proxympm(conf, a=a.port, b=b.port, dead=dead, wait_children=2)

    def backend_of(path: str, cookie: str | None = None) -> str:
        headers = {"Cookie": cookie} if cookie else {}
        r = requests.get(f"{proxy.url}{path}", headers=headers, timeout=10)
        assert r.status_code == 200, r.status_code
        return str(r.json()["backend"])

    assert {backend_of("/s/x", "JSESSIONID=abc.r2") for _ in range(10)} == {"b"}
    assert {backend_of("/s/x;jsessionid=abc.r1") for _ in range(10)} == {"a"}
    # the URL parameter wins over the cookie (httpd)
    assert backend_of("/s/x;jsessionid=abc.r1?q=1", "JSESSIONID=abc.r2") == "a"
    assert backend_of("/s/x?jsessionid=zz.r2&q=1") == "b"
    # a route whose member is down fails over (and the first try puts it in error)
    assert {backend_of("/s/x", "JSESSIONID=abc.r3") for _ in range(6)} <= {"a", "b"}
    # no session or an unknown route: the lbmethod decides
    assert {backend_of("/s/y", f"JSESSIONID=n{i}.zz") for i in range(10)} == {"a", "b"}
    # nofailover=On: the session's member is down, so 503
    requests.get(f"{proxy.url}/strict/warm", cookies={"JSESSIONID": "q.r3"}, timeout=10)
    r = requests.get(f"{proxy.url}/strict/x", cookies={"JSESSIONID": "q.r3"}, timeout=10)
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert backend_of("/strict/x", "JSESSIONID=q.r1") == "a"


def test_health_checks_run_once_for_the_server_and_move_members(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    a, b = backend_factory("a"), backend_factory("b")
    b.health_status = 503
    proxy = proxympm(TWO_CHILDREN + """
ProxyHCExpr ok2 {%{REQUEST_STATUS} =~ /^2/}
<Proxy balancer://hc>
    BalancerMember http://127.0.0.1:{a} hcmethod=GET hcuri=/health hcinterval=200ms
    BalancerMember http://127.0.0.1:{b} hcmethod=HEAD hcuri=/health hcinterval=200ms \\
        hcfails=2 hcpasses=3 hcexpr=ok2
</Proxy>
ProxyPass /hc/ balancer://hc/
""", a=a.port, b=b.port, wait_children=3)  # two serving children and the watchdog
    proxy.wait_for_log("error", rf"DISABLING http://127.0.0.1:{b.port} after 2")
    got = Counter(requests.get(f"{proxy.url}/hc/x{i}", timeout=10).json()["backend"]
                  for i in range(20))
    assert got == {"a": 20}
    assert not [q for q in b.requests if q.path != "/health"], "b served a client"
    b.health_status = 200
    proxy.wait_for_log("error", rf"ENABLING http://127.0.0.1:{b.port} after 3")
    got = Counter(requests.get(f"{proxy.url}/hc/y{i}", timeout=10).json()["backend"]
                  for i in range(20))
    assert got == {"a": 10, "b": 10}
    # one check per interval reaches a member, however many children serve
    checks = [q.received_at for q in a.requests if q.path == "/health"]
    assert len(checks) >= 5
    gaps = [later - earlier for earlier, later in zip(checks, checks[1:], strict=False)]
    assert min(gaps) > 0.15, gaps
    assert all(q.method == "HEAD" for q in b.requests if q.path == "/health")
    # the watchdog is restarted if it dies
    watchdog = min(proxy.children(), key=lambda pid: len(os.listdir(f"/proc/{pid}/task")))
    os.kill(watchdog, signal.SIGKILL)
    proxy.wait_for_log("error", rf"watchdog pid {watchdog} exited")
    count = len([q for q in a.requests if q.path == "/health"])
    deadline = time.monotonic() + 5
    while len([q for q in a.requests if q.path == "/health"]) < count + 3:
        assert time.monotonic() < deadline, "no health checks after the watchdog died"
        time.sleep(0.05)
    assert re.search(r"watchdog", proxy.error_log())


def test_status_page_shows_the_shared_member_state(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    free_port: Callable[[], int],
) -> None:
    backend = backend_factory("only")
    proxy = proxympm(TWO_CHILDREN + """
<Proxy balancer://st>
    BalancerMember http://127.0.0.1:{b} max=1
    BalancerMember http://127.0.0.1:{dead} retry=60
    ProxySet timeout=10
</Proxy>
ProxyPass /server-status !
ProxyPass /metrics !
ProxyPass /st/ balancer://st/
<Location "/server-status">
    SetHandler server-status
</Location>
<Location "/metrics">
    SetHandler metrics
</Location>
""", b=backend.port, dead=free_port(), wait_children=2)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        slow = [pool.submit(requests.get, f"{proxy.url}/st/slow/1.5", timeout=10)
                for _ in range(3)]
        backend.wait_for_requests(1)
        time.sleep(0.3)  # one in flight, the others queued (the dead member failed)
        # every child answers with the same, server-wide numbers
        pages = [requests.get(f"{proxy.url}/metrics", timeout=5).text for _ in range(4)]
        assert all(r.result().status_code == 200 for r in slow)
    for page in pages:
        assert re.search(r'proxympm_balancer_member_in_flight\{balancer="balancer://st",'
                         rf'member="http://127.0.0.1:{backend.port}"\}} 1', page), page
        assert re.search(r'proxympm_balancer_member_queued\{[^}]*\} 2', page), page
        assert re.search(r'proxympm_balancer_member_in_error\{[^}]*member="http://127.0.0.1:'
                         rf'(?!{backend.port})\d+"\}} 1', page), page
    html = requests.get(f"{proxy.url}/server-status", timeout=5).text
    assert "Balancer members" in html and f"http://127.0.0.1:{backend.port}" in html
