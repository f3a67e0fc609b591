"""The access log as an operator uses it: every format directive the issue lists,
checked against the request actually sent, and rotation with the real logrotate
(rename, then ``proxympm -k graceful`` in postrotate, as deploy/ documents) while
requests flow: no line lost, new lines in the new file.

Clients talk to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from tests.support.backend import Backend
from tests.support.rawhttp import RawClient, request_bytes
from tests.support.servers import Proxy, child_env, proxympm_command

FIELDS = ("%h %a %l %u %t %r %m %U %q %H %>s %s %b %B %D %T %{X-Test}i %{Content-Type}o "
          "%{BALANCER_WORKER_NAME}e %{NOT_SET}e %v %A %p %P %X %I %O %{ms}T").split()

FORMAT_CONFIG = """
ServerName logs.example
LogFormat "{fmt}" every
CustomLog "{access_log}" every
ProxyPass "/app" "http://127.0.0.1:{b}" retry=0
"""


def test_every_format_directive_matches_the_request(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(FORMAT_CONFIG, b=backend.port, fmt="\\t".join(FIELDS))
    sent: list[bytes] = []
    got = []
    with RawClient(proxy.port) as client:
        for i, extra in enumerate(([], [("Connection", "close")])):
            raw = request_bytes("GET", f"/app/fmt/{i}?x=1&y=%20z", f"127.0.0.1:{proxy.port}",
                                headers=[("X-Test", f"hello {i}"), *extra])
            began = time.time()
            client.send(raw)
            resp = client.read_response()
            took = time.time() - began
            assert resp.status == 200
            sent.append(raw)
            got.append((resp, began, took))
    lines = []
    deadline = time.monotonic() + 5
    while len(lines) < 2:
        assert time.monotonic() < deadline, proxy.access_log()
        lines = proxy.access_log().splitlines()
        time.sleep(0.05)
    children = proxy.children()
    for i, line in enumerate(lines):
        resp, began, took = got[i]
        v = dict(zip(FIELDS, line.split("\t"), strict=True))
        assert v["%h"] == v["%a"] == "127.0.0.1"
        assert v["%l"] == "-" and v["%u"] == "-"
        when = datetime.strptime(v["%t"], "[%d/%b/%Y:%H:%M:%S %z]").timestamp()
        assert began - 1 <= when <= began + took + 1
        assert v["%r"] == f"GET /app/fmt/{i}?x=1&y=%20z HTTP/1.1"
        assert v["%m"] == "GET" and v["%U"] == f"/app/fmt/{i}" and v["%q"] == "?x=1&y=%20z"
        assert v["%H"] == "HTTP/1.1"
        assert v["%>s"] == v["%s"] == "200"
        assert int(v["%b"]) == int(v["%B"]) == len(resp.body) > 0
        assert 0 < int(v["%D"]) <= (took + 0.5) * 1e6  # logged just after the response
        assert int(v["%T"]) == int(v["%D"]) // 1_000_000
        assert int(v["%{ms}T"]) == int(v["%D"]) // 1000
        assert v["%{X-Test}i"] == f"hello {i}"
        assert v["%{Content-Type}o"] == resp.header("content-type")
        assert v["%{BALANCER_WORKER_NAME}e"] == f"http://127.0.0.1:{backend.port}"
        assert v["%{NOT_SET}e"] == "-"
        assert v["%v"] == "logs.example"
        assert v["%A"] == "127.0.0.1"  # the address the listener is bound to
        assert v["%p"] == str(proxy.port)
        assert int(v["%P"]) in children
        assert v["%X"] == ("+" if i == 0 else "-")  # kept alive, then Connection: close
        assert int(v["%I"]) == len(sent[i])
        assert int(v["%O"]) == len(resp.raw_head) + len(resp.body)


ROTATE_CONFIG = """
StartServers 2
ServerLimit 4
ThreadsPerChild 4
MaxRequestWorkers 16
KeepAliveTimeout 5
LogFormat "%U %>s" seq
CustomLog "{access_log}" seq
ProxyPass "/app" "http://127.0.0.1:{b}" retry=0
"""


def test_logrotate_rename_and_graceful_loses_no_line(
    proxympm: Callable[..., Proxy], backend: Backend, tmp_path: Path
) -> None:
    proxy = proxympm(ROTATE_CONFIG, b=backend.port, wait_children=2)
    log = proxy.access_log_path
    graceful = shlex.join([*proxympm_command(), "-f", str(proxy.conf_path), "-k", "graceful"])
    rotate_conf = tmp_path / "logrotate.conf"
    rotate_conf.write_text(
        f"{log} {{\n    rotate 3\n    missingok\n    nocompress\n    sharedscripts\n"
        f"    postrotate\n        {graceful}\n    endscript\n}}\n")
    stop = threading.Event()
    ok: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(name: str) -> None:
        n = 0
        with requests.Session() as s:
            s.mount("http://", HTTPAdapter(max_retries=0))
            while not stop.is_set():
                path = f"/app/{name}/{n}"
                n += 1
                try:
                    status = s.get(f"{proxy.url}{path}", timeout=15).status_code
                except requests.RequestException as exc:
                    with lock:
                        failures.append(f"{path}: {exc!r}")
                    continue
                with lock:
                    (ok if status == 200 else failures).append(path if status == 200
                                                               else f"{path}: {status}")

    threads = [threading.Thread(target=client, args=(f"c{i}",), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(ok) < 30:
        assert time.monotonic() < deadline and not failures, failures
        time.sleep(0.05)
    old_children = set(proxy.children())
    r = subprocess.run(["logrotate", "-v", "-s", str(tmp_path / "state"), "-f",
                        str(rotate_conf)], capture_output=True, text=True, timeout=60,
                       env=child_env())
    assert r.returncode == 0, r.stdout + r.stderr
    rotated = Path(f"{log}.1")
    assert rotated.exists()
    # requests go on until the new generation logged some and the old one is gone
    deadline = time.monotonic() + 20
    while old_children & set(proxy.children()) or not log.exists() \
            or len(log.read_text().splitlines()) < 20:
        assert time.monotonic() < deadline, proxy.diagnostics()
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(20)
    assert not failures, failures[:5]
    # a line is written once its response is relayed: wait (bounded) for the last ones
    deadline = time.monotonic() + 5
    while True:
        old_lines = rotated.read_text().splitlines()
        new_lines = log.read_text().splitlines()
        if len(old_lines) + len(new_lines) >= len(ok) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    logged = [line.split()[0] for line in old_lines + new_lines]
    assert all(line.endswith(" 200") for line in old_lines + new_lines)
    assert sorted(logged) == sorted(ok), "a line was lost or written twice"
    assert len(old_lines) >= 30 and len(new_lines) >= 20
    assert re.search(r"AH00493", proxy.error_log())
