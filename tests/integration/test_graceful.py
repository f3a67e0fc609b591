"""Restarts and stops as an operator does them, under load: USR1 graceful restart
loses nothing, a bad new config keeps the old one serving, HUP restart, WINCH
graceful stop with GracefulShutdownTimeout, and the ``-k`` variants.

Every client here talks to 127.0.0.1 only and every loop is bounded in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter

from tests.support import procs
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


# -- a new config that cannot be served ------------------------------------------------


def _serves(proxy: Proxy, path: str = "/check") -> None:
    r = requests.get(f"{proxy.url}{path}", timeout=10)
    assert r.status_code == 200, r.text


def _refused_reload_keeps_old(proxy: Proxy, bad: str, mentions: str) -> None:
    good = proxy.conf_path.read_text()
    old = set(proxy.children())
    proxy.conf_path.write_text(good + bad)
    load = Load(proxy.url, keepalive_threads=2, new_conn_threads=2).start()
    try:
        os.kill(proxy.pid, signal.SIGUSR1)
        proxy.wait_for_log("error", "AH00526: new configuration refused", timeout=10)
        time.sleep(0.5)
    finally:
        load.finish()
    assert not load.failures, load.failures[:10]
    assert mentions in proxy.error_log(), proxy.error_log()
    assert set(proxy.children()) == old, "a refused config must not replace the children"
    _serves(proxy)
    # fixed again: the next graceful restart takes it
    proxy.conf_path.write_text(good)
    os.kill(proxy.pid, signal.SIGUSR1)
    _generation_up(proxy, old, 2)
    _serves(proxy, "/fixed")


def test_syntax_error_on_graceful_keeps_old_config_serving(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    _refused_reload_keeps_old(proxy, "NoSuchDirective here\n", "NoSuchDirective")


def test_missing_certificate_on_graceful_keeps_old_config_serving(
    proxympm: Callable[..., Proxy], backend: Backend, free_port: Callable[[], int],
    certs: object,
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    tls_port = free_port()
    bad = f"""
Listen 127.0.0.1:{tls_port} https
<VirtualHost 127.0.0.1:{tls_port}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile {proxy.dir}/missing-cert.pem
    SSLCertificateKeyFile {proxy.dir}/missing-key.pem
    ProxyPass / http://127.0.0.1:{backend.port}/
