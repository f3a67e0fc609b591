"""Handles on the real servers the fixtures in tests/conftest.py start.

``Proxy`` (a proxympm arbiter), ``Gunicorn``, ``Certs``, and ``render_config`` which
turns a test's config text or dict into a complete httpd.conf. Processes are started
in a new session so that the arbiter's pid is also its session id; cleanup finds the
whole tree by pid (parent links and session id, with start times), never by name.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import procs
from tests.support.net import port_accepts

ROOT = Path(__file__).resolve().parents[2]

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def proxympm_command() -> list[str]:
    """How to run proxympm: ``python -m proxympm``, or ``$PROXYMPM_CMD`` (split like a
    shell would) to run the suite against another build."""
    override = os.environ.get("PROXYMPM_CMD")
    return shlex.split(override) if override else [sys.executable, "-m", "proxympm"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kill_tree(pid: int, starttime: int | None) -> None:
    """SIGKILL pid (if it is still the process we started), its descendants and its
    session (pid == sid for processes started with start_new_session)."""
    members = procs.tree(pid, session=pid)
    if starttime is not None:
        members = [p for p in members if p.pid != pid or p.starttime == starttime]
    procs.kill_all(members, signal.SIGKILL)
    procs.wait_gone(members, 5)


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
        kill_tree(self.pid, self.starttime)


# Small, fast test defaults, added only when the config does not set the directive.
DEFAULTS: dict[str, str] = {
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
    head = [f"{k} {v}" for k, v in DEFAULTS.items() if k.lower() not in present]
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

    def queued(self, group: str) -> int:
        """The server-wide queue length of ``group`` (a balancer, or a capped plain
        backend's name), read from /metrics (which the config must serve)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            page = r.read().decode()
        found = re.search(r'proxympm_balancer_member_queued\{balancer="' + re.escape(group)
                          + r'"[^}]*\} (\d+)', page)
        assert found, page
        return int(found.group(1))

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
                [*proxympm_command(), "-f", str(self.conf_path), "-D", "FOREGROUND"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.dir,
                env=child_env(), start_new_session=True,
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
            kill_tree(self.pid, self.starttime)
            raise AssertionError(f"arbiter still running {timeout}s after SIGTERM") from None
        left = procs.wait_gone(members + procs.tree(self.pid, session=self.pid), 5)
        if left:
            procs.kill_all(left)
            raise AssertionError(f"processes left after the arbiter stopped: {left}")
        return code

    def kill(self) -> None:
        if self.proc is not None:
            kill_tree(self.pid, self.starttime)
            if self.proc.poll() is None:
                self.proc.wait(5)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca_pem: Path  # trust this
    cert_pem: Path  # server certificate chain (leaf first)
    key_pem: Path  # server private key
