"""Non-blocking upstream socket operations, each bounded by a timeout.

Upstream sockets are non-blocking: a send or recv is tried first and poll() is
used only when the kernel says EAGAIN. (A Python socket with a timeout polls
before every call, one extra syscall per operation on the hot path.)

``send_duplex`` keeps reading while it waits to write: an upstream that answers
before it has read the whole request (an echo, an early 413) must never deadlock
against us filling its receive window while it fills ours.

For ``https://`` backends: ``handshake`` turns a connected socket into a
non-blocking SSLSocket, and ``recv_tls``, ``send_duplex_tls``, ``still_open_tls``
are the TLS counterparts of ``recv``, ``send_duplex`` and the pool's EOF check.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl
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


# ---------------------------------------------------------------------------
# TLS to https:// backends. A non-blocking SSLSocket signals "not now" with
# SSLWantReadError/SSLWantWriteError, not BlockingIOError, and either direction may
# need the other (a TLS 1.3 session ticket arrives while we wait to read; a write
# can need a read during a key update). Decrypted bytes may also sit in the SSL
# object (``pending()``) while the fd is not readable, so poll() is only asked
# after OpenSSL has said it needs the network.


def handshake(sock: socket.socket, ctx: ssl.SSLContext, server_hostname: str | None,
              timeout: float) -> ssl.SSLSocket:
    """Wrap a connected non-blocking ``sock`` and complete the TLS handshake within
    ``timeout`` seconds. ``server_hostname`` is sent as SNI (not for an IP address)
    and checked against the certificate when ``ctx.check_hostname`` is set.

    Returns the SSLSocket, still non-blocking; ``sock`` is detached into it. Raises
    ssl.SSLCertVerificationError (bad chain or name), ssl.SSLError (any other TLS
    failure), OSError (reset), TimeoutError; on any failure the socket is closed.
    """
    deadline = time.monotonic() + timeout
    try:
        tls = ctx.wrap_socket(sock, server_side=False, do_handshake_on_connect=False,
                              server_hostname=server_hostname or None)
    except BaseException:
        sock.close()
        raise
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                events = POLLIN
            except ssl.SSLWantWriteError:
                events = POLLOUT
            wait(tls, events, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        tls.close()
        raise TimeoutError("TLS handshake with upstream timed out") from None
    except BaseException:
        tls.close()
        raise


def recv_tls(sock: ssl.SSLSocket, timeout: float) -> bytes:
    """``recv`` for a non-blocking SSLSocket: decrypted bytes (b"" at EOF, with or
    without close_notify), waiting at most ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sock.recv(RECV_SIZE)
        except ssl.SSLWantReadError:
            events = POLLIN
        except ssl.SSLWantWriteError:
            events = POLLOUT
        wait(sock, events, max(0.0, deadline - time.monotonic()))


def send_duplex_tls(sock: ssl.SSLSocket, data: bytes | memoryview, timeout: float,
                    on_readable: Callable[[], None]) -> None:
    """``send_duplex`` for a non-blocking SSLSocket. ``on_readable`` must read with
    ``sock.recv`` and treat SSLWantReadError/SSLWantWriteError as "nothing yet".

    An SSL_write that said "want" is retried with the same buffer, as OpenSSL
    requires; reads in between are allowed."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
            view = view[n:]
            continue
        except ssl.SSLWantWriteError:
            events = POLLOUT | POLLIN
        except ssl.SSLWantReadError:
            events = POLLIN
        if sock.pending():  # already decrypted: poll() would not report it
            on_readable()
            continue
        ready = wait(sock, events, timeout)
        if ready & POLLIN:
            on_readable()


def still_open_tls(sock: ssl.SSLSocket) -> bool:
    """The pool's EOF check for a TLS upstream (``pool._still_open`` for plain TCP).

    Readable while idle is not enough to refuse a TLS connection: the record may
    be a TLS 1.3 session ticket or key update, which OpenSSL consumes without
    yielding a byte. Any application byte or EOF (close_notify or not) means the
    connection cannot carry another request."""
    if sock.pending():
        return False
    poller = select.poll()
    poller.register(sock, POLLIN)
    for _ in range(8):  # a few protocol records at most; more is suspect anyway
        if not poller.poll(0):
            return True
        try:
            sock.recv(RECV_SIZE)  # bytes: stray data; b"": EOF
        except ssl.SSLWantReadError:
            continue  # a record that carried no data: look again
        except OSError:  # SSLWantWriteError included
            return False
        return False
    return False


def sendfile_duplex(sock: socket.socket, fd: int, size: int, timeout: float,
                    on_readable: Callable[[], None]) -> None:
    """Send ``size`` bytes of file ``fd`` (from offset 0) like ``send_duplex``:
    zero-copy with sendfile on plain TCP, read and encrypt in chunks under TLS."""
    offset = 0
    if isinstance(sock, ssl.SSLSocket):
        while offset < size:
            chunk = os.pread(fd, min(256 * 1024, size - offset), offset)
            if not chunk:
                raise OSError("request body file shorter than announced")
            send_duplex_tls(sock, chunk, timeout, on_readable)
            offset += len(chunk)
        return
    while offset < size:
        try:
            n = os.sendfile(sock.fileno(), fd, offset, size - offset)
        except BlockingIOError:
            ready = wait(sock, POLLOUT | POLLIN, timeout)
            if ready & POLLIN:
                on_readable()
            continue
        if n == 0:
            raise OSError("request body file shorter than announced")
        offset += n