</VirtualHost>
"""
    _refused_reload_keeps_old(proxy, bad, "missing-cert.pem")
    assert not port_accepts(tls_port), "a refused config must not open its listeners"


def test_k_graceful_with_bad_config_sends_nothing(
    proxympm: Callable[..., Proxy], proxympm_cli: Cli, backend: Backend
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    old = set(proxy.children())
    good = proxy.conf_path.read_text()
    proxy.conf_path.write_text(good + "ThreadsPerChild lots\n")
    r = proxympm_cli("-f", str(proxy.conf_path), "-k", "graceful")
    assert r.returncode == 1 and "ThreadsPerChild" in r.stderr, r.stdout + r.stderr
    time.sleep(0.5)
    assert "AH00493" not in proxy.error_log()
    assert set(proxy.children()) == old
    _serves(proxy)


# -- HUP restart, WINCH graceful stop, -k ----------------------------------------------


def test_hup_restart_replaces_children_and_keeps_listening(
    proxympm: Callable[..., Proxy], proxympm_cli: Cli, backend: Backend
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    for how in ("signal", "-k"):
        old = set(proxy.children())
        if how == "signal":
            os.kill(proxy.pid, signal.SIGHUP)
        else:
            r = proxympm_cli("-f", str(proxy.conf_path), "-k", "restart")
            assert r.returncode == 0, r.stdout + r.stderr
        new = _generation_up(proxy, old, 2)
        deadline = time.monotonic() + 10
        while set(proxy.children()) & old:
            assert time.monotonic() < deadline, "old children survived a restart"
            time.sleep(0.05)
        assert set(proxy.children()) == new
        _serves(proxy, f"/after-{how}")
    assert proxy.error_log().count("AH00494") == 2
    assert int(proxy.pid_file.read_text()) == proxy.pid


def _slow_request(url: str, result: dict[str, object]) -> threading.Thread:
    def run() -> None:
        try:
            result["status"] = requests.get(url, timeout=30).status_code
        except requests.RequestException as exc:
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_graceful_stop_finishes_inflight_request(
    proxympm: Callable[..., Proxy], proxympm_cli: Cli, backend: Backend
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    tree = proxy.tree()
    result: dict[str, object] = {}
    t = _slow_request(f"{proxy.url}/slow/2", result)
    backend.wait_for_requests(1)
    r = proxympm_cli("-f", str(proxy.conf_path), "-k", "graceful-stop")
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + 5
    while port_accepts(proxy.port):  # listeners close at once
        assert time.monotonic() < deadline, "still accepting after graceful-stop"
        time.sleep(0.05)
    assert not proxy.pid_file.exists(), "graceful-stop removes the PidFile"
    t.join(15)
    assert result == {"status": 200}
    assert proxy.proc is not None
    assert proxy.proc.wait(10) == 0
    assert not procs.wait_gone(tree, 5)
    assert "AH00492" in proxy.error_log()


def test_graceful_stop_closes_connections_that_sent_nothing(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    """Clients that connected and sent nothing, not even their PROXY header, are
    closed like idle keep-alive connections: they do not hold the stop up until
    their read timeout (20 s). One that sends its request meanwhile is served."""
    proxy = proxympm("RemoteIPProxyProtocol On\nRequestReadTimeout header=20\n"
                     "ProxyPass / http://127.0.0.1:{b}/\n", b=backend.port)
    clients = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
               for _ in range(4)]
    # TCP_DEFER_ACCEPT: the kernel hands a connection that sends nothing to a child
    # only after ~1 s
    deadline = time.monotonic() + 10
    while any(procs.tcp_owner(proxy.port, c.getsockname()[1], proxy.children()) is None
              for c in clients):
        assert time.monotonic() < deadline, "never accepted"
        time.sleep(0.05)
    *silent, late = clients
    started = time.monotonic()
    os.kill(proxy.pid, signal.SIGWINCH)
    time.sleep(0.3)
    late.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 80\r\n"
                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert late.recv(65536).startswith(b"HTTP/1.1 200")
    assert proxy.proc is not None
    assert proxy.proc.wait(15) == 0
    took = time.monotonic() - started
    assert took < 5, f"the stop took {took:.1f} s"
    for c in silent:
        assert c.recv(10) == b""  # closed, not reset
    for c in clients:
        c.close()


def test_graceful_stop_timeout_terminates_children(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONFIG + "GracefulShutdownTimeout 1\n", b=backend.port,
                     wait_children=2)
    tree = proxy.tree()
    result: dict[str, object] = {}
    t = _slow_request(f"{proxy.url}/slow/8", result)
    backend.wait_for_requests(1)
    started = time.monotonic()
    os.kill(proxy.pid, signal.SIGWINCH)
    assert proxy.proc is not None
    assert proxy.proc.wait(10) == 0
    took = time.monotonic() - started
    assert took < 5, f"arbiter took {took:.1f}s with GracefulShutdownTimeout 1"
    assert not procs.wait_gone(tree, 5)
    t.join(10)
    assert "error" in result, "the in-flight request outlived the timeout"


def test_graceful_restart_is_not_cut_by_graceful_shutdown_timeout(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    """GracefulShutdownTimeout is for graceful-stop: after USR1 an old child lets a
    request that runs longer than it finish (httpd's old generation has no limit)."""
    proxy = proxympm(CONFIG + "GracefulShutdownTimeout 1\n", b=backend.port,
                     wait_children=2)
    result: dict[str, object] = {}
    t = _slow_request(f"{proxy.url}/slow/3", result)
    backend.wait_for_requests(1)
    os.kill(proxy.pid, signal.SIGUSR1)
    proxy.wait_for_log("error", "AH00493")
    t.join(15)
    assert result == {"status": 200}, proxy.diagnostics()


def test_changed_listen_set_opens_and_closes_only_what_changed(
    proxympm: Callable[..., Proxy], backend: Backend, free_port: Callable[[], int]
) -> None:
    proxy = proxympm(CONFIG, b=backend.port, wait_children=2)
    extra = free_port()
    base = proxy.conf_path.read_text()
    proxy.conf_path.write_text(base + f"Listen 127.0.0.1:{extra}\n")
    old = set(proxy.children())
    os.kill(proxy.pid, signal.SIGUSR1)
    _generation_up(proxy, old, 2)
    assert requests.get(f"http://127.0.0.1:{extra}/new-port", timeout=10).status_code == 200
    _serves(proxy, "/old-port")
    # drop it again: that port closes once its old children are gone, the other stays
    proxy.conf_path.write_text(base)
    old = set(proxy.children())
    os.kill(proxy.pid, signal.SIGUSR1)
    _generation_up(proxy, old, 2)
    deadline = time.monotonic() + 15
    while port_accepts(extra):
        assert time.monotonic() < deadline, "a Listen removed from the config stays open"
        time.sleep(0.1)
    _serves(proxy, "/still")
