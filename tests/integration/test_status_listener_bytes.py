"""server-status counts the bytes the listener sends after a worker handed it a
streamed response or an upgrade tunnel (in the listener's words of its child's
slot), not only what the worker sent before the hand-off."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from tests.support.backend import Backend
from tests.support.servers import Proxy

SIZE = 3_000_000
CONF = """
ServerLimit 1
<Location "/server-status">
    SetHandler server-status
</Location>
ProxyPass "/stream/" "http://127.0.0.1:{b}/" flushpackets=on
ProxyPass "/tunnel" "http://127.0.0.1:{t}/tunnel" upgrade=ANY
"""


def _total_kbytes(proxy: Proxy) -> int:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET /server-status?auto HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = _read_all(s).decode("latin-1")
    return int(text.split("Total kBytes: ", 1)[1].split("\n", 1)[0])


def _read_all(s: socket.socket) -> bytes:
    data = bytearray()
    while chunk := s.recv(1 << 16):
        data += chunk
    return bytes(data)


class UpgradeServer:
    """Answers one Upgrade request with 101, sends SIZE bytes, closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(10)
        conn, _ = self.sock.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf and (data := conn.recv(65536)):
                buf += data
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: bytes\r\n"
                         b"Connection: Upgrade\r\n\r\n" + b"t" * SIZE)

    def stop(self) -> None:
        self.thread.join(10)
        self.sock.close()


def test_bytes_sent_after_a_hand_off_are_counted(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    up = UpgradeServer()
    try:
        proxy = proxympm(CONF, b=backend.port, t=up.port)
        before = _total_kbytes(proxy)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"GET /stream/bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % SIZE)
            got = _read_all(s)
        assert got.startswith(b"HTTP/1.1 200 ") and len(got) > SIZE
        streamed = _total_kbytes(proxy)
        assert streamed - before >= SIZE // 1024, (before, streamed)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"GET /tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: bytes\r\n"
                      b"Connection: Upgrade\r\n\r\n")
            got = _read_all(s)
        assert got.startswith(b"HTTP/1.1 101 ") and got.endswith(b"t" * SIZE)
        tunneled = _total_kbytes(proxy)
        assert tunneled - streamed >= SIZE // 1024, (streamed, tunneled)
    finally:
        up.stop()
