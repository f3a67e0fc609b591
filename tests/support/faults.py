"""Fault injection helpers for tests/integration/test_faults.py.

- ``FaultyUpstream``: a raw TCP upstream whose every connection misbehaves in one
  chosen way (reset, close right after accept, garbage, a response that never ends,
  a stall before or after the head, a stall mid-body). It never answers properly, it
  counts connections, and ``stop`` releases every stalled connection.
- ``wrapped_command``: a ``PROXYMPM_CMD`` value that runs proxympm under a lowered
  RLIMIT_NOFILE (soft *and* hard) and/or with another TMPDIR, by exec (the arbiter
  keeps the wrapper's pid, so the fixtures still find and stop it by pid).
- ``HalfServer``: a subprocess upstream (``python -m tests.support.faults half``) that
  answers ``/ok`` normally and, for ``/half``, sends a head and half of the body, then
  waits to be SIGKILLed by the test.

Threads: ``FaultyUpstream._accept_loop`` on its accept thread, ``_serve`` on one
thread per connection; ``connections`` is guarded by ``_lock``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from tests.support.servers import child_env, proxympm_command

MODES = (
    "reset",             # read the request, then RST
    "close_on_accept",   # close at once, before reading anything
    "garbage",           # not HTTP, then close
    "no_end",            # 200 without framing (body until close), some bytes, never closes
    "stall",             # read the request, never answer
    "stall_after_head",  # a complete head (Content-Length: 100), then nothing
    "stall_mid_body",    # Content-Length: 1000, 500 bytes, then nothing
)


class FaultyUpstream:
    def __init__(self, mode: str) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.port = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FaultyUpstream:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        lsock.settimeout(0.1)
        self.port = lsock.getsockname()[1]
        self._listener = lsock
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"faulty-{self.mode}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _read_head(self, sock: socket.socket) -> bool:
        buf = b""
        sock.settimeout(10)
        while b"\r\n\r\n" not in buf:
            try:
                data = sock.recv(65536)
            except OSError:
                return False
            if not data:
                return False
            buf += data
        return True

    def _serve(self, sock: socket.socket) -> None:
        mode = self.mode
        try:
            if mode == "close_on_accept":
                return
            if not self._read_head(sock):
                return
            if mode == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if mode == "garbage":
                sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage\r\n\r\n")
                return
            if mode == "no_end":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"n" * 300)
            elif mode == "stall_after_head":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            elif mode == "stall_mid_body":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"m" * 500)
            self._stop.wait(60)  # hold the connection open, silent
        except OSError:
            pass
        finally:
            sock.close()


# -- running proxympm under other limits -----------------------------------------------


def wrapped_command(nofile: int | None = None, tmpdir: str | None = None) -> str:
    """A PROXYMPM_CMD string: this module's ``exec`` entry, then proxympm."""
    args = [sys.executable, "-m", "tests.support.faults", "exec"]
    if nofile is not None:
        args += ["--nofile", str(nofile)]
    if tmpdir is not None:
        args += ["--tmpdir", tmpdir]
    return shlex.join([*args, "--", *proxympm_command()])


def _exec(nofile: int | None, tmpdir: str | None, argv: list[str]) -> None:
    if nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    if tmpdir is not None:
        os.environ["TMPDIR"] = tmpdir
    os.execvp(argv[0], argv)


# -- a subprocess upstream that can be killed mid-response -----------------------------

HALF_TOTAL = 200_000


def _half_serve(sock: socket.socket) -> None:
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            target = head.split(b" ", 2)[1]
            if target.startswith(b"/half"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HALF_TOTAL
                             + b"h" * (HALF_TOTAL // 2))
                print("HALF-SENT", flush=True)
                time.sleep(3600)  # until SIGKILLed
            body = b"ok " + target + b"\n"
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass


def _half_main(port: int) -> None:
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(64)
    print(f"READY {lsock.getsockname()[1]}", flush=True)
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=_half_serve, args=(sock,), daemon=True).start()


class HalfServer:
    """The ``half`` upstream as a subprocess; ``kill`` SIGKILLs it by pid."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.faults", "half", "--port", str(port)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=child_env(),
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith(b"READY "), line
        self.port = int(line.split()[1])

    def wait_half_sent(self, timeout: float = 5.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        import select

        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                line = self.proc.stdout.readline()
                if line.startswith(b"HALF-SENT"):
                    return
        raise AssertionError("upstream never sent the half body")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("exec")
    ex.add_argument("--nofile", type=int)
    ex.add_argument("--tmpdir")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    half = sub.add_parser("half")
    half.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cmd == "exec":
        rest = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        _exec(args.nofile, args.tmpdir, rest)
    else:
        _half_main(args.port)


if __name__ == "__main__":
    main()
