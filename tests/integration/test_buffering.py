"""Buffering protects slow app servers: gunicorn sync workers behind proxympm are busy
only for their own work, never for a slow client's upload or download."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import requests

from tests.support.servers import Gunicorn, Proxy

CONF = """
StartServers 1
ServerLimit 1
ThreadsPerChild 8
MaxRequestWorkers 8
Timeout 30
ProxyPass "/stream/" "http://127.0.0.1:{g}/" requestbuffering=off responsebuffering=off
ProxyPass "/" "http://127.0.0.1:{g}/"
"""
APP = "tests.support.timed_app:app"


def slow_upload(port: int, path: str, size: int, seconds: float) -> dict[str, str]:
    """POST ``size`` bytes spread over ``seconds``; the response headers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n"
              "Connection: close\r\n\r\n".encode())
    pieces = 10
    for _ in range(pieces):
        s.sendall(b"u" * (size // pieces))
        time.sleep(seconds / pieces)
    s.sendall(b"u" * (size - pieces * (size // pieces)))
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    assert head[0].startswith("HTTP/1.1 200"), head[0]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}


def test_slow_upload_costs_the_app_no_time(gunicorn_server: Callable[..., Gunicorn],
                                           proxympm: Callable[..., Proxy]) -> None:
    g = gunicorn_server(app=APP, workers=2)
    proxy = proxympm(CONF, g=g.port)
    size = 300_000  # past the in-memory threshold: buffered in a temp file
    buffered = slow_upload(proxy.port, "/work?seconds=1", size, 2.0)
    assert buffered["x-received"] == str(size)
    assert float(buffered["x-app-busy"]) < 1.5, buffered  # its 1 s of work, not the upload
    streamed = slow_upload(proxy.port, "/stream/work?seconds=1", size, 2.0)
    assert streamed["x-received"] == str(size)
    assert float(streamed["x-app-busy"]) > 2.5, streamed  # requestbuffering=off: it waited


def test_slow_downloads_do_not_hold_app_workers(gunicorn_server: Callable[..., Gunicorn],
                                                proxympm: Callable[..., Proxy]) -> None:
    g = gunicorn_server(app=APP, workers=2)
    proxy = proxympm(CONF, g=g.port)
    size = 8 << 20  # far more than the socket buffers hold
    readers = []
    for _ in range(2):  # as many slow readers as gunicorn has workers
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
        s.sendall(f"GET /work?size={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        readers.append(s)
    time.sleep(1.0)  # they read nothing yet
    t0 = time.monotonic()
    r = requests.get(f"{proxy.url}/work?seconds=0&size=10", timeout=10)
    assert r.status_code == 200
    assert time.monotonic() - t0 < 1.0, "a gunicorn worker was still busy with a slow reader"
    got = [0, 0]

    def drain(i: int, s: socket.socket) -> None:
        while got[i] < size:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got[i] += len(chunk)

    threads = [threading.Thread(target=drain, args=(i, s)) for i, s in enumerate(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in readers:
        s.close()
    assert all(n >= size for n in got), got  # the spooled responses arrive whole
