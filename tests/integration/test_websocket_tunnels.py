"""WebSocket (Upgrade) tunnels through a real proxympm: the ``websockets`` library as
client and as server (tests/support/ws_backend.py, its own process), echo both ways,
text and binary, messages far larger than the socket buffers (backpressure), the
close handshake, idle timeout, an upgrade the backend refuses, an upgrade on a route
that does not allow it, TLS on the client side and on the backend side (wss://).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support import procs
from tests.support.backend import Backend
from tests.support.servers import ROOT, Proxy, child_env, kill_tree

MakeProxy = Callable[..., Proxy]


@dataclass
class WSBackend:
    proc: subprocess.Popen[bytes]
    port: int
    starttime: int | None

    def stop(self) -> None:
        kill_tree(self.proc.pid, self.starttime)
        self.proc.wait(5)


@pytest.fixture
def ws_backend() -> Iterator[Callable[..., WSBackend]]:
    started: list[WSBackend] = []

    def start(tls: tuple[object, object] | None = None) -> WSBackend:
        args = [sys.executable, "-m", "tests.support.ws_backend"]
        if tls:
            args += ["--tls", str(tls[0]), str(tls[1])]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                cwd=ROOT, env=child_env(), start_new_session=True)
        st = procs.stat(proc.pid)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        backend = WSBackend(proc, int(line), st.starttime if st else None)
        started.append(backend)
        return backend

    yield start
    for b in started:
        b.stop()


CONF = """
StartServers 1
ServerLimit 1
ThreadsPerChild 2
MaxRequestWorkers 2
{extra}
ProxyPass /ws ws://127.0.0.1:{w}/ws
ProxyPass /hello ws://127.0.0.1:{w}/hello
ProxyPass /refuse ws://127.0.0.1:{w}/refuse
ProxyPass /any http://127.0.0.1:{w}/any upgrade=ANY
ProxyPass /plain http://127.0.0.1:{w}/plain
ProxyPass / http://127.0.0.1:{b}/
"""


def _client(url: str, **kw: object):  # type: ignore[no-untyped-def]
    return connect(url, max_size=None, compression=None, ping_interval=None,
                   open_timeout=10, close_timeout=5, proxy=None, **kw)


def test_echo_text_binary_large_and_close(proxympm: MakeProxy, ws_backend, backend: Backend
                                          ) -> None:
    w = ws_backend()
    proxy = proxympm(CONF, w=w.port, b=backend.port, extra="")
    big = os.urandom(8 * 1024 * 1024)  # far beyond every socket buffer on the way
    with _client(f"ws://127.0.0.1:{proxy.port}/ws") as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"
        ws.send(big)
        assert ws.recv(timeout=30) == big
        for i in range(50):  # many small messages, both ways, in order
            ws.send(f"m{i}")
        assert [ws.recv(timeout=10) for _ in range(50)] == [f"m{i}" for i in range(50)]
        # Both workers are free while the tunnel is open: plain requests are served.
        for _ in range(4):
            assert requests.get(f"{proxy.url}/x", timeout=10).status_code == 200
    assert ws.protocol.close_code == 1000  # the close handshake went through both ways
    proxy.wait_for_log("access", r'"GET /ws HTTP/1.1" 101 ')


def test_backend_speaking_first_and_any_protocol(proxympm: MakeProxy, ws_backend,
                                                 backend: Backend) -> None:
    w = ws_backend()
    proxy = proxympm(CONF, w=w.port, b=backend.port, extra="")
    with _client(f"ws://127.0.0.1:{proxy.port}/hello") as ws:
        assert ws.recv(timeout=10) == "hello from the backend"
        ws.send("and back")
        assert ws.recv(timeout=10) == "and back"
    with _client(f"ws://127.0.0.1:{proxy.port}/any") as ws:
        ws.send("any")
        assert ws.recv(timeout=10) == "any"


def test_refused_upgrade_and_route_without_upgrade(proxympm: MakeProxy, ws_backend,
                                                   backend: Backend) -> None:
    w = ws_backend()
    proxy = proxympm(CONF, w=w.port, b=backend.port, extra="")
    with pytest.raises(InvalidStatus) as refused:
        _client(f"ws://127.0.0.1:{proxy.port}/refuse")
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"no websocket for you\n"
    # No upgrade= on the route: Upgrade is hop-by-hop and stripped, so the backend
    # sees a plain GET and answers that (websockets: 426 Upgrade Required).
    with pytest.raises(InvalidStatus) as plain:
        _client(f"ws://127.0.0.1:{proxy.port}/plain")
    assert plain.value.response.status_code == 426
    # The proxy keeps serving, upgrades included.
    with _client(f"ws://127.0.0.1:{proxy.port}/ws") as ws:
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"


def test_idle_tunnel_is_closed(proxympm: MakeProxy, ws_backend, backend: Backend) -> None:
    w = ws_backend()
    proxy = proxympm(CONF, w=w.port, b=backend.port, extra="ProxyWebsocketIdleTimeout 1")
    with _client(f"ws://127.0.0.1:{proxy.port}/ws") as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=15)  # silence: the proxy closes the tunnel after 1 s
    proxy.wait_for_log("error", r"tunnel idle for 1s; closing it")


def test_tunnel_log_lines_name_the_believed_client(proxympm: MakeProxy, ws_backend,
                                                  backend: Backend) -> None:
    """Behind a trusted proxy (RemoteIPHeader), the listener's lines about a tunnel
    name the client mod_remoteip believes, as the worker's lines about its request
    and the access log do, not the proxy in front."""
    w = ws_backend()
    proxy = proxympm(CONF, w=w.port, b=backend.port, extra="""
