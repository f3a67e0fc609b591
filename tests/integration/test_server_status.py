"""server-status and metrics against real traffic: ?auto keys and counts as mod_status
has them, the Prometheus exposition parsed by prometheus_client, the HTML page
rendered by headless Chromium, Require, and counters that carry on across a
graceful restart.

Clients talk to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.backend import Backend
from tests.support.servers import Proxy

CONFIG = """
StartServers 2
ServerLimit 2
ThreadsPerChild 4
MaxRequestWorkers 8
MinSpareThreads 1
MaxSpareThreads 64
KeepAliveTimeout 20
ProxyPass "/app" "http://127.0.0.1:{b}" retry=0
ProxyPass "/lb" "balancer://pool"
<Proxy balancer://pool>
    BalancerMember http://127.0.0.1:{b} retry=0
</Proxy>
<Location "/server-status">
    SetHandler server-status
    Require local
</Location>
<Location "/metrics">
    SetHandler metrics
    Require ip 127.0.0.0/8
</Location>
<Location "/private-status">
    SetHandler server-status
    Require ip 10.0.0.0/8 192.168.1
</Location>
"""

# mod_status 2.4's ?auto keys, in its order (CPULoad only once CPU time was used;
# ReqPerSec/BytesPerSec only after a second of uptime; *PerReq once a request ended)
AUTO_KEYS = [
    "ServerVersion", "ServerMPM", "Server Built", "CurrentTime", "RestartTime",
    "ParentServerConfigGeneration", "ParentServerMPMGeneration", "ServerUptimeSeconds",
    "ServerUptime", "Load1", "Load5", "Load15", "Total Accesses", "Total kBytes",
    "Total Duration", "CPUUser", "CPUSystem", "CPUChildrenUser", "CPUChildrenSystem",
    "CPULoad", "Uptime", "ReqPerSec", "BytesPerSec", "BytesPerReq", "DurationPerReq",
    "BusyWorkers", "GracefulWorkers", "IdleWorkers", "Processes", "Stopping", "ConnsTotal",
    "ConnsAsyncWriting", "ConnsAsyncKeepAlive", "ConnsAsyncClosing", "Scoreboard",
]


def auto(proxy: Proxy) -> dict[str, str]:
    r = requests.get(f"{proxy.url}/server-status?auto", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert lines[0] == "127.0.0.1"  # the server name the client used, first (as httpd)
    pairs = [line.split(": ", 1) if ": " in line else line.split(":", 1) for line in lines[1:]]
    return {k: v for k, v in pairs}


def auto_when_started(proxy: Proxy, timeout: float = 10.0) -> dict[str, str]:
    """?auto once every worker thread of every child runs (no S left)."""
    deadline = time.monotonic() + timeout
    while True:
        a = auto(proxy)
        if "S" not in a["Scoreboard"] and a["Processes"] == "2":
            return a
        assert time.monotonic() < deadline, a
        time.sleep(0.05)


def metrics(proxy: Proxy) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = requests.get(f"{proxy.url}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def backend_value(m: dict, name: str, backend: str, balancer: str = "", **extra: str) -> float:
    labels = {"backend": backend, "balancer": balancer, **extra}
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_metric(proxy: Proxy, check: Callable[[dict], bool], timeout: float = 5.0
                ) -> tuple[dict, int]:
    """Metrics once ``check`` holds (children publish backend counters a few times a
    second); also how many metrics requests that took."""
    deadline = time.monotonic() + timeout
    asked = 0
    while True:
        m = metrics(proxy)
        asked += 1
        if check(m):
            return m, asked
        assert time.monotonic() < deadline, "metrics did not reach the expected values"
        time.sleep(0.1)


def test_auto_and_prometheus_match_the_traffic_sent(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    up = f"http://127.0.0.1:{backend.port}"
    before = auto_when_started(proxy)
    assert list(before) == [k for k in AUTO_KEYS if k in before]
    assert {"ServerVersion", "Total Accesses", "BusyWorkers", "IdleWorkers", "ConnsTotal",
            "ConnsAsyncWriting", "ConnsAsyncKeepAlive", "ConnsAsyncClosing",
            "Scoreboard"} <= set(before)
    assert before["ServerMPM"] == "event"
    assert before["Processes"] == "2"
    board = before["Scoreboard"]
    assert len(board) == 2 * 4 and set(board) <= set("_SRWKDCLGI.")
    assert int(before["BusyWorkers"]) >= 1  # this request
    assert int(before["BusyWorkers"]) + int(before["IdleWorkers"]) == 8

    sent = 0
    for i in range(10):  # a new connection each
        assert requests.get(f"{proxy.url}/app/new/{i}", timeout=10).status_code == 200
        sent += 1
    with requests.Session() as s:
        for i in range(10):  # keep-alive
            assert s.get(f"{proxy.url}/app/ka/{i}", timeout=10).status_code == 200
            sent += 1
        assert s.get(f"{proxy.url}/app/status/503", timeout=10).status_code == 503
        assert s.get(f"{proxy.url}/app/garbage", timeout=10).status_code == 502
        sent += 2
        for i in range(3):
            assert s.get(f"{proxy.url}/lb/x/{i}", timeout=10).status_code == 200
            sent += 1
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as bad:
        # answered by the listener itself (400), counted as an access as httpd does
        bad.sendall(b"GET /app/bad HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n")
        assert bad.recv(65536).startswith(b"HTTP/1.1 400")
        sent += 1
    to_backend = 10 + 10 + 2

    def reached(m: dict) -> bool:
        return (backend_value(m, "proxympm_backend_requests_total", up) == to_backend
                and backend_value(m, "proxympm_backend_requests_total", up, "balancer://pool")
                == 3)

    m, asked = wait_metric(proxy, reached)
    assert backend_value(m, "proxympm_backend_errors_total", up) == 1  # the 502
    assert backend_value(m, "proxympm_backend_responses_total", up, code="2xx") == 20
    assert backend_value(m, "proxympm_backend_responses_total", up, code="5xx") == 1
    assert backend_value(m, "proxympm_backend_in_flight", up) == 0
    assert backend_value(m, "proxympm_backend_latency_seconds_count", up) == to_backend
    assert backend_value(m, "proxympm_backend_latency_seconds_bucket", up, le="+Inf") \
        == to_backend
    assert backend_value(m, "proxympm_backend_latency_seconds_sum", up) > 0
    new = backend_value(m, "proxympm_backend_connections_total", up, connection="new")
    reused = backend_value(m, "proxympm_backend_connections_total", up, connection="reused")
    assert new + reused == to_backend and reused > 0
    assert backend_value(m, "proxympm_backend_errors_total", up, "balancer://pool") == 0
    assert m[("proxympm_balancer_queued", (("balancer", "balancer://pool"),))] == 0
    procs = {labels for (name, labels) in m if name == "proxympm_process_connections"}
    assert len({dict(labels)["pid"] for labels in procs}) == 2
    for pid in {dict(labels)["pid"] for labels in procs}:
        assert int(pid) in proxy.children()

    after = auto(proxy)
    # every request served counts: the first ?auto, the traffic, the metrics requests
    assert int(after["Total Accesses"]) == int(before["Total Accesses"]) + 1 + sent + asked
    assert int(after["Total kBytes"]) >= int(before["Total kBytes"])
    assert int(after["Total Duration"]) > int(before["Total Duration"])
    assert after["ParentServerMPMGeneration"] == "0"


def test_connection_states_and_access_control(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    idle = []
    for _ in range(3):  # idle keep-alive connections, parked in the listener
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(b"GET /app/k HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        idle.append(sock)
    try:
        deadline = time.monotonic() + 5
        while True:
            a = auto(proxy)
            if int(a["ConnsAsyncKeepAlive"]) >= 3:
                break
            assert time.monotonic() < deadline, a
            time.sleep(0.1)
        # published a few times a second, so the asking connection may not count yet
        assert int(a["ConnsTotal"]) >= int(a["ConnsAsyncKeepAlive"])
    finally:
        for sock in idle:
            sock.close()
    r = requests.get(f"{proxy.url}/private-status", timeout=10)
    assert r.status_code == 403
    assert "AH01630" in proxy.wait_for_log("error", "AH01630.*private-status").group(0)
    r = requests.head(f"{proxy.url}/server-status", timeout=10)
    assert r.status_code == 200 and r.content == b"" and int(r.headers["Content-Length"]) > 0
    r = requests.post(f"{proxy.url}/server-status", data=b"x", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    r = requests.get(f"{proxy.url}/server-status?refresh=7", timeout=10)
    assert r.headers["Refresh"] == "7"
    assert '<meta http-equiv="refresh" content="7">' in r.text
    assert b"# TYPE proxympm_backend_requests_total counter" in requests.get(
        f"{proxy.url}/server-status?prometheus", timeout=10).content


class _Cells(HTMLParser):
    """Text of every table cell, by table id, and of elements with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.by_id: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._open_id: list[tuple[str, str]] = []  # (tag, id)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or f"t{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        if a.get("id") and tag != "table":
            self._open_id.append((tag, a["id"] or ""))
            self.by_id[a["id"] or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._open_id and self._open_id[-1][0] == tag:
            self._open_id.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for _, ident in self._open_id:
            self.by_id[ident] += data


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed (Debian package chromium; .ci/run installs it)"
    return found


def _chromium_run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={home}/profile",
           *args]
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def test_html_page_renders_in_headless_chromium(
    proxympm: Callable[..., Proxy], backend: Backend, tmp_path: Path
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    up = f"http://127.0.0.1:{backend.port}"
    with requests.Session() as s:
        for i in range(7):
            assert s.get(f"{proxy.url}/app/seen-by-chromium/{i}", timeout=10).status_code \
                == 200
    wait_metric(proxy, lambda m: backend_value(m, "proxympm_backend_requests_total", up) == 7)
    count = int(auto(proxy)["Total Accesses"])

    dom = _chromium_run(["--dump-dom", f"{proxy.url}/server-status"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Cells()
    page.feed(dom.stdout)
    assert page.by_id["version"].startswith("Server Version: proxympm/")
    # the page counts itself and the ?auto before it; Chromium may ask for a favicon
    # first (a 404 here, counted too), never more than that
    shown = int(page.by_id["accesses"])
    assert count + 1 <= shown <= count + 2, (count, shown)
    assert re.fullmatch(r"\d+ requests currently being processed, \d+ workers gracefully "
                        r"restarting, \d+ idle workers", page.by_id["workers"])
    procs = page.tables["processes"]
    assert procs[0][:3] == ["Slot", "PID", "Stopping"]
    rows = procs[2:-1]
    assert sorted(int(r[1]) for r in rows) == sorted(proxy.children())
    assert all(r[2] == "no" and r[4] == "yes" for r in rows)
    assert procs[-1][0] == "Sum" and procs[-1][1] == "2"
    grid = page.by_id["scoreboard"].replace("\n", "")
    assert len(grid) == 8 and set(grid) <= set("_SRWKDCLGI.")
    assert "W" in grid  # the worker rendering this page
    workers = page.tables["workers-table"]
    # Acc is this connection / this child / this slot: the worker slots add up to the
    # total but for the requests the listener completed itself (inline exchanges)
    assert 1 <= sum(int(r[2].split("/")[2]) for r in workers[1:]) <= shown
    assert any(r[-1] == "GET /server-status HTTP/1.1" and r[3] == "W" for r in workers[1:])
    header = page.tables["backends"][0]
    backends = {(r[0], r[1]): dict(zip(header, r, strict=True))
                for r in page.tables["backends"][1:]}
    cell = backends[("-", up)]
    assert cell["Requests"] == "7" and cell["Errors"] == "0" and cell["In flight"] == "0"
    assert cell["2xx"] == "7"
    assert backends[("balancer://pool", up)]["Requests"] == "0"
    assert backends[("balancer://pool", "(queue)")]["Queued"] == "0"

    shot = tmp_path / "status.png"
    r = _chromium_run([f"--screenshot={shot}", "--window-size=1280,1600",
                       f"{proxy.url}/server-status?notable"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_counters_carry_on_across_a_graceful_restart(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    up = f"http://127.0.0.1:{backend.port}"
    with requests.Session() as s:
        for i in range(5):
            assert s.get(f"{proxy.url}/app/{i}", timeout=10).status_code == 200
    wait_metric(proxy, lambda m: backend_value(m, "proxympm_backend_requests_total", up) == 5)
    old = set(proxy.children())
    total = int(auto(proxy)["Total Accesses"])
    os.kill(proxy.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 15
    while old & set(proxy.children()) or len(proxy.children()) < 2:
        assert time.monotonic() < deadline, "the old generation did not leave"
        time.sleep(0.1)
    with requests.Session() as s:
        for i in range(4):
            assert s.get(f"{proxy.url}/app/after/{i}", timeout=10).status_code == 200
    m, _ = wait_metric(proxy,
                       lambda m: backend_value(m, "proxympm_backend_requests_total", up) >= 9)
    assert backend_value(m, "proxympm_backend_requests_total", up) == 9
    a = auto(proxy)
    assert a["ParentServerMPMGeneration"] == "1"
    assert a["ParentServerConfigGeneration"] == "2"
    assert int(a["Total Accesses"]) >= total + 1 + 4


def test_restart_resets_the_statistics(proxympm: Callable[..., Proxy], backend: Backend) -> None:
    """-k restart (HUP) starts the statistics again, as httpd's does."""
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    up = f"http://127.0.0.1:{backend.port}"
    with requests.Session() as s:
        for i in range(3):
            assert s.get(f"{proxy.url}/app/{i}", timeout=10).status_code == 200
    wait_metric(proxy, lambda m: backend_value(m, "proxympm_backend_requests_total", up) == 3)
    old = set(proxy.children())
    os.kill(proxy.pid, signal.SIGHUP)
    deadline = time.monotonic() + 15
    while old & set(proxy.children()) or len(proxy.children()) < 2:
        assert time.monotonic() < deadline, "the restart did not replace the children"
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    asked = 0
    while True:  # each ?auto asked before this one counts
        a = auto(proxy)
        if "S" not in a["Scoreboard"] and a["Processes"] == "2":
            break
        asked += 1
        assert time.monotonic() < deadline, a
        time.sleep(0.05)
    assert int(a["Total Accesses"]) == asked and a["ParentServerMPMGeneration"] == "1"
    m = metrics(proxy)
    assert backend_value(m, "proxympm_backend_requests_total", up) == 0


def test_require_ip_sees_the_client_mod_remoteip_believes(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    """Behind a trusted proxy, Require ip judges the address mod_remoteip takes from
    X-Forwarded-For (httpd's useragent_ip), not the proxy's."""
    proxy = proxympm(
        "RemoteIPHeader X-Forwarded-For\nRemoteIPInternalProxy 127.0.0.1\n"
        '<Location "/server-status">\n    SetHandler server-status\n'
        "    Require ip 10.9.0.0/16\n</Location>\n")
    url = f"{proxy.url}/server-status?auto"
    assert requests.get(url, timeout=10).status_code == 403
    assert requests.get(url, headers={"X-Forwarded-For": "10.8.0.1"},
                        timeout=10).status_code == 403
    r = requests.get(url, headers={"X-Forwarded-For": "10.9.1.1"}, timeout=10)
    assert r.status_code == 200 and "Total Accesses:" in r.text


def test_plain_backends_show_their_server_wide_error_state(
        proxympm: Callable[..., Proxy], backend: Backend, free_port: Callable[[], int]) -> None:
    """A plain ProxyPass backend found refusing is in error state for ``retry``, in
    every child: the Backends table and the metrics say so, and for how long."""
    dead = free_port()
    proxy = proxympm(CONFIG + f'ProxyPass "/dead" "http://127.0.0.1:{dead}" retry=30\n',
                     b=backend.port, wait_children=2)
    assert requests.get(f"{proxy.url}/app/x", timeout=10).status_code == 200
    assert requests.get(f"{proxy.url}/dead/x", timeout=10).status_code == 503
    html = requests.get(f"{proxy.url}/server-status", timeout=10).text
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r'<tr><td class="l">-</td><td class="l">([^<]+)</td>(?:<td>[^<]*</td>){11}'
        r"<td>([^<]*)</td></tr>", html)}
    assert re.fullmatch(r"Err \((29|30)s\)", rows[f"http://127.0.0.1:{dead}"]), rows
    assert rows[f"http://127.0.0.1:{backend.port}"] == "Ok", rows
    text = requests.get(f"{proxy.url}/metrics", timeout=10).text
    left = {s.labels["backend"]: s.value
            for f in text_string_to_metric_families(text)
            if f.name == "proxympm_backend_error_seconds" for s in f.samples}
    assert 25 < left[f"http://127.0.0.1:{dead}"] <= 30
    assert left[f"http://127.0.0.1:{backend.port}"] == 0
