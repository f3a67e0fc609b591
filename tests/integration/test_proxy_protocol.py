"""The PROXY protocol: inbound on a Listen (RemoteIPProxyProtocol On), from raw
sockets and from a real HAProxy (send-proxy / send-proxy-v2), plain and TLS; and
outbound (ProxyPass ... proxyprotocol=v1|v2) to a real HAProxy that accepts it
(bind ... accept-proxy) and tells the backend what it read."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.backend import Backend
from tests.support.haproxy import HAProxy
from tests.support.net import free_port
from tests.support.rawhttp import RawClient, request_bytes
from tests.support.servers import Certs, Proxy

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_tcp4(src: str, sport: int, dst: str, dport: int, tlv: bytes = b"") -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    body += tlv
    return V2_SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body


def v2_tcp6(src: str, sport: int, dst: str, dport: int) -> bytes:
    body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))
    return V2_SIG + b"\x21\x21" + struct.pack("!H", len(body)) + body


HAPROXY_DEFAULTS = """
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
"""

LOG = 'LogFormat "%a %{c}a %r" pp\nCustomLog {access_log} pp\n'


@pytest.fixture
def pp_proxy(proxympm: Callable[..., Proxy], backend: Backend) -> Proxy:
    return proxympm(LOG + "RequestReadTimeout header=2\nRemoteIPProxyProtocol On\n"
                    "ProxyPass / http://127.0.0.1:{b}/\n", b=backend.port)


@pytest.fixture
def haproxies(tmp_path: Path) -> Iterator[Callable[[str], HAProxy]]:
    started: list[HAProxy] = []

    def start(config: str) -> HAProxy:
        d = tmp_path / f"haproxy{len(started)}"
        d.mkdir()
        h = HAProxy(d, config)
        started.append(h)
        return h.start()

    yield start
    for h in started:
        h.stop()


def _exchange(port: int, preface: bytes, path: str = "/pp",
              pieces: int = 1) -> tuple[int, bytes]:
    with RawClient(port) as c:
        data = preface + request_bytes("GET", path, "pp.test")
        step = max(1, len(preface) // pieces)
        for i in range(0, len(preface), step):  # the header in pieces, paced
            c.send(data[i:min(i + step, len(preface))])
            time.sleep(0.02 if pieces > 1 else 0)
        c.send(data[len(preface):])
        resp = c.read_response()
        return resp.status, resp.body


INBOUND = [
    (b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\n", "203.0.113.7"),
    (b"PROXY TCP6 2001:db8::9 ::1 40000 443\r\n", "2001:db8::9"),
    (v2_tcp4("198.51.100.4", 1234, "127.0.0.1", 80), "198.51.100.4"),
    (v2_tcp4("198.51.100.5", 1234, "127.0.0.1", 80, tlv=b"\x04\x00\x03abc"), "198.51.100.5"),
    (v2_tcp6("2001:db8::5", 1, "2001:db8::1", 2), "2001:db8::5"),
    (b"PROXY UNKNOWN\r\n", "127.0.0.1"),  # keep the real peer
    (V2_SIG + b"\x20\x00\x00\x00", "127.0.0.1"),  # v2 LOCAL (a balancer's health check)
]

MALFORMED = [
    b"GET /pp HTTP/1.1\r\n",  # no header at all
    b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\n",
    b"PROXY TCP4 203.0.113.7 127.0.0.1 70000 80\r\n",
    b"PROXY TCP9 a b 1 2\r\n",
    b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2" + b" " * 100 + b"\r\n",  # over 107 bytes
    V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
    V2_SIG + b"\x21\x11\x00\x04" + b"\x00" * 4,  # address block too short
]


def test_inbound_header_sets_the_client_address(pp_proxy: Proxy, backend: Backend) -> None:
    """Each header whole, and cut in four paced pieces (the listener must wait for
    the rest without reading past the header)."""
    for preface, client in INBOUND:
        for pieces in (1, 4):
            status, _ = _exchange(pp_proxy.port, preface, pieces=pieces)
            assert status == 200, (preface, pieces)
            assert backend.requests[-1].header("X-Forwarded-For") == client, preface
    # a line is written just after its response: wait until all are there
    expected = 2 * len(INBOUND)
    deadline = time.monotonic() + 5
    while len(pp_proxy.access_log().splitlines()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = pp_proxy.access_log().splitlines()
    assert lines == [f"{client} {client} GET /pp HTTP/1.1" for _, client in INBOUND
                     for _ in (1, 4)]


def test_malformed_header_closes_only_that_connection(pp_proxy: Proxy,
                                                      backend: Backend) -> None:
    for number, preface in enumerate(MALFORMED):
        good = RawClient(pp_proxy.port)
        good.send(b"PROXY TCP4 203.0.113.8 127.0.0.1 1 80\r\n")  # pending meanwhile
        with RawClient(pp_proxy.port) as bad:
            bad.send(preface)
            bad.sock.settimeout(5)
            try:
                assert bad.sock.recv(100) == b"", preface
            except ConnectionResetError:
                pass
        with good:
            good.send(request_bytes("GET", f"/after{number}", "pp.test"))
            assert good.read_response().status == 200
    assert [r.target for r in backend.requests] == [f"/after{n}" for n in range(len(MALFORMED))]
    assert pp_proxy.error_log().count(":error] ") == len(MALFORMED)  # one line each


def test_header_read_times_out(pp_proxy: Proxy) -> None:
    with RawClient(pp_proxy.port) as c:
        c.send(b"PROXY TCP4 1.2.3.4")
        c.sock.settimeout(10)
        start = time.monotonic()
        assert c.sock.recv(100) == b""
        assert time.monotonic() - start < 8
    pp_proxy.wait_for_log("error", r"AH03507: RemoteIPProxyProtocol: no complete PROXY header")


def test_tls_listener_reads_the_header_before_the_handshake(
        proxympm: Callable[..., Proxy], backend: Backend, certs: Certs) -> None:
    proxy = proxympm(LOG + """
