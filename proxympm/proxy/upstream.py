"""Non-blocking upstream socket operations, each bounded by a timeout.

Upstream sockets are non-blocking: a send or recv is tried first and poll() is
used only when the kernel says EAGAIN. (A Python socket with a timeout polls
before every call, one extra syscall per operation on the hot path.)

``send_duplex`` keeps reading while it waits to write: an upstream that answers
before it has read the whole request (an echo, an early 413) must never deadlock
against us filling its receive window while it fills ours.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable

POLLIN = select.POLLIN | select.POLLPRI
POLLOUT = select.POLLOUT
RECV_SIZE = 65536


def wait(sock: socket.socket, events: int, timeout: float) -> int:
    """Wait until ``sock`` is ready for ``events``; TimeoutError after ``timeout``."""
    poller = select.poll()
    poller.register(sock, events)
    deadline = time.monotonic() + timeout
    while True:
        ready = poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
        if ready:
            return ready[0][1]
        if time.monotonic() >= deadline:
            raise TimeoutError("upstream timed out")


def connect(family: socket.AddressFamily, addr: tuple, timeout: float) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        err = sock.connect_ex(addr)
        if err == errno.EINPROGRESS:
            wait(sock, POLLOUT, timeout)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv(sock: socket.socket, timeout: float) -> bytes:
    try:
        return sock.recv(RECV_SIZE)
    except BlockingIOError:
        pass
    wait(sock, POLLIN, timeout)
    try:
        return sock.recv(RECV_SIZE)
    except BlockingIOError:  # spurious wake-up: one more bounded wait
        wait(sock, POLLIN, timeout)
        return sock.recv(RECV_SIZE)


def send_duplex(sock: socket.socket, data: bytes | memoryview, timeout: float,
                on_readable: Callable[[], None]) -> None:
    """Send everything; while the upstream's window is full, hand whatever it says
    meanwhile to ``on_readable`` (which may raise to stop sending)."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
            view = view[n:]
            continue
        except BlockingIOError:
            pass
        ready = wait(sock, POLLOUT | POLLIN, timeout)
        if ready & POLLIN:
            on_readable()