ProxyWebsocketIdleTimeout 1
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
""")
    with _client(f"ws://127.0.0.1:{proxy.port}/ws",
                 additional_headers={"X-Forwarded-For": "203.0.113.50"}) as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=15)
    proxy.wait_for_log("access", r'^203\.0\.113\.50 .*"GET /ws HTTP/1\.1" 101 ')
    proxy.wait_for_log("error", r"\[client 203\.0\.113\.50:\d+\] tunnel idle for 1s")


def test_wss_backend_behind_a_tls_front(proxympm: MakeProxy, ws_backend, backend: Backend,
                                        certs) -> None:
    w = ws_backend(tls=(certs.cert_pem, certs.key_pem))
    conf = f"""
StartServers 1
ServerLimit 1
ThreadsPerChild 2
MaxRequestWorkers 2
Listen 127.0.0.1:{{port}} https
SSLProxyEngine on
SSLProxyCACertificateFile {certs.ca_pem}
<VirtualHost 127.0.0.1:{{port}}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile {certs.cert_pem}
    SSLCertificateKeyFile {certs.key_pem}
    ProxyPass /ws wss://localhost:{{w}}/ws
    ProxyPass /hello wss://localhost:{{w}}/hello
    ProxyPass / http://127.0.0.1:{{b}}/
