"""Client-side helpers: ports, curl, and a holder of many idle keep-alive connections."""

from __future__ import annotations

import errno
import resource
import select
import socket
import subprocess
import threading
import time

CURL = "/usr/bin/curl"

_handed_out: set[int] = set()
_handed_lock = threading.Lock()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, never the same twice per run."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _handed_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port found")


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run curl without any proxy from the environment; output as text."""
    return subprocess.run(
        [CURL, "--noproxy", "*", "-sS", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``want`` (capped at the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class IdleConnections:
    """Opens N connections, sends one keep-alive GET on each, reads the whole
    response, then leaves them open and silent. At most ``batch`` are in the
    connect/request phase at once so neither the backlog nor the workers are overrun.
    """

    def __init__(self, port: int, path: str = "/", host: str = "127.0.0.1") -> None:
        self.addr = (host, port)
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        "User-Agent: idle-holder\r\n\r\n").encode()
        self.held: list[socket.socket] = []
        self.failures: dict[str, int] = {}

    def open(self, n: int, batch: int = 64, timeout: float = 60.0) -> int:
        """Open n more; returns how many are now established and idle."""
        ep = select.epoll()
        state: dict[int, tuple[socket.socket, bytearray]] = {}
        started = 0
        deadline = time.monotonic() + timeout

        def fail(fd: int, why: str) -> None:
            sock, _ = state.pop(fd)
            ep.unregister(fd)
            sock.close()
            self.failures[why] = self.failures.get(why, 0) + 1

        try:
            while (started < n or state) and time.monotonic() < deadline:
                while started < n and len(state) < batch:
                    started += 1
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    err = sock.connect_ex(self.addr)
                    if err not in (0, errno.EINPROGRESS):
                        sock.close()
                        self.failures[f"connect errno {err}"] = (
                            self.failures.get(f"connect errno {err}", 0) + 1)
                        continue
                    state[sock.fileno()] = (sock, bytearray())
                    ep.register(sock.fileno(), select.EPOLLOUT)
                for fd, ev in ep.poll(0.2):
                    sock, buf = state[fd]
                    if ev & select.EPOLLOUT:
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            fail(fd, "connect")
                            continue
                        sock.send(self.request)  # small: fits the send buffer
                        ep.modify(fd, select.EPOLLIN)
                        continue
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        fail(fd, "closed before the response")
                        continue
                    buf += data
                    if _response_complete(buf):
                        ep.unregister(fd)
                        del state[fd]
                        if b" 200 " not in buf[:16]:
                            sock.close()
                            self.failures["status"] = self.failures.get("status", 0) + 1
                        else:
                            self.held.append(sock)
            for fd in list(state):
                fail(fd, "timeout")
        finally:
            ep.close()
        return len(self.held)

    def still_open(self) -> int:
        """How many held connections show neither EOF nor data (the server kept them)."""
        ep = select.epoll()
        try:
            for sock in self.held:
                ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            events = ep.poll(0.1)
        finally:
            ep.close()
        return len(self.held) - len(events)

    def close(self) -> None:
        for sock in self.held:
            sock.close()
        self.held.clear()


def _response_complete(buf: bytearray) -> bool:
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep:
        return False
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:
        return body.endswith(b"0\r\n\r\n")
    return length is not None and len(body) >= length
