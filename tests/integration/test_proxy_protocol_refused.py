"""Outbound PROXY protocol (``proxyprotocol=v1``) to a backend that accepts the
connection and resets it at once (as one does that refuses the header or its source
address): that is a failed connect. The address is avoided for ``retry`` seconds and
an idempotent request goes on to the next address of the name; a backend with no
other address goes into error state (503 straight away, no new connection, for
``retry`` seconds)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

import requests

from tests.support.dns import Dnsmasq
from tests.support.net import free_port
from tests.support.servers import Proxy

# one child: addresses marked down and error state are each child's own
ONE_CHILD = "StartServers 1\nServerLimit 1\n"


class TinyServer:
    """A loopback TCP server on ``host:port``: ``reset`` accepts and resets at once;
    otherwise it reads the PROXY line and a request head, answers 200 and closes."""

    def __init__(self, host: str, port: int, reset: bool) -> None:
        self.reset = reset
        self.connections = 0
        self.proxy_lines: list[bytes] = []
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                if self.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                conn.settimeout(5)
                buf = b""
                while b"\r\n\r\n" not in buf and (data := conn.recv(65536)):
                    buf += data
                self.proxy_lines.append(buf.split(b"\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n"
                             b"\r\ngood")

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def test_a_reset_after_the_header_moves_on_to_the_next_address(
    proxympm: Callable[..., Proxy], dnsmasq: Callable[..., Dnsmasq]
) -> None:
    port = free_port()
    bad, good = TinyServer("127.0.0.2", port, reset=True), TinyServer("127.0.0.3", port, False)
    try:
        dns = dnsmasq({"app.test": ["127.0.0.2", "127.0.0.3"]})
        proxy = proxympm(ONE_CHILD + 'ProxyDNSServers {dns}\n'
                         'ProxyPass "/" "http://app.test:{p}/" proxyprotocol=v1 retry=30\n',
                         dns=dns.server, p=port)
        with requests.Session() as s:
            for i in range(4):  # the round robin gives the resetting address its turn
                r = s.get(f"{proxy.url}/n{i}", timeout=10)
                assert (r.status_code, r.text) == (200, "good"), proxy.error_log()
        # refused once, then avoided for retry=30 s
        assert bad.connections == 1 and good.connections == 4
        assert all(line.startswith(b"PROXY TCP4 127.0.0.1 ") for line in good.proxy_lines)
    finally:
        bad.stop()
        good.stop()


def test_a_backend_that_resets_after_the_header_goes_into_error_state(
    proxympm: Callable[..., Proxy]
) -> None:
    bad = TinyServer("127.0.0.1", 0, reset=True)
    try:
        proxy = proxympm(ONE_CHILD
                         + 'ProxyPass "/" "http://127.0.0.1:{p}/" proxyprotocol=v2 retry=30\n',
                         p=bad.sock.getsockname()[1])
        assert requests.get(f"{proxy.url}/a", timeout=10).status_code == 503
        proxy.wait_for_log("error", r"AH00959: .* disabling worker")
        # in error state: refused at once, without a new connection
        assert requests.post(f"{proxy.url}/b", data=b"x", timeout=10).status_code == 503
        proxy.wait_for_log("error", r"AH00940: HTTP: disabled connection")
        assert bad.connections == 1
    finally:
        bad.stop()
