"""Every fixture that starts a real server lives here, and every one cleans up by pid.

Fixtures:

- ``free_port``: the function ``free_port() -> int`` (127.0.0.1, never repeated).
- ``backend_factory(name="backend", port=0, start=True, **kw) -> Backend``; ``backend``:
  one started ``Backend`` named "backend". In-process threads, stopped at teardown.
- ``gunicorn_server(app=..., workers=2, worker_class="sync", args=()) -> Gunicorn``:
  a real gunicorn subprocess on a free port; stopped by pid at teardown.
- ``proxympm(config, *, start=True, wait_children=1, **values) -> Proxy``: writes the
  config under tmp_path and runs ``python -m proxympm -f CONF -D FOREGROUND``.
  ``config`` is httpd.conf text with ``{placeholders}`` or a dict of directive ->
  value (a list repeats the directive). Placeholders: ``{port}`` (a free port the
  proxy listens on), ``{dir}``, ``{pid_file}``, ``{error_log}``, ``{access_log}``, and
  any keyword given (e.g. ``b1=backend.port``). Other braces (``${VAR}``) are left
  alone. Missing ``Listen``/``PidFile``/``ErrorLog``/``CustomLog``/``LogLevel`` and the
  MPM sizing directives get small test defaults (see ``_DEFAULTS``).
- ``proxympm_cli(*args) -> CompletedProcess``: ``python -m proxympm ARGS`` (e.g. -t).
- ``certs`` (session): a trustme CA and a server cert for localhost/127.0.0.1/::1.

Processes are started in a new session, so the arbiter's pid is also the session id:
teardown SIGKILLs every live descendant and every member of that session, each
identified by pid and start time. Nothing is ever killed by name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import procs  # noqa: E402
from tests.support.backend import Backend  # noqa: E402
from tests.support.net import free_port as _free_port  # noqa: E402
from tests.support.net import port_accepts  # noqa: E402

# Nothing here may go through a proxy from the environment.
for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill_tree(pid: int, starttime: int | None) -> None:
    """SIGKILL pid (if it is still the process we started), its descendants and its
    session (pid == sid for processes started with start_new_session)."""
    members = procs.tree(pid, session=pid)
    if starttime is not None:
        members = [p for p in members if p.pid != pid or p.starttime == starttime]
    procs.kill_all(members, signal.SIGKILL)
    procs.wait_gone(members, 5)


@pytest.fixture
def free_port() -> Callable[[], int]:
    return _free_port


# -- backends -----------------------------------------------------------------------


@pytest.fixture
def backend_factory() -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(name: str = "backend", port: int = 0, start: bool = True, **kw: object) -> Backend:
        b = Backend(name=name, port=port, **kw)  # type: ignore[arg-type]
        started.append(b)
        return b.start() if start else b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def backend(backend_factory: Callable[..., Backend]) -> Backend:
    return backend_factory("backend")


# -- gunicorn -----------------------------------------------------------------------


@dataclass
class Gunicorn:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    starttime: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return procs.children(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            members = procs.tree(self.pid, session=self.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            procs.kill_all(procs.survivors(members))
        _kill_tree(self.pid, self.starttime)


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    servers: list[Gunicorn] = []

    def start(
        app: str = "tests.support.wsgi_app:app",
        workers: int = 2,
        worker_class: str = "sync",
        args: tuple[str, ...] = (),
    ) -> Gunicorn:
        port = _free_port()
        log_path = tmp_path / f"gunicorn-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", worker_class,
                 "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT), "--graceful-timeout", "5",
                 *args, app],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=ROOT, env=_child_env(), start_new_session=True,
            )
        st = procs.stat(proc.pid)
        server = Gunicorn(proc, port, log_path, st.starttime if st else None)
        servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_accepts(port) and len(server.workers()) >= workers):
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {proc.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready in {START_TIMEOUT}s:\n{server.log()}")
            time.sleep(0.05)
        return server

    yield start
    for server in servers:
        server.stop()


# -- proxympm -----------------------------------------------------------------------

# Small, fast test defaults, added only when the config does not set the directive.
_DEFAULTS: dict[str, str] = {
    "Listen": "127.0.0.1:{port}",
    "PidFile": "{pid_file}",
    "ErrorLog": "{error_log}",
    "CustomLog": "{access_log} common",
    "LogLevel": "info",
    "StartServers": "1",
    "ServerLimit": "2",
    "ThreadsPerChild": "4",
    "MaxRequestWorkers": "8",
    "MinSpareThreads": "1",
    "MaxSpareThreads": "16",
}

_PLACEHOLDER = re.compile(r"(?<!\$)\{(\w+)\}")


def render_config(config: str | dict[str, object], values: dict[str, object]) -> str:
    """Config text from text-or-dict, placeholders filled, test defaults added."""
    if isinstance(config, dict):
        lines = []
        for name, value in config.items():
            for v in value if isinstance(value, list | tuple) else [value]:
                lines.append(f"{name} {v}")
        text = "\n".join(lines) + "\n"
    else:
        text = config
    present = {m.group(1).lower() for m in re.finditer(r"^\s*(\w+)", text, re.M)}
    head = [f"{k} {v}" for k, v in _DEFAULTS.items() if k.lower() not in present]
    text = "\n".join(head) + "\n" + text

    def fill(m: re.Match[str]) -> str:
        return str(values[m.group(1)]) if m.group(1) in values else m.group(0)

    return _PLACEHOLDER.sub(fill, text)


@dataclass
class Proxy:
    """A proxympm arbiter started by the ``proxympm`` fixture."""

    dir: Path
    conf_path: Path
    port: int
    pid_file: Path
    error_log_path: Path
    access_log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starttime: int | None = None
    _outputs: list[Path] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # logs and output
    def error_log(self) -> str:
        return _read(self.error_log_path)

    def access_log(self) -> str:
        return _read(self.access_log_path)

    def stdout(self) -> str:
        return _read(self.dir / "stdout.txt")

    def stderr(self) -> str:
        return _read(self.dir / "stderr.txt")

    def diagnostics(self) -> str:
        return (f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}\n"
                f"--- error_log\n{self.error_log()}")

    def wait_for_log(self, which: str, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex, multiline) appears in "error" or "access" log."""
        read = self.error_log if which == "error" else self.access_log
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, read(), re.M)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in the {which} log:\n{read()}")
            time.sleep(0.05)

    # processes
    def children(self) -> list[int]:
        """Live direct children of the arbiter (serving children and any watchdog)."""
        return procs.children(self.pid)

    def tree(self) -> list[procs.ProcStat]:
        return procs.tree(self.pid, session=self.pid)

    def serving_child(self) -> int:
        """The child with the most threads (a serving child has listener + workers;
        a watchdog has fewer)."""
        kids = self.children()
        assert kids, "no children"
        return max(kids, key=lambda pid: len(procs.thread_ids(pid)))

    def wait_children(
        self, n: int, timeout: float = 15.0, exclude: tuple[int, ...] = ()
    ) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            kids = [k for k in self.children() if k not in exclude]
            if len(kids) >= n:
                return kids
            if not self.running():
                raise AssertionError(f"proxympm exited {self.proc.returncode}:\n"  # type: ignore[union-attr]
                                     f"{self.diagnostics()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(kids)} children after {timeout}s, wanted {n}")
            time.sleep(0.05)

    # lifecycle
    def start(self, wait_children: int = 1) -> Proxy:
        out = open(self.dir / "stdout.txt", "wb")  # noqa: SIM115 - handed to the child
        err = open(self.dir / "stderr.txt", "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxympm", "-f", str(self.conf_path), "-D", "FOREGROUND"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.dir,
                env=_child_env(), start_new_session=True,
            )
        finally:
            out.close()
            err.close()
        st = procs.stat(self.proc.pid)
        self.starttime = st.starttime if st else None
        deadline = time.monotonic() + START_TIMEOUT
        while not port_accepts(self.port):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"proxympm exited {self.proc.returncode} before listening:\n"
                    f"{self.diagnostics()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"proxympm not listening after {START_TIMEOUT}s:\n"
                                     f"{self.diagnostics()}")
            time.sleep(0.05)
        if wait_children:
            self.wait_children(wait_children)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the arbiter, wait for it, and assert that nothing of its tree is left."""
        assert self.proc is not None
        members = self.tree()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(self.pid, self.starttime)
            raise AssertionError(f"arbiter still running {timeout}s after SIGTERM") from None
        left = procs.wait_gone(members + procs.tree(self.pid, session=self.pid), 5)
        if left:
            procs.kill_all(left)
            raise AssertionError(f"processes left after the arbiter stopped: {left}")
        return code

    def kill(self) -> None:
        if self.proc is not None:
            _kill_tree(self.pid, self.starttime)
            if self.proc.poll() is None:
                self.proc.wait(5)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@pytest.fixture
def proxympm(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def make(
        config: str | dict[str, object],
        *,
        start: bool = True,
        wait_children: int = 1,
        port: int | None = None,
        **values: object,
    ) -> Proxy:
        pdir = tmp_path / f"proxympm{len(started)}"
        pdir.mkdir()
        port = port or _free_port()
        proxy = Proxy(
            dir=pdir,
            conf_path=pdir / "proxympm.conf",
            port=port,
            pid_file=pdir / "proxympm.pid",
            error_log_path=pdir / "error_log",
            access_log_path=pdir / "access_log",
        )
        all_values = {
            "port": port,
            "dir": pdir,
            "pid_file": proxy.pid_file,
            "error_log": proxy.error_log_path,
            "access_log": proxy.access_log_path,
            **values,
        }
        proxy.conf_path.write_text(render_config(config, all_values))
        started.append(proxy)
        return proxy.start(wait_children) if start else proxy

    yield make
    for proxy in started:
        proxy.kill()


@pytest.fixture
def proxympm_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "proxympm", *args],
            capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=_child_env(),
            stdin=subprocess.DEVNULL, check=False,
        )

    return run


# -- TLS material -------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca_pem: Path  # trust this
    cert_pem: Path  # server certificate chain (leaf first)
    key_pem: Path  # server private key


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    import trustme

    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    result = Certs(d, d / "ca.pem", d / "server.pem", d / "server-key.pem")
    ca.cert_pem.write_to_path(str(result.ca_pem))
    server.private_key_pem.write_to_path(str(result.key_pem))
    with open(result.cert_pem, "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    return result
