"""Response bytes the client has not taken yet: memory first, then a temp file.

This is what lets a worker read an upstream response as fast as the upstream
sends it while a slow client downloads: the worker appends to the spool, the
upstream connection goes back to the pool as soon as the response is complete,
and the listener thread drains the spool (write completion) as the client's
window opens. Past ``MEMORY_LIMIT`` bytes the rest goes to an unlinked temp file
(sent with sendfile on plain sockets); past ``FILE_LIMIT`` the writer has to wait
for the client instead (backpressure), as nginx does past proxy_max_temp_file_size.
If the temp directory is full or unwritable, the spool keeps what it has in
memory and reports ``full`` so the writer falls back to streaming; one log line
says so.

Ownership follows the connection: the worker fills it, then hands it (with the
connection) to the listener, which drains and closes it.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from collections import deque

MEMORY_LIMIT = 256 * 1024
FILE_LIMIT = 1 << 30  # nginx's proxy_max_temp_file_size default
SEND_CHUNK = 256 * 1024


def temp_file(prefix: str) -> int:
    """An unlinked temp file in $TMPDIR. Python's tempfile silently falls back to /tmp
    when $TMPDIR is missing or unwritable; an operator who set it must hear about
    it instead, so the directory is used as given and OSError propagates."""
    fd, path = tempfile.mkstemp(prefix=prefix, dir=os.environ.get("TMPDIR") or None)
    os.unlink(path)
    return fd


class Spool:
    __slots__ = ("_mem", "_mem_bytes", "_file", "_write_off", "_read_off", "spill_error",
                 "sent")

    def __init__(self) -> None:
        self._mem: deque[bytes] = deque()
        self._mem_bytes = 0
        self._file: int | None = None  # fd of an unlinked temp file
        self._write_off = 0
        self._read_off = 0
        self.spill_error: str | None = None
        self.sent = 0

    def __len__(self) -> int:
        return self._mem_bytes + self._write_off - self._read_off

    @property
    def full(self) -> bool:
        """The writer must wait for the client before adding more."""
        if self._file is None:
            return self._mem_bytes >= MEMORY_LIMIT and self.spill_error is not None
        return self._write_off - self._read_off >= FILE_LIMIT

    def append(self, data: bytes) -> None:
        if not data:
            return
        if self._file is None and self._mem_bytes + len(data) > MEMORY_LIMIT \
                and self.spill_error is None:
            self._spill()
        if self._file is None:
            self._mem.append(data)
            self._mem_bytes += len(data)
            return
        view = memoryview(data)
        while view:
            n = os.pwrite(self._file, view, self._write_off)
            self._write_off += n
            view = view[n:]

    def _spill(self) -> None:
        try:
            fd = temp_file("proxympm-")
        except OSError as exc:
            self.spill_error = f"cannot buffer to a temp file ({exc.strerror}); streaming"
            return
        self._file = fd

    def send_to(self, sock: socket.socket) -> bool:
        """Non-blocking: send what the socket takes. True once everything is sent.
        Raises OSError if the client is gone."""
        mem = self._mem
        try:
            while mem:
                head = mem[0]
                n = sock.send(head)
                self.sent += n
                self._mem_bytes -= n
                if n < len(head):
                    mem[0] = head[n:]
                    return False
                mem.popleft()
            while self._file is not None and self._read_off < self._write_off:
                count = min(SEND_CHUNK, self._write_off - self._read_off)
                if isinstance(sock, ssl.SSLSocket):
                    n = sock.send(os.pread(self._file, count, self._read_off))
                else:
                    n = os.sendfile(sock.fileno(), self._file, self._read_off, count)
                if n <= 0:
                    return False
                self._read_off += n
                self.sent += n
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        return True

    def close(self) -> None:
        self._mem.clear()
        self._mem_bytes = 0
        if self._file is not None:
            os.close(self._file)
            self._file = None


class BodyFile:
    """A request body buffered past the in-memory threshold: an unlinked temp file,
    written by the listener as the body arrives and sent (possibly twice, for a
    retry on a fresh upstream connection) by the worker."""

    __slots__ = ("fd", "size")

    def __init__(self) -> None:
        self.fd = temp_file("proxympm-body-")
        self.size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.size)
            self.size += n
            view = view[n:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
