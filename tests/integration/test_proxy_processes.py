"""The arbiter as an operator sees it: -t, -S, -k, signals, respawn, PidFile, logs."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support import procs
from tests.support.backend import Backend
from tests.support.net import port_accepts
from tests.support.servers import Proxy

Cli = Callable[..., subprocess.CompletedProcess[str]]

ROUTES = """
ProxyPass "/app/" "http://127.0.0.1:{b}/" timeout=5 retry=5
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _good_config(tmp_path: Path, port: int, backend_port: int) -> Path:
    return _write(tmp_path / "good.conf", f"""\
# a complete, valid config
Listen 127.0.0.1:{port}
PidFile {tmp_path}/proxympm.pid
ErrorLog {tmp_path}/error_log
CustomLog {tmp_path}/access_log common
StartServers 1
ThreadsPerChild 4
MaxRequestWorkers 8
ProxyPass "/gone" "!"
ProxyPass "/app/" "http://127.0.0.1:{backend_port}/" timeout=2 retry=5
ProxyPassReverse "/app/" "http://127.0.0.1:{backend_port}/"
ProxyPass "/" "http://127.0.0.1:{backend_port}/"
""")


def test_config_test_accepts_a_good_config(
    proxympm_cli: Cli, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    conf = _good_config(tmp_path, free_port(), free_port())
    r = proxympm_cli("-t", "-f", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Syntax OK" in r.stdout + r.stderr
    assert not (tmp_path / "proxympm.pid").exists(), "-t must not start a server"


@pytest.mark.parametrize(
    ("bad_line", "line_no", "mentions"),
    [
        ("NoSuchDirective on", 3, "NoSuchDirective"),
        ("ThreadsPerChild lots", 3, "ThreadsPerChild"),
        ('ProxyPass "/x"', 3, "ProxyPass"),
    ],
)
def test_config_test_reports_file_and_line(
    proxympm_cli: Cli, tmp_path: Path, free_port: Callable[[], int],
    bad_line: str, line_no: int, mentions: str,
) -> None:
    conf = _write(tmp_path / "bad.conf", f"""\
Listen 127.0.0.1:{free_port()}
PidFile {tmp_path}/proxympm.pid
{bad_line}
ProxyPass "/" "http://127.0.0.1:{free_port()}/"
""")
    r = proxympm_cli("-t", "-f", str(conf))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert f"AH00526: Syntax error on line {line_no} of {conf}:" in out, out
    assert mentions in out, out
    assert "Syntax OK" not in out


def test_config_test_on_missing_file_fails(proxympm_cli: Cli, tmp_path: Path) -> None:
    r = proxympm_cli("-t", "-f", str(tmp_path / "nope.conf"))
    assert r.returncode != 0
    assert "Syntax OK" not in r.stdout + r.stderr


def test_dump_vhosts_shows_listeners_and_routes(
    proxympm_cli: Cli, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port, bport = free_port(), free_port()
    conf = _good_config(tmp_path, port, bport)
    r = proxympm_cli("-S", "-f", str(conf))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f"127.0.0.1:{port}" in out
    assert "/app/" in out
    assert f"http://127.0.0.1:{bport}/" in out


def test_pid_file_and_children(proxympm: Callable[..., Proxy], backend: Backend) -> None:
    proxy = proxympm(ROUTES + "StartServers 2\nServerLimit 2\n", b=backend.port,
                     wait_children=2)
    assert int(proxy.pid_file.read_text().strip()) == proxy.pid
    kids = proxy.wait_children(2)
    for kid in kids:
        st = procs.stat(kid)
        assert st is not None and st.ppid == proxy.pid
    # the arbiter never serves: it has a single thread
    assert len(procs.thread_ids(proxy.pid)) == 1


def test_killed_child_is_respawned_and_service_continues(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(ROUTES, b=backend.port)
    assert requests.get(f"{proxy.url}/before", timeout=10).status_code == 200
    victim = proxy.serving_child()
    before = set(proxy.children())
    os.kill(victim, signal.SIGKILL)
    new = proxy.wait_children(len(before), timeout=15, exclude=(victim,))
    assert victim not in new
    assert set(new) - before, "no new child was forked"
    assert proxy.running()
    deadline = time.monotonic() + 10
    while True:  # the listening socket is shared: service resumes within a moment
        try:
            if requests.get(f"{proxy.url}/after", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "no service after the child was respawned"
        time.sleep(0.2)
    for i in range(5):
        assert requests.get(f"{proxy.url}/again{i}", timeout=5).status_code == 200


def test_sigterm_stops_everything_and_removes_pid_file(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(ROUTES + "StartServers 2\nServerLimit 2\n", b=backend.port,
                     wait_children=2)
    assert requests.get(f"{proxy.url}/x", timeout=10).status_code == 200
    tree = proxy.tree()
    assert len(tree) >= 3
    proxy.stop()  # asserts that no process of the tree is left
    assert not procs.survivors(tree)
    assert not proxy.pid_file.exists()
    assert not port_accepts(proxy.port)


def test_k_stop_via_pid_file(
    proxympm: Callable[..., Proxy], proxympm_cli: Cli, backend: Backend
) -> None:
    proxy = proxympm(ROUTES, b=backend.port)
    tree = proxy.tree()
    r = proxympm_cli("-f", str(proxy.conf_path), "-k", "stop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert proxy.proc is not None
    proxy.proc.wait(15)
    assert not procs.wait_gone(tree, 5)
    assert not proxy.pid_file.exists()


def test_k_graceful_loses_no_request(
    proxympm: Callable[..., Proxy], proxympm_cli: Cli, backend: Backend
) -> None:
    proxy = proxympm(ROUTES, b=backend.port)
    old_children = set(proxy.children())
    result: dict[str, object] = {}

    def slow() -> None:
        try:
            result["status"] = requests.get(f"{proxy.url}/slow/2", timeout=15).status_code
        except requests.RequestException as exc:
            result["error"] = exc

    t = threading.Thread(target=slow)
    t.start()
    backend.wait_for_requests(1)
    r = proxympm_cli("-f", str(proxy.conf_path), "-k", "graceful")
    assert r.returncode == 0, r.stdout + r.stderr
    for i in range(5):
        assert requests.get(f"{proxy.url}/during{i}", timeout=10).status_code == 200
    t.join(20)
    assert result == {"status": 200}
    assert proxy.running()
    assert int(proxy.pid_file.read_text().strip()) == proxy.pid
    deadline = time.monotonic() + 15
    while set(proxy.children()) & old_children:
        assert time.monotonic() < deadline, "old generation never retired"
        time.sleep(0.1)
    assert proxy.children()


def test_access_log_common_format(proxympm: Callable[..., Proxy], backend: Backend) -> None:
    proxy = proxympm(ROUTES + 'ProxyPass "/gone" "!"\n', b=backend.port)
    r = requests.get(f"{proxy.url}/app/bytes/1234?q=1", timeout=10)
    assert r.status_code == 200
    date = r"\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]"
    proxy.wait_for_log(
        "access", rf'^127\.0\.0\.1 - - {date} "GET /app/bytes/1234\?q=1 HTTP/1\.1" 200 1234$')
    requests.get(f"{proxy.url}/app/status/204", timeout=10)
    proxy.wait_for_log(
        "access", rf'^127\.0\.0\.1 - - {date} "GET /app/status/204 HTTP/1\.1" 204 -$')