Listen {port} https
<VirtualHost *:{port}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile {cert}
    SSLCertificateKeyFile {key}
    RemoteIPProxyProtocol On
    ProxyPass / http://127.0.0.1:{b}/
</VirtualHost>
""", b=backend.port, cert=certs.cert_pem, key=certs.key_pem)
    ctx = ssl.create_default_context(cafile=str(certs.ca_pem))
    for preface in (b"PROXY TCP4 203.0.113.20 127.0.0.1 5555 443\r\n",
                    v2_tcp4("203.0.113.21", 5556, "127.0.0.1", 443)):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
            raw.sendall(preface)
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(request_bytes("GET", "/tls", "localhost",
                                          [("Connection", "close")]))
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        assert backend.requests[-1].header("X-Forwarded-Proto") == "https"
    assert [r.header("X-Forwarded-For") for r in backend.requests] == [
        "203.0.113.20", "203.0.113.21"]


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_behind_a_real_haproxy(pp_proxy: Proxy, backend: Backend,
                               haproxies: Callable[[str], HAProxy], send: str) -> None:
    front = free_port()
    haproxies(HAPROXY_DEFAULTS + f"""
frontend f
    bind 127.0.0.2:{front}
    default_backend b
backend b
    server px 127.0.0.1:{pp_proxy.port} {send}
""")
    # the client connects from 127.0.0.3: HAProxy's PROXY header says so
    with socket.socket() as s:
        s.bind(("127.0.0.3", 0))
        s.settimeout(10)
        s.connect(("127.0.0.2", front))
        s.sendall(request_bytes("GET", "/via-haproxy", "pp.test", [("Connection", "close")]))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert backend.requests[-1].header("X-Forwarded-For") == "127.0.0.3"
    pp_proxy.wait_for_log("access", r"^127\.0\.0\.3 127\.0\.0\.3 GET /via-haproxy ")


def test_towards_a_real_haproxy_backend(proxympm: Callable[..., Proxy], backend: Backend,
                                        haproxies: Callable[[str], HAProxy]) -> None:
    v1, v2 = free_port(), free_port()
    haproxies(HAPROXY_DEFAULTS + f"""
