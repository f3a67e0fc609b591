"""Log lines the listener writes name the client mod_remoteip believes once a request
head is parsed (as the worker's lines do), and the TCP peer before that: a request
error after the head (AH00567 and its access line), a response the client does not
take (AH01084); but a head that never became a request, even on a connection whose
previous request was believed to come from elsewhere, names the peer."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

import pytest

from tests.support.backend import Backend
from tests.support.rawhttp import RawClient
from tests.support.servers import Proxy

CONF = """
LogLevel info
LogFormat "%a|%{c}a|%>s" who
CustomLog {access_log} who
Timeout 1
RequestReadTimeout header=1 body=1
RemoteIPHeader X-Forwarded-For
RemoteIPTrustedProxy 127.0.0.1
ProxyPass "/" "http://127.0.0.1:{b}/"
"""
XFF = b"X-Forwarded-For: 203.0.113.9\r\n"
HOST = b"Host: example.test\r\n"


@pytest.fixture
def proxy(proxympm: Callable[..., Proxy], backend: Backend) -> Proxy:
    return proxympm(CONF, b=backend.port)


def test_body_timeout_names_the_believed_client(proxy: Proxy) -> None:
    with RawClient(proxy.port, timeout=5) as client:
        client.send(b"POST /up HTTP/1.1\r\n" + HOST + XFF + b"Content-Length: 100\r\n\r\n"
                    + b"x" * 10)
        assert client.read_response("POST").status == 408
    line = proxy.wait_for_log("error", r"^.*AH00567: request failed: request body.*$")[0]
    assert "[client 203.0.113.9:" in line, line
    proxy.wait_for_log("access", r"^203\.0\.113\.9\|127\.0\.0\.1\|408$")


def test_write_timeout_names_the_believed_client(proxy: Proxy) -> None:
    reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    try:
        reader.connect(("127.0.0.1", proxy.port))
        reader.sendall(b"GET /bytes/20000000 HTTP/1.1\r\n" + HOST + XFF + b"\r\n")
        # never read: the listener gives up after Timeout
        line = proxy.wait_for_log("error", r"^.*AH01084: .*$", timeout=10)[0]
    finally:
        reader.close()
    assert "[client 203.0.113.9:" in line, line


def test_a_head_that_never_became_a_request_names_the_peer(proxy: Proxy) -> None:
    with RawClient(proxy.port, timeout=5) as client:
        client.send(b"GET /first HTTP/1.1\r\n" + HOST + XFF + b"\r\n")
        assert client.read_response().status == 200
        client.send(b"GET /second HT")  # then nothing: the header timeout
        assert client.read_response().status == 408
    line = proxy.wait_for_log("error", r"^.*AH00567: request failed: request header.*$")[0]
    assert re.search(r"\[client 127\.0\.0\.1:\d+\]", line), line
    with RawClient(proxy.port, timeout=5) as client:  # a bad head: no client believed
        client.send(b"GET / HTTP/1.1\r\n" + HOST + XFF + b"Bad Header\r\n\r\n")
        assert client.read_response().status == 400
    deadline = time.monotonic() + 5
    while proxy.access_log().count("|400") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = proxy.access_log().splitlines()
    assert lines == ["203.0.113.9|127.0.0.1|200", "127.0.0.1|127.0.0.1|408",
                     "127.0.0.1|127.0.0.1|400"], lines
