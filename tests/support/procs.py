"""What /proc says about a process tree: members, threads, memory, liveness.

Everything the fixtures kill is found here by pid (parent links and session id),
never by name. A pid is identified together with its start time, so a recycled pid
is never mistaken for one of ours.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    num_threads: int
    starttime: int


def stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("latin-1")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm is in parentheses and may itself contain ')' or spaces.
    lpar, rpar = data.index("("), data.rindex(")")
    rest = data[rpar + 2 :].split()
    return ProcStat(
        pid=pid,
        comm=data[lpar + 1 : rpar],
        state=rest[0],
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        session=int(rest[3]),
        num_threads=int(rest[17]),
        starttime=int(rest[19]),
    )


def all_stats() -> list[ProcStat]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(int(name))
            if st is not None:
                out.append(st)
    return out


def children(pid: int) -> list[int]:
    """Live (non-zombie) direct children of pid."""
    return sorted(s.pid for s in all_stats() if s.ppid == pid and s.state != "Z")


def tree(pid: int, session: int | None = None) -> list[ProcStat]:
    """pid and every live descendant; plus, if given, every member of ``session``
    (catches processes re-parented to init after their parent died)."""
    stats = all_stats()
    by_parent: dict[int, list[ProcStat]] = {}
    for s in stats:
        by_parent.setdefault(s.ppid, []).append(s)
    found: dict[int, ProcStat] = {}
    root = stat(pid)
    todo = [root] if root is not None else []
    if session is not None:
        todo += [s for s in stats if s.session == session]
    while todo:
        s = todo.pop()
        if s.pid in found or s.state == "Z":
            continue
        found[s.pid] = s
        todo.extend(by_parent.get(s.pid, []))
    return sorted(found.values(), key=lambda s: s.pid)


def alive(pid: int, starttime: int | None = None) -> bool:
    """True if pid runs (not a zombie) and, if given, started at ``starttime``."""
    s = stat(pid)
    if s is None or s.state in ("Z", "X"):
        return False
    return starttime is None or s.starttime == starttime


def survivors(procs: list[ProcStat]) -> list[ProcStat]:
    return [p for p in procs if alive(p.pid, p.starttime)]


def kill_all(procs: list[ProcStat], sig: int = signal.SIGKILL) -> None:
    for p in procs:
        if alive(p.pid, p.starttime):
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass


def wait_gone(procs: list[ProcStat], timeout: float) -> list[ProcStat]:
    deadline = time.monotonic() + timeout
    left = survivors(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = survivors(left)
    return left


def thread_ids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return []


def thread_names(pid: int) -> list[str]:
    names = []
    for tid in thread_ids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass
    return names


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, PermissionError):
        return 0


def tcp_owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the accepted end (IPv4 loopback) of the connection a
    client made from ``client_port`` to ``server_port``: for tests that must know
    which child of a server took a connection."""
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (fields[1].endswith(f":{server_port:04X}")
                    and fields[2].endswith(f":{client_port:04X}")):
                inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of every process in a tree until stopped; keeps each pid's peak."""

    def __init__(self, root_pid: int, interval: float = 0.05) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.peak_kib: dict[int, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        """Take one sample now (also callable from the thread moving the data, so that
        samples fall inside a transfer however fast it is)."""
        for p in tree(self.root_pid):
            kib = rss_kib(p.pid)
            if kib is not None:
                self.peak_kib[p.pid] = max(kib, self.peak_kib.get(p.pid, 0))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def worst(self) -> tuple[int, int]:
        """(pid, peak KiB) of the process that peaked highest."""
        return max(self.peak_kib.items(), key=lambda kv: kv[1])