</VirtualHost>
"""
    proxy = proxympm(conf, w=w.port, b=backend.port)
    ctx = ssl.create_default_context(cafile=str(certs.ca_pem))
    big = os.urandom(4 * 1024 * 1024)
    with _client(f"wss://localhost:{proxy.port}/ws", ssl=ctx) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=10) == "over tls"
        for _ in range(2):  # TLS records both ways, much more than any buffer
            ws.send(big)
            assert ws.recv(timeout=30) == big
        for i in range(30):
            ws.send(b"%d" % i)
        assert [ws.recv(timeout=10) for _ in range(30)] == [b"%d" % i for i in range(30)]
    assert ws.protocol.close_code == 1000
    with _client(f"wss://localhost:{proxy.port}/hello", ssl=ctx) as ws:
        assert ws.recv(timeout=10) == "hello from the backend"
    r = requests.get(f"https://localhost:{proxy.port}/x", verify=str(certs.ca_pem), timeout=10)
    assert r.status_code == 200


def test_upgrade_header_is_not_forwarded_on_plain_routes(proxympm: MakeProxy,
                                                         backend: Backend) -> None:
    proxy = proxympm("ProxyPass / http://127.0.0.1:{b}/ upgrade=websocket\n",
                     b=backend.port)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        # HTTP/1.0: Upgrade does not count (RFC 9110 7.8), the request is proxied plainly
        s.sendall(b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: upgrade\r\n"
                  b"Upgrade: websocket\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    seen = backend.requests[-1]
    assert seen.header("upgrade") is None
    assert "upgrade" not in (seen.header("connection") or "").lower()


def test_5000_websockets_through_one_child_with_4_threads(proxympm: MakeProxy, ws_backend,
                                                          backend: Backend) -> None:
    """Tunnels hold no worker: 5,000 open WebSockets on ThreadsPerChild 4, each echoing,
    while plain requests are still answered. The bulk uses the lean raw client
    (tests/support/wsclient.py); the library checks correctness beside them."""
    from tests.support.net import raise_nofile
    from tests.support.wsclient import echo_round, open_many

    count = 5000
    raise_nofile(2 * count + 1000)  # the child and the backend inherit it too
    w = ws_backend()
    proxy = proxympm("""
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4
ListenBacklog 2048
ProxyPass /ws ws://127.0.0.1:{w}/ws
ProxyPass / http://127.0.0.1:{b}/
""", w=w.port, b=backend.port)
    assert len(proxy.children()) == 1
    socks = open_many(proxy.port, b"/ws", count, batch=250, timeout=90)
    try:
        echo_round(socks, b"first")
        with _client(f"ws://127.0.0.1:{proxy.port}/ws") as ws:  # one more, by the library
            ws.send(b"\xff" * 100000)
            assert ws.recv(timeout=20) == b"\xff" * 100000
        with requests.Session() as session:
            for i in range(20):
                r = session.get(f"{proxy.url}/plain/{i}", timeout=10)
                assert r.status_code == 200
        echo_round(socks, b"second")
    finally:
        for s in socks:
            s.close()
    assert len(proxy.children()) == 1, "the child must not have been replaced"


def test_graceful_stop_lets_tunnels_run_until_the_timeout(proxympm: MakeProxy, ws_backend,
                                                          backend: Backend) -> None:
    """As httpd's event MPM: a graceful stop does not cut open tunnels; they go on until
    they end or GracefulShutdownTimeout passes, and then the child is stopped."""
    import signal

    w = ws_backend()
    proxy = proxympm(CONF, w=w.port, b=backend.port, extra="GracefulShutdownTimeout 2")
    with _client(f"ws://127.0.0.1:{proxy.port}/ws") as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        os.kill(proxy.pid, signal.SIGWINCH)
        proxy.wait_for_log("error", r"AH00492|graceful", timeout=10)
        ws.send("during the graceful stop")
        assert ws.recv(timeout=10) == "during the graceful stop"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)  # cut once GracefulShutdownTimeout has passed
    assert proxy.proc is not None
    assert proxy.proc.wait(20) == 0


def test_backpressure_holds_a_fast_sender_instead_of_buffering(proxympm: MakeProxy) -> None:
    """A backend that switches protocols and then does not read: the proxy must stop
    reading the client (its memory stays bounded), so the client's writes block after
    about the socket buffers' worth; once the backend reads, every byte arrives."""
    import threading

    lsock = socket.create_server(("127.0.0.1", 0))
    start_reading = threading.Event()
    received = bytearray()

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            assert b"upgrade: raw" in head.lower()
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            start_reading.wait(30)
            while data := conn.recv(1 << 20):
                received.extend(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proxy = proxympm("ProxyPass /raw http://127.0.0.1:{u}/ upgrade=raw\n",
                     u=lsock.getsockname()[1])
    limit = 64 * 1024 * 1024
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                      b"Upgrade: raw\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            assert head.startswith(b"HTTP/1.1 101 ")
            block = os.urandom(1 << 16)
            sent = 0
            s.settimeout(2.0)  # a write that cannot proceed for 2 s: the window is shut
            try:
                while sent < limit:
                    s.sendall(block)
                    sent += len(block)
            except TimeoutError:
                pass
            assert sent < limit, "the proxy took 64 MiB from a client its backend ignores"
            start_reading.set()
            s.settimeout(10)
            s.sendall(b"end")  # the held bytes and these drain once the backend reads
            s.shutdown(socket.SHUT_WR)  # passed on as a half-close: the backend sees EOF
            thread.join(30)
        assert len(received) >= sent + 3 and received.endswith(b"end")
        assert received[:len(block)] == block
    finally:
        lsock.close()


def test_tunnels_at_the_connection_cap_pause_accepting_and_say_so(
        proxympm: MakeProxy, ws_backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tunnel holds two descriptors, and the cap counts both: with RLIMIT_NOFILE 256
    and ThreadsPerChild 4 the cap is 180, so 90 tunnels fill it. The next client
    waits in the backlog, the operator is told why, and it is served once a tunnel
    ends."""
    import base64
    import time

    from tests.support.faults import wrapped_command
    from tests.support.wsclient import accept_value, handshake_request, open_many

    w = ws_backend()
    monkeypatch.setenv("PROXYMPM_CMD", wrapped_command(nofile=256))
    proxy = proxympm("""
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4
ProxyPass /ws ws://127.0.0.1:{w}/ws
""", w=w.port)
    socks = open_many(proxy.port, b"/ws", 90, batch=30, timeout=30)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as late:
            key = base64.b64encode(os.urandom(16))
            late.sendall(handshake_request(b"/ws", b"x", key))
            proxy.wait_for_log("error", r"too many open connections")
            socks.pop().close()  # one tunnel ends: room for the waiting client
            deadline = time.monotonic() + 10
            head = b""
            while b"\r\n\r\n" not in head and time.monotonic() < deadline:
                data = late.recv(65536)
                assert data, head
                head += data
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert accept_value(key) in head
    finally:
        for s in socks:
            s.close()
