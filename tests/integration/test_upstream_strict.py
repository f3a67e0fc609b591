"""Upstream responses are parsed as strictly as requests.

A scripted upstream (tests/support/scripted_upstream.py) answers with crafted
bytes. A malformed head is a 502 (or, once the response has started, a closed
client connection) and the upstream connection is closed, never pooled: counted by
the upstream's accepted connections across two requests. Bodyless responses (HEAD,
204, 304) and interim 1xx responses must not desynchronise either side.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.rawhttp import RawClient, RawResponse
from tests.support.scripted_upstream import Script, ScriptedUpstream, once
from tests.support.servers import Proxy

CONF = 'ProxyPass "/" "http://127.0.0.1:{u}/" timeout=3\n'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


@pytest.fixture
def upstream() -> Iterator[Callable[..., ScriptedUpstream]]:
    started: list[ScriptedUpstream] = []

    def make(answers: dict[bytes, Script]) -> ScriptedUpstream:
        up = ScriptedUpstream(answers=answers).start()
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()


def get(port: int, path: str, method: str = "GET") -> RawResponse | str:
    """One request on a fresh connection: the response, or why there was none."""
    try:
        with RawClient(port, timeout=8) as client:
            client.send(f"{method} {path} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode())
            return client.read_response(method)
    except (ConnectionError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def failed_visibly(resp: RawResponse | str) -> bool:
    """A 502, or a response the client can see was cut (never a clean 200)."""
    if isinstance(resp, str):
        return resp.startswith("ConnectionError")
    return resp.status == 502 or not resp.complete


# -- malformed upstream heads and framing -------------------------------------------------

HEAD_OK = b"HTTP/1.1 200 OK\r\n"
BAD_RESPONSES: list[tuple[str, bytes]] = [
    ("CL and TE", HEAD_OK + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("TE and CL", HEAD_OK + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("duplicate CL", HEAD_OK + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    ("conflicting CL", HEAD_OK + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("CL list", HEAD_OK + b"Content-Length: 5, 5\r\n\r\nhello"),
    ("CL plus sign", HEAD_OK + b"Content-Length: +5\r\n\r\nhello"),
    ("CL negative", HEAD_OK + b"Content-Length: -5\r\n\r\nhello"),
    ("CL hex", HEAD_OK + b"Content-Length: 0x5\r\n\r\nhello"),
    ("obs-fold", HEAD_OK + b"X-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
    ("space before colon", HEAD_OK + b"X-A : a\r\nContent-Length: 2\r\n\r\nok"),
    ("NUL in value", HEAD_OK + b"X-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"),
    ("CR in value", HEAD_OK + b"X-A: a\rb\r\nContent-Length: 2\r\n\r\nok"),
    ("bare LF lines", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    ("status two digits", b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("status four digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("status not digits", b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok"),
    ("double space in status line", b"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("lowercase version", b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("HTTP/2 status line", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("not HTTP", b"ICY 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("unknown transfer coding", HEAD_OK + b"Transfer-Encoding: gzip\r\n\r\nxx"),
    ("bad chunk size", HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("chunk size with sign", HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n"
     b"0\r\n\r\n"),
]


@pytest.mark.parametrize(("name", "raw"), BAD_RESPONSES, ids=[c[0] for c in BAD_RESPONSES])
def test_malformed_upstream_response_is_502_and_never_pooled(
    proxympm: Callable[..., Proxy],
    upstream: Callable[..., ScriptedUpstream],
    name: str,
    raw: bytes,
) -> None:
    up = upstream({b"/bad": once(raw)})  # the upstream keeps the connection open
    proxy = proxympm(CONF, u=up.port)
    first = get(proxy.port, "/bad?1")
    assert failed_visibly(first), f"{name}: client got {first}"
    assert up.wait_closed(1, 3), f"{name}: the proxy kept the upstream connection open"
    second = get(proxy.port, "/bad?2")
    assert failed_visibly(second), f"{name}: second request got {second}"
    assert up.connections_accepted == 2, (
        f"{name}: two requests used {up.connections_accepted} upstream connection(s)")
    # The route still works, and a good connection is pooled (so the count above
    # would have shown reuse).
    for n in range(2):
        resp = get(proxy.port, f"/good?{n}")
        assert not isinstance(resp, str) and resp.status == 200 and resp.body == b"ok\n", resp
    assert up.connections_accepted == 3


# -- bytes after a complete response ---------------------------------------------------------

SECOND = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled!"


@pytest.mark.parametrize("when", ["same packet", "later"])
def test_bytes_after_a_complete_response_close_the_upstream_connection(
    proxympm: Callable[..., Proxy], upstream: Callable[..., ScriptedUpstream], when: str
) -> None:
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
    steps = [(0.0, first + SECOND)] if when == "same packet" else [(0.0, first), (0.2, SECOND)]
    up = upstream({b"/two": Script(steps)})
    proxy = proxympm(CONF, u=up.port)
    with RawClient(proxy.port, timeout=8) as client:
        client.send(b"GET /two HTTP/1.1\r\nHost: example.test\r\n\r\n")
        resp = client.read_response()
        assert (resp.status, resp.body) == (200, b"first") or failed_visibly(resp), resp
        time.sleep(0.5)  # the extra response has surely arrived at the proxy
        try:
            client.send(b"GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n")
            follow: RawResponse | str = client.read_response()
        except (ConnectionError, OSError) as exc:
            follow = f"closed: {exc}"
    if not isinstance(follow, str):
        assert follow.body == b"ok\n", f"the stray upstream response was served: {follow}"
    again = get(proxy.port, "/next")
    assert not isinstance(again, str) and again.body == b"ok\n", again
    assert up.wait_closed(1, 3), "the upstream connection that over-answered was kept"
    assert [r.connection_id for r in up.requests if r.target.startswith(b"/next")] \
        and all(r.connection_id != 1 for r in up.requests if r.target.startswith(b"/next")), (
        "a request went over the connection that had sent bytes after its response")


# -- bodyless responses ------------------------------------------------------------------------


def read_head_only(client: RawClient) -> bytes:
    """Exactly one response head; then check that nothing follows it."""
    while (end := client.buf.find(b"\r\n\r\n")) < 0:
        assert client._fill(), f"closed before a head: {bytes(client.buf)!r}"
    head = bytes(client.buf[: end + 4])
    del client.buf[: end + 4]
    client.sock.settimeout(0.3)
    try:
        extra = client.sock.recv(65536)
    except TimeoutError:
        extra = b""
    finally:
        client.sock.settimeout(client.timeout)
    assert extra == b"" and not client.buf, f"bytes after a bodyless response: {extra!r}"
    return head


@pytest.mark.parametrize(("method", "path", "answer", "status"), [
    ("HEAD", "/head", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain"
     b"\r\n\r\n", 200),
    ("GET", "/nocontent", b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", 204),
    ("GET", "/notmodified", b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n"
     b"Content-Length: 1234\r\n\r\n", 304),
    ("GET", "/notmodified-te", b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 304),
], ids=["HEAD with Content-Length", "204", "304 with Content-Length", "304 with chunked"])
def test_bodyless_responses_keep_both_connections_in_step(
    proxympm: Callable[..., Proxy], upstream: Callable[..., ScriptedUpstream],
    method: str, path: str, answer: bytes, status: int,
) -> None:
    up = upstream({path.encode(): once(answer)})
    proxy = proxympm(CONF, u=up.port)
    with RawClient(proxy.port, timeout=5) as client:
        for _ in range(2):
            t0 = time.monotonic()
            client.send(f"{method} {path} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode())
            head = read_head_only(client)
            assert time.monotonic() - t0 < 1.5, "the proxy waited for a body that never comes"
            assert head.startswith(b"HTTP/1.1 %d " % status), head
            if status == 200:
                assert b"\r\nContent-Length: 1234\r\n" in head, head
            if status == 204:
                assert b"content-length" not in head.lower() or b"content-length: 0" in \
                    head.lower(), head
                assert b"transfer-encoding" not in head.lower(), head
            if status == 304:
                assert b"transfer-encoding" not in head.lower(), head
        client.send(b"GET /after HTTP/1.1\r\nHost: example.test\r\n\r\n")
        resp = client.read_response()
        assert (resp.status, resp.body) == (200, b"ok\n"), resp
    assert up.connections_accepted == 1, (
        f"{up.connections_accepted} upstream connections for 3 sequential requests: the "
        "connection after a bodyless response was not reused")


# -- interim responses ----------------------------------------------------------------------------

INTERIM = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")


def test_interim_upstream_responses_are_not_final(
    proxympm: Callable[..., Proxy], upstream: Callable[..., ScriptedUpstream]
) -> None:
    up = upstream({b"/interim": once(INTERIM)})
    proxy = proxympm(CONF, u=up.port)
    with RawClient(proxy.port, timeout=5) as client:
        for _ in range(2):
            client.send(b"POST /interim HTTP/1.1\r\nHost: example.test\r\n"
                        b"Content-Length: 4\r\n\r\nbody")
            resp = client.read_response("POST")  # skips any forwarded 1xx
            assert (resp.status, resp.body) == (200, b"final"), resp
        client.send(b"GET /after HTTP/1.1\r\nHost: example.test\r\n\r\n")
        after = client.read_response()
        assert (after.status, after.body) == (200, b"ok\n"), after
    assert up.connections_accepted == 1


def test_no_interim_response_to_an_http10_client(
    proxympm: Callable[..., Proxy], upstream: Callable[..., ScriptedUpstream]
) -> None:
    """RFC 9110 15.2: a server must not send a 1xx response to an HTTP/1.0 client."""
    up = upstream({b"/interim": once(INTERIM)})
    proxy = proxympm(CONF, u=up.port)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    try:
        sock.sendall(b"GET /interim HTTP/1.0\r\nHost: example.test\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 200 "), data[:120]
    assert data.endswith(b"\r\n\r\nfinal"), data
