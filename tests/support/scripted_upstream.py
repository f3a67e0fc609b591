"""A raw-socket upstream that answers each request with scripted bytes.

The recording ``Backend`` only ever sends well-formed HTTP; this one sends exactly
the bytes a test gives it (malformed heads, two responses to one request, interim
1xx, ...) so a test can see how the proxy treats a broken upstream. It counts
accepted connections and notes, per connection, when the peer closed it, so a test
can tell whether the proxy pooled a connection or dropped it.

Threads: ``_accept_loop`` on the accept thread; ``_serve`` on one thread per
connection; ``connections`` and ``requests`` are shared, guarded by ``_lock``.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

# An answer is the bytes to send, or a callable returning a list of (delay, bytes)
# steps; ``close`` after the answer closes the connection from our side.
Steps = list[tuple[float, bytes]]


@dataclass
class Script:
    steps: Steps
    close: bool = False


@dataclass
class SeenRequest:
    connection_id: int
    method: bytes
    target: bytes
    head: bytes
    body: bytes


@dataclass
class UpstreamConnection:
    id: int
    requests: int = 0
    peer_closed_at: float | None = None  # monotonic time the proxy closed it
    closed_by_us: bool = False


@dataclass
class ScriptedUpstream:
    """``answers`` maps a request path (exact, query ignored) to a Script; unknown
    paths get ``200 ok``. ``default`` overrides that fallback."""

    answers: dict[bytes, Script] = field(default_factory=dict)
    default: Script | None = None
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._running = False
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._socks: set[socket.socket] = set()
        self.connections: list[UpstreamConnection] = []
        self.requests: list[SeenRequest] = []

    # -- caller's thread ----------------------------------------------------------

    def start(self) -> ScriptedUpstream:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((self.host, self.port))
        lsock.listen(128)
        lsock.settimeout(0.1)
        self.port = lsock.getsockname()[1]
        self._listener = lsock
        self._running = True
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="scripted-upstream-accept")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
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

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return len(self.connections)

    def wait_closed(self, conn_id: int, timeout: float) -> bool:
        """True once the proxy has closed connection ``conn_id`` (1-based)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.connections[conn_id - 1].peer_closed_at is not None:
                    return True
            time.sleep(0.01)
        return False

    def is_open(self, conn_id: int) -> bool:
        with self._lock:
            c = self.connections[conn_id - 1]
            return c.peer_closed_at is None and not c.closed_by_us

    # -- accept thread --------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while self._running:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                conn = UpstreamConnection(len(self.connections) + 1)
                self.connections.append(conn)
                self._socks.add(sock)
            threading.Thread(target=self._serve, args=(sock, conn), daemon=True,
                             name=f"scripted-upstream-{conn.id}").start()

    # -- connection threads ------------------------------------------------------------

    def _serve(self, sock: socket.socket, conn: UpstreamConnection) -> None:
        buf = bytearray()
        try:
            while self._running:
                head = _read_head(sock, buf)
                if head is None:
                    with self._lock:
                        conn.peer_closed_at = time.monotonic()
                    return
                body = _read_body(sock, buf, head)
                line = head.split(b"\r\n", 1)[0].split(b" ")
                method, target = line[0], line[1] if len(line) > 1 else b""
                with self._lock:
                    conn.requests += 1
                    self.requests.append(SeenRequest(conn.id, method, target, head, body))
                script = self.answers.get(target.split(b"?", 1)[0]) or self.default or Script(
                    [(0.0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")])
                for delay, data in script.steps:
                    if delay:
                        time.sleep(delay)
                    sock.sendall(data)
                if script.close:
                    with self._lock:
                        conn.closed_by_us = True
                    return
        except OSError:
            with self._lock:
                conn.peer_closed_at = conn.peer_closed_at or time.monotonic()
        finally:
            with self._lock:
                self._socks.discard(sock)
            sock.close()


def _read_head(sock: socket.socket, buf: bytearray) -> bytes | None:
    while (end := buf.find(b"\r\n\r\n")) < 0:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head = bytes(buf[: end + 4])
    del buf[: end + 4]
    return head


def _read_body(sock: socket.socket, buf: bytearray, head: bytes) -> bytes:
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding":
            return _read_chunked(sock, buf)
    while len(buf) < length:
        data = sock.recv(65536)
        if not data:
            raise OSError("EOF in request body")
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return body


def _read_chunked(sock: socket.socket, buf: bytearray) -> bytes:
    # Enough for the proxy's well-formed chunked output; trailers are skipped.
    out = bytearray()

    def line() -> bytes:
        while (end := buf.find(b"\r\n")) < 0:
            data = sock.recv(65536)
            if not data:
                raise OSError("EOF in chunked body")
            buf.extend(data)
        text = bytes(buf[:end])
        del buf[: end + 2]
        return text

    while True:
        size = int(line().split(b";")[0], 16)
        if size == 0:
            while line():
                pass
            return bytes(out)
        while len(buf) < size + 2:
            data = sock.recv(65536)
            if not data:
                raise OSError("EOF in chunk")
            buf.extend(data)
        out += buf[:size]
        del buf[: size + 2]


def once(data: bytes, close: bool = False) -> Script:
    """A script that sends ``data`` at once."""
    return Script([(0.0, data)], close)