frontend v1
    bind 127.0.0.1:{v1} accept-proxy
    http-request set-header X-PP-Src %[src]
    http-request set-header X-PP-Dst %[dst]:%[dst_port]
    default_backend b
frontend v2
    bind 127.0.0.1:{v2} accept-proxy
    http-request set-header X-PP-Src %[src]
    http-request set-header X-PP-Dst %[dst]:%[dst_port]
    default_backend b
backend b
    server app 127.0.0.1:{backend.port}
""")
    proxy = proxympm("""
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
ProxyPass /v1/ http://127.0.0.1:{v1}/ proxyprotocol=v1
ProxyPass /v2/ http://127.0.0.1:{v2}/ proxyprotocol=v2
""", v1=v1, v2=v2)
    with requests.Session() as s:  # one client connection, two different believed clients
        for version in ("v1", "v2"):
            for client in ("203.0.113.31", "203.0.113.32"):
                r = s.get(f"{proxy.url}/{version}/x", timeout=10,
                          headers={"X-Forwarded-For": client})
                assert r.status_code == 200, r.text
                seen = backend.requests[-1]
                # an upstream connection carries one client: never reused for the next
                assert seen.header("X-PP-Src") == client
                assert seen.header("X-PP-Dst") == f"127.0.0.1:{proxy.port}"


def test_exceptions_connect_without_a_header(proxympm: Callable[..., Proxy],
                                             backend: Backend) -> None:
    proxy = proxympm("RemoteIPProxyProtocol On\nRemoteIPProxyProtocolExceptions 127.0.0.1\n"
                     "ProxyPass / http://127.0.0.1:{b}/\n", b=backend.port)
    assert requests.get(proxy.url + "/plain", timeout=10).status_code == 200
    assert backend.requests[-1].header("X-Forwarded-For") == "127.0.0.1"
    with socket.socket() as s:  # another peer still owes a header
        s.bind(("127.0.0.5", 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", proxy.port))
        s.sendall(request_bytes("GET", "/nope", "pp.test"))
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    proxy.wait_for_log("error", r"\[client 127\.0\.0\.5:\d+\] AH03507")
    assert [r.target for r in backend.requests] == ["/plain"]


def test_a_streamed_body_over_a_proxy_header_connection_is_not_pooled(
        proxympm: Callable[..., Proxy]) -> None:
    """An upstream connection that began with a PROXY header speaks for one client
    only: after a body the listener relayed (flushpackets=on) it is closed, as after
    one a worker relayed, not kept idle in the pool."""
    import threading

    lsock = socket.create_server(("127.0.0.1", 0))
    first_seen = threading.Event()
    seen: dict[str, bytes | None] = {}

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(10)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            seen["header"] = buf.split(b"\r\n", 1)[0]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
            if not first_seen.wait(10):
                return
            conn.sendall(b"5\r\nlast\n\r\n0\r\n\r\n")
            try:
                seen["after"] = conn.recv(65536)  # b"": the proxy closed it
            except TimeoutError:
                seen["after"] = None

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proxy = proxympm("ProxyPass / http://127.0.0.1:{u}/ flushpackets=on proxyprotocol=v1\n",
                     u=lsock.getsockname()[1])
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            for mark in (b"first\n", b"0\r\n\r\n"):
                while mark not in got:
                    data = s.recv(65536)
                    assert data, got
                    got += data
                first_seen.set()
            thread.join(15)
    finally:
        lsock.close()
    assert seen["header"].startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
    assert seen.get("after") == b"", seen
