"""Server-sent events and long polls on streaming routes (``flushpackets=on``,
``responsebuffering=off``): the response head and then every event reach the client
as they leave the backend. The backend here sends the next piece only once the test
client has seen the previous one through the proxy, so a proxy that holds anything
back makes the test fail (bounded), without any timing assumption. The only worker
thread serves other requests between events: the listener relays the body."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.backend import Backend
from tests.support.servers import Proxy

MakeProxy = Callable[..., Proxy]
WAIT = 10.0  # seconds the backend waits for the client to see a piece


class GatedEvents:
    """An upstream that streams ``count`` events, each after the client saw the last."""

    def __init__(self, count: int, chunked: bool) -> None:
        self.count = count
        self.chunked = chunked
        self.seen = [threading.Event() for _ in range(count + 1)]  # 0: the head
        self.failure: str | None = None
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.lsock.accept()
        except OSError:
            return
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            framing = (b"Transfer-Encoding: chunked\r\n" if self.chunked
                       else b"Connection: close\r\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\n" + framing + b"\r\n")
            for i in range(self.count):
                if not self.seen[i].wait(WAIT):
                    self.failure = f"the client never saw piece {i} (head = 0) in {WAIT}s"
                    return
                event = b"id: %d\ndata: event-%d\n\n" % (i, i)
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event) if self.chunked else event)
            if not self.seen[self.count].wait(WAIT):
                self.failure = "the client never saw the last event"
                return
            if self.chunked:
                conn.sendall(b"0\r\n\r\n")

    def close(self) -> None:
        self.lsock.close()
        self.thread.join(5)


@pytest.fixture
def gated() -> Iterator[Callable[..., GatedEvents]]:
    made: list[GatedEvents] = []

    def make(count: int, chunked: bool) -> GatedEvents:
        g = GatedEvents(count, chunked)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def _see_each_event(s: socket.socket, events: GatedEvents,
                    meanwhile: Callable[[int], None] | None = None) -> bytes:
    """Read the head, then each event, letting the backend send the next only once
    this one arrived (``meanwhile(i)`` runs after piece i), then the last chunk."""
    got = b""
    marks = [b"\r\n\r\n"] + [b"data: event-%d\n\n" % i for i in range(events.count)]
    for i, mark in enumerate(marks):
        while mark not in got:
            data = s.recv(65536)
            assert data, f"connection closed before piece {i}: {got!r}; {events.failure}"
            got += data
        events.seen[i].set()
        if meanwhile is not None:
            meanwhile(i)
    while not got.endswith(b"0\r\n\r\n"):
        data = s.recv(65536)
        assert data, got
        got += data
    return got


@pytest.mark.parametrize(("switch", "chunked"), [
    ("flushpackets=on", True),
    ("responsebuffering=off", False),
])
def test_each_event_reaches_the_client_before_the_next_is_sent(
        proxympm: MakeProxy, gated, backend: Backend, switch: str, chunked: bool) -> None:
    events = gated(4, chunked)
    # One worker thread: it must be free between events (the listener relays the
    # body), or the request in the middle of the stream below would never be served.
    proxy = proxympm(f"""
ServerLimit 1
ThreadsPerChild 1
MaxRequestWorkers 1
ProxyPass /events http://127.0.0.1:{{e}}/events {switch}
ProxyPass / http://127.0.0.1:{{b}}/
""", e=events.port, b=backend.port)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT + 5) as s:
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")

        def meanwhile(i: int) -> None:  # while an event stream is open, others are served
            if i in (0, 2):
                assert requests.get(f"{proxy.url}/other", timeout=10).status_code == 200

        got = _see_each_event(s, events, meanwhile)
        head = got.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200 ")
        assert b"content-type: text/event-stream" in head
        # Chunked to the HTTP/1.1 client either way (a close-delimited upstream body
        # is re-framed), so the connection lives on for the next request.
        assert b"transfer-encoding: chunked" in head
        s.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        after = s.recv(65536)
        assert after.startswith(b"HTTP/1.1 200 "), after
    assert events.failure is None, events.failure


def test_a_stream_cut_short_by_the_backend_is_cut_short_for_the_client(
        proxympm: MakeProxy) -> None:
    lsock = socket.create_server(("127.0.0.1", 0))
    proceed = threading.Event()

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Content-Length: 1000\r\n\r\ndata: one\n\n")
            proceed.wait(WAIT)  # then close with 989 bytes missing

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proxy = proxympm("ProxyPass / http://127.0.0.1:{u}/ flushpackets=on\n",
                     u=lsock.getsockname()[1])
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT) as s:
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"data: one\n\n" not in got:
                data = s.recv(65536)
                assert data, got
                got += data
            proceed.set()
            while data := s.recv(65536):  # the proxy closes: the client sees it was cut
                got += data
        assert b"content-length: 1000" in got.lower()
        assert got.endswith(b"data: one\n\n")
        proxy.wait_for_log("error", r"AH01110: error reading the response body from")
    finally:
        lsock.close()
        thread.join(5)


def test_events_over_a_tls_front(proxympm: MakeProxy, gated, certs) -> None:
    import ssl

    events = gated(3, True)
    proxy = proxympm(f"""
ServerLimit 1
ThreadsPerChild 1
MaxRequestWorkers 1
Listen 127.0.0.1:{{port}} https
<VirtualHost 127.0.0.1:{{port}}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile {certs.cert_pem}
    SSLCertificateKeyFile {certs.key_pem}
    ProxyPass /events http://127.0.0.1:{{e}}/events flushpackets=on
</VirtualHost>
""", e=events.port)
    ctx = ssl.create_default_context(cafile=str(certs.ca_pem))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT + 5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        _see_each_event(s, events)
    assert events.failure is None, events.failure


@pytest.mark.parametrize("path", ["/chunked/3000000?chunk=8192", "/bytes/3000000"])
def test_upstream_connection_is_pooled_after_a_listener_relayed_body(
        proxympm: MakeProxy, backend: Backend, path: str) -> None:
    from tests.support.backend import pattern

    proxy = proxympm("""
ServerLimit 1
ThreadsPerChild 1
MaxRequestWorkers 1
ProxyPass / http://127.0.0.1:{b}/ flushpackets=on
""", b=backend.port)
    with requests.Session() as session:
        r = session.get(f"{proxy.url}{path}", timeout=30)
        assert r.status_code == 200
        assert r.content == b"".join(pattern(3000000))
        after = session.get(f"{proxy.url}/echo-json", timeout=10).json()
    # the same upstream connection carried the next request (it went back to the pool)
    assert after["number_on_connection"] == 2, after


def test_a_client_that_stops_reading_a_stream_is_dropped_after_timeout(
        proxympm: MakeProxy, backend: Backend) -> None:
    """Timeout bounds each wait for the client, also on a streaming route whose backend
    may be silent far longer (ProxyTimeout, for long polls): a client that stops
    reading is dropped after Timeout, not after ProxyTimeout."""
    proxy = proxympm("""
Timeout 2
ProxyTimeout 60
ProxyPass / http://127.0.0.1:{b}/ flushpackets=on
""", b=backend.port)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as s:
        s.sendall(b"GET /bytes/64000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        # read no more: the socket buffers fill, the listener waits for us
        proxy.wait_for_log("error", r"AH01084: timed out writing the response to the client",
                           timeout=20)
