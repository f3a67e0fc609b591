"""Slow clients must cost the proxy a socket, never a worker thread.

Slowloris heads, slow request bodies, a head that stops (408 after the header
timeout), a client that does not read its response, and lingering close after an
error answer. Each test is bounded to a few seconds.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.backend import Backend, pattern_sha256
from tests.support.net import free_port, raise_nofile
from tests.support.rawhttp import RawClient
from tests.support.servers import Proxy

CONF = 'ProxyPass "/" "http://127.0.0.1:{b}/"\n'
HOST = b"Host: example.test\r\n"
PROMPT = 1.0  # seconds a normal request may take while slow clients are about


class NormalClient(threading.Thread):
    """Makes one request after another on fresh connections until stopped, and keeps
    every (status, seconds) it saw."""

    def __init__(self, port: int, path: str = "/normal", pause: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.path = path
        self.pause = pause
        self.stop_event = threading.Event()
        self.results: list[tuple[int | str, float]] = []

    def run(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            n += 1
            self.results.append(timed_get(self.port, f"{self.path}/{n}"))
            self.stop_event.wait(self.pause)

    def finish(self) -> list[tuple[int | str, float]]:
        self.stop_event.set()
        self.join(15)
        assert not self.is_alive(), "normal client stuck"
        return self.results


def timed_get(port: int, path: str, timeout: float = 10.0) -> tuple[int | str, float]:
    t0 = time.monotonic()
    try:
        with RawClient(port, timeout=timeout) as client:
            client.send(b"GET %s HTTP/1.1\r\n%sConnection: close\r\n\r\n" % (path.encode(), HOST))
            resp = client.read_response()
            status: int | str = resp.status if resp.complete else f"{resp.status} cut short"
    except (OSError, ValueError) as exc:
        status = f"{type(exc).__name__}: {exc}"
    return status, time.monotonic() - t0


def assert_all_prompt(results: list[tuple[int | str, float]], what: str) -> None:
    assert results, f"no normal request was made during {what}"
    bad = [(s, round(t, 2)) for s, t in results if s != 200 or t >= PROMPT]
    assert not bad, (f"during {what}, {len(bad)} of {len(results)} normal requests failed or "
                     f"took >= {PROMPT}s: {bad[:10]}")


def connect_many(port: int, n: int) -> list[socket.socket]:
    raise_nofile(4096)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    return socks


def read_one_response(sock: socket.socket, timeout: float) -> bytes:
    """Bytes of one Content-Length response (head + body) or what came before EOF."""
    sock.settimeout(timeout)
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return bytes(buf)
        buf += data
    head = bytes(buf[: buf.find(b"\r\n\r\n") + 4])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < len(head) + length:
        data = sock.recv(1 << 20)
        if not data:
            break
        buf += data
    return bytes(buf)


# -- (a) slowloris ---------------------------------------------------------------------


def test_slowloris_heads_hold_no_worker(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONF + "ThreadsPerChild 4\n", b=backend.port)
    n_slow, tick, ticks = 300, 0.5, 7
    heads = [b"GET /slowloris/%d HTTP/1.1\r\n%s\r\n" % (i, HOST) for i in range(n_slow)]
    slow = connect_many(proxy.port, n_slow)
    normal = NormalClient(proxy.port)
    normal.start()
    try:
        for t in range(ticks):  # one byte per connection every 0.5 s: 3.5 s
            for s, head in zip(slow, heads, strict=True):
                s.send(head[t : t + 1])
            time.sleep(tick)
        results = normal.finish()
        seen_while_incomplete = [r.target for r in backend.requests if "slowloris" in r.target]
        assert_all_prompt(results, f"{n_slow} slowloris connections")
        assert seen_while_incomplete == [], "incomplete heads reached the backend"
        # Every trickling connection was kept: completing the heads gets 200 on each.
        for s, head in zip(slow, heads, strict=True):
            s.sendall(head[ticks:])
        answers = [read_one_response(s, 15) for s in slow]
        bad = [i for i, a in enumerate(answers) if not a.startswith(b"HTTP/1.1 200 ")]
        assert not bad, f"{len(bad)} slowloris connections not served once complete, e.g. " \
                        f"#{bad[0]}: {answers[bad[0]][:80]!r}"
    finally:
        normal.stop_event.set()
        for s in slow:
            s.close()


# -- (b) slow request bodies ----------------------------------------------------------------


def test_slow_request_bodies_hold_no_worker(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONF + "ThreadsPerChild 4\n", b=backend.port)
    n_slow, size = 100, 40 * 1024
    bodies = [bytes([65 + i % 26]) * size for i in range(n_slow)]
    slow = connect_many(proxy.port, n_slow)
    for i, s in enumerate(slow):
        s.sendall(b"POST /slowpost/%d HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n" % (i, HOST, size))
    normal = NormalClient(proxy.port)
    normal.start()
    sent = 0
    try:
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:  # 4 bytes per connection every 100 ms
            for s, body in zip(slow, bodies, strict=True):
                s.send(body[sent : sent + 4])
            sent += 4
            time.sleep(0.1)
        results = normal.finish()
        seen_early = [r.target for r in backend.requests if "slowpost" in r.target]
        assert_all_prompt(results, f"{n_slow} slow request bodies")
        assert seen_early == [], "a request with an incomplete small body reached the backend"
        for s, body in zip(slow, bodies, strict=True):
            s.sendall(body[sent:])
        answers = [read_one_response(s, 15) for s in slow]
        bad = [i for i, a in enumerate(answers) if not a.startswith(b"HTTP/1.1 200 ")]
        assert not bad, f"{len(bad)} slow POSTs not served once complete: {answers[bad[0]][:80]!r}"
        got = {r.target: r for r in backend.requests if "slowpost" in r.target}
        assert len(got) == n_slow
        for i, body in enumerate(bodies):
            r = got[f"/slowpost/{i}"]
            assert r.body_sha256 == hashlib.sha256(body).hexdigest(), f"/slowpost/{i} body"
    finally:
        normal.stop_event.set()
        for s in slow:
            s.close()


# -- (c) header read timeout ----------------------------------------------------------------


def test_incomplete_head_gets_408_after_the_header_timeout(
    proxympm: Callable[..., Proxy],
    proxympm_cli: Callable[..., object],
    backend: Backend,
    tmp_path: Path,
) -> None:
    conf = CONF + "RequestReadTimeout header=2\n"
    check = tmp_path / "check.conf"
    check.write_text(f"Listen 127.0.0.1:{free_port()}\n" + conf.format(b=backend.port))
    result = proxympm_cli("-f", str(check), "-t")
    if result.returncode != 0:  # type: ignore[attr-defined]
        pytest.fail("`RequestReadTimeout header=2` (mod_reqtimeout) is refused by proxympm -t, "
                    "so the 408 after a stalled head cannot be tested in a few seconds "
                    "(the fixed default is header=20):\n"
                    f"{result.stderr.strip()}")  # type: ignore[attr-defined]
    proxy = proxympm(conf, b=backend.port)
    with RawClient(proxy.port, timeout=10) as client:
        t0 = time.monotonic()
        client.send(b"GET /stalled HTTP/1.1\r\nHost: exa")
        resp = client.read_response()
        elapsed = time.monotonic() - t0
        assert resp.status == 408, resp.raw_head
        assert 1.5 <= elapsed <= 4.0, f"408 after {elapsed:.2f}s with header=2"
        assert client.closed_by_peer(3), "connection left open after 408"
    assert backend.requests == []
    # A connection that never sent a byte is closed silently (httpd sends no 408).
    with RawClient(proxy.port, timeout=10) as idle:
        assert idle.closed_by_peer(5)
        assert bytes(idle.buf) == b""


# -- (d) a client that does not read ---------------------------------------------------


def test_slow_reader_does_not_pin_every_worker(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONF + "ThreadsPerChild 2\nServerLimit 1\nMaxRequestWorkers 2\n",
                     b=backend.port)
    size = 20_000_000
    reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    reader.connect(("127.0.0.1", proxy.port))
    try:
        reader.sendall(b"GET /bytes/%d HTTP/1.1\r\n%s\r\n" % (size, HOST))
        time.sleep(0.3)  # the download is under way and stuck on our window
        t_stall = time.monotonic()
        results: list[tuple[int | str, float]] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            for j in range(3):
                r = timed_get(proxy.port, f"/others/{k}/{j}")
                with lock:
                    results.append(r)

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        time.sleep(max(0.0, t_stall + 3.0 - time.monotonic()))
        # Now read it all: the slow reader still gets every byte, in order.
        reader.settimeout(30)
        got = read_one_response(reader, 30)
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head[:80]
        assert len(body) == size, f"slow reader got {len(body)} of {size} body bytes"
        assert hashlib.sha256(body).hexdigest() == pattern_sha256(size)
        assert_all_prompt(results, "a 20 MB download to a client that does not read "
                                   "(ThreadsPerChild 2)")
    finally:
        reader.close()


def test_slow_readers_as_many_as_workers_do_not_stop_service(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    """The stricter form of the above: ThreadsPerChild slow readers. A worker never
    waits for a slow client (DESIGN: the listener finishes writes a worker cannot
    complete without blocking), so new requests are still served."""
    proxy = proxympm(CONF + "ThreadsPerChild 2\nServerLimit 1\nMaxRequestWorkers 2\n",
                     b=backend.port)
    readers = []
    try:
        for _ in range(2):
            r = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            r.connect(("127.0.0.1", proxy.port))
            r.sendall(b"GET /bytes/20000000 HTTP/1.1\r\n%s\r\n" % HOST)
            readers.append(r)
        time.sleep(0.3)
        results: list[tuple[int | str, float]] = []
        threads = [threading.Thread(target=lambda k=k: results.append(
            timed_get(proxy.port, f"/starved/{k}", timeout=3)), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert_all_prompt(results, "two 20 MB downloads to clients that do not read "
                                   "(ThreadsPerChild 2)")
    finally:
        for r in readers:
            r.close()


# -- (e) lingering close ----------------------------------------------------------------------


def test_error_answer_survives_bytes_sent_after_it(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(CONF, b=backend.port)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"X-Bad : space before colon\r\n\r\n"
                     + b"P" * 100_000)
        time.sleep(0.3)  # the 400 is written and the proxy has shut down its side
        try:
            sock.sendall(b"Q" * 50_000)  # these land after the answer: must not cause a RST
            time.sleep(0.3)
            answer = read_one_response(sock, 5)
            sock.settimeout(5)
            tail = sock.recv(65536)
            reset = False
        except (ConnectionResetError, BrokenPipeError):
            answer, tail, reset = b"", b"", True
        assert not reset, "connection reset after the 400: the proxy closed without " \
                          "lingering (a client may lose the answer)"
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer[:100]
        length = int(next(v for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                          if k.lower() == b"content-length"))
        assert len(body) == length, "400 body cut short"
        assert tail == b"", f"bytes after the 400: {tail[:80]!r}"
    finally:
        sock.close()
    assert backend.requests == []
