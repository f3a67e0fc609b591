"""The request corpus through a real proxympm, in front of a recording backend.

Every case of ``tests/corpus/requests.py`` is sent over a raw socket whole, byte by
byte (one send() per byte, TCP_NODELAY) and in random chunkings. A rejected case
must get exactly its status, then a closed connection, and nothing may reach the
backend; an accepted case must reach the backend as exactly the expected requests,
in order, with a rebuilt head. Then the front-end rules that the corpus cannot say
alone: absolute-form targets, trailers, HTTP/1.0, Expect: 100-continue, and the
LimitRequest* directives.
"""

from __future__ import annotations

import hashlib
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.corpus.requests import CASES
from tests.support.backend import Backend, RecordedRequest
from tests.support.net import free_port
from tests.support.rawhttp import RawClient, RawResponse
from tests.support.servers import Proxy, render_config

CONF = 'ProxyPass "/" "http://127.0.0.1:{b}/"\n'

# Bodies the corpus sends with these requests (decoded); every other is empty.
CORPUS_BODIES = {("POST", "/p"): b"hello", ("POST", "/c"): b"hello", ("POST", "/x"): b"hi"}

# Time given to anything smuggled to arrive at the backend after a rejection.
SMUGGLE_GRACE = 0.1


# -- one proxy for the corpus (starting one per case would take minutes) ------------


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Backend]]:
    backend = Backend(name="corpus").start()
    pdir: Path = tmp_path_factory.mktemp("strict-front")
    port = free_port()
    proxy = Proxy(dir=pdir, conf_path=pdir / "proxympm.conf", port=port,
                  pid_file=pdir / "proxympm.pid", error_log_path=pdir / "error_log",
                  access_log_path=pdir / "access_log")
    proxy.conf_path.write_text(render_config(CONF, {
        "port": port, "dir": pdir, "pid_file": proxy.pid_file, "b": backend.port,
        "error_log": proxy.error_log_path, "access_log": proxy.access_log_path}))
    try:
        yield proxy.start(), backend
    finally:
        proxy.kill()  # by pid and start time, with its whole session
        backend.stop()


# -- client side -----------------------------------------------------------------------


def chunkings(raw: bytes, seed: int) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    out = {"whole": [raw], "bytewise": [raw[i : i + 1] for i in range(len(raw))]}
    for n in (1, 2):
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, 7)))
        out[f"random{n}"] = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)],
                                                      strict=True)]
    return out


def send_chunks(client: RawClient, chunks: list[bytes]) -> None:
    """One send() per chunk. The proxy may answer and stop reading part way (a
    rejected head): the rest is then not needed, and a reset is not our failure."""
    for chunk in chunks:
        try:
            client.sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return


def rest_until_close(client: RawClient, within: float) -> tuple[bool, bytes]:
    """(closed by the peer within ``within`` s, bytes that came before the close)."""
    before = len(client.buf)
    closed = client.closed_by_peer(within)
    return closed, bytes(client.buf[before:])


def case_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def assert_rebuilt(req: RecordedRequest, how: str) -> None:
    head = req.raw_head
    first = head.split(b"\r\n", 1)[0]
    assert first.endswith(b" HTTP/1.1"), f"{how}: upstream request line {first!r}"
    assert len(req.header_all("host")) == 1, f"{how}: Host fields {req.header_all('host')}"
    names = req.header_names()
    assert not ({"transfer-encoding", "content-length"} <= names), (
        f"{how}: both framings upstream:\n{head!r}")
    assert "expect" not in names, f"{how}: Expect forwarded:\n{head!r}"
    assert "x-t" not in names, f"{how}: a trailer field became a header:\n{head!r}"
    assert len(req.header_all("content-length")) <= 1
    assert len(req.header_all("transfer-encoding")) <= 1


# -- the corpus ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "raw", "expected"), CASES, ids=[c[0] for c in CASES])
def test_corpus_through_the_proxy(
    front: tuple[Proxy, Backend], name: str, raw: bytes, expected: object
) -> None:
    proxy, backend = front
    assert proxy.running(), f"proxympm died before this case:\n{proxy.diagnostics()}"
    for how, chunks in chunkings(raw, case_seed(name)).items():
        label = f"{name!r} sent {how}"
        n_requests = len(backend.requests)
        n_accepted = backend.connections_accepted
        n_errors = len(backend.errors)
        with RawClient(proxy.port, timeout=5) as client:
            send_chunks(client, chunks)
            if isinstance(expected, int):
                resp = client.read_response()
                assert resp.status == expected, (
                    f"{label}: got {resp.status}, wanted {expected}\n{resp.raw_head!r}")
                closed, extra = rest_until_close(client, 3)
                assert closed, f"{label}: connection left open after {expected}"
                assert extra == b"", f"{label}: bytes after the {expected} answer: {extra!r}"
                time.sleep(SMUGGLE_GRACE)
                assert backend.requests[n_requests:] == [], (
                    f"{label}: reached the backend: "
                    f"{[r.raw_head for r in backend.requests[n_requests:]]}")
                assert backend.connections_accepted == n_accepted, (
                    f"{label}: the proxy opened an upstream connection")
                assert backend.errors[n_errors:] == []
                continue
            assert isinstance(expected, list)
            responses: list[RawResponse] = []
            for method, _path in expected:
                responses.append(client.read_response(method.decode()))
            for (method, path), resp in zip(expected, responses, strict=True):
                assert resp.status == 200, f"{label}: {method!r} {path!r} got {resp.status}"
                assert resp.complete, f"{label}: {method!r} {path!r} response cut short"
            got = backend.wait_for_requests(n_requests + len(expected))[n_requests:]
            assert [(r.method.encode(), r.target.encode()) for r in got] == expected, label
            for req in got:
                assert_rebuilt(req, label)
                want = CORPUS_BODIES.get((req.method, req.path), b"")
                assert req.body_length == len(want), f"{label}: upstream body {req.raw!r}"
                assert req.body_sha256 == hashlib.sha256(want).hexdigest(), label
            assert backend.errors[n_errors:] == [], f"{label}: {backend.errors[n_errors:]}"
            if b" HTTP/1.0\r\n" in raw.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                closed, _ = rest_until_close(client, 3)
                assert closed, f"{label}: HTTP/1.0 connection kept alive"


# -- front-end rules beyond the corpus -------------------------------------------------


def test_absolute_form_becomes_origin_form_with_the_authority_as_host(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm('ProxyPreserveHost On\nProxyPass "/" "http://127.0.0.1:{b}/"\n',
                     b=backend.port)
    with RawClient(proxy.port) as client:
        client.send(b"GET http://Other.test:8080/abs/x?y=1 HTTP/1.1\r\n"
                    b"Host: example.test\r\nX-Keep: 1\r\n\r\n")
        resp = client.read_response()
    assert resp.status == 200
    (req,) = backend.wait_for_requests(1)
    assert req.target == "/abs/x?y=1", req.raw_head
    assert req.header_all("host") == ["Other.test:8080"] or req.header_all("host") == [
        "other.test:8080"], req.raw_head
    assert req.header("x-keep") == "1"
    assert b"example.test" not in req.raw_head.split(b"X-Forwarded-Host")[0], req.raw_head


def test_absolute_form_without_preserve_host_sends_the_backend_host(
    front: tuple[Proxy, Backend],
) -> None:
    proxy, backend = front
    n = len(backend.requests)
    with RawClient(proxy.port) as client:
        client.send(b"GET http://other.test:8080/abs2 HTTP/1.1\r\nHost: example.test\r\n\r\n")
        assert client.read_response().status == 200
    req = backend.wait_for_requests(n + 1)[n]
    assert req.target == "/abs2"
    assert req.header_all("host") == [f"127.0.0.1:{backend.port}"], req.raw_head
    assert req.header("x-forwarded-host") == "other.test:8080", req.raw_head


def test_trailers_never_reach_the_upstream_head(front: tuple[Proxy, Backend]) -> None:
    proxy, backend = front
    n = len(backend.requests)
    body = (b"4\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer-One: 1\r\nContent-Length: 99\r\n"
            b"Host: evil.test\r\nTransfer-Encoding: chunked\r\n\r\n")
    with RawClient(proxy.port) as client:
        client.send(b"POST /trailers HTTP/1.1\r\nHost: example.test\r\n"
                    b"Trailer: X-Trailer-One\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        resp = client.read_response()
    assert resp.status == 200
    req = backend.wait_for_requests(n + 1)[n]
    assert_rebuilt(req, "trailers")
    names = req.header_names()
    assert "x-trailer-one" not in names and "trailer" not in names, req.raw_head
    assert req.header_all("host") == [f"127.0.0.1:{backend.port}"], req.raw_head
    assert req.header_all("content-length") in ([], ["7"]), req.raw_head
    assert req.body_length == 7
    assert req.body_sha256 == hashlib.sha256(b"abcdefg").hexdigest()
    # no field carries the trailer's value (the Host port may contain "99")
    assert b": 99\r\n" not in req.raw_head and b"evil" not in req.raw


def test_http10_client_gets_no_keepalive(front: tuple[Proxy, Backend]) -> None:
    proxy, backend = front
    n = len(backend.requests)
    with RawClient(proxy.port) as client:
        client.send(b"GET /ten HTTP/1.0\r\nHost: example.test\r\nConnection: keep-alive\r\n\r\n")
        resp = client.read_response()
        assert resp.status == 200 and resp.complete
        assert "keep-alive" not in resp.connection_tokens(), resp.raw_head
        closed, _ = rest_until_close(client, 3)
        assert closed, "an HTTP/1.0 client's connection was kept open"
    req = backend.wait_for_requests(n + 1)[n]
    assert req.version == "HTTP/1.1" and req.target == "/ten"


def test_expect_100_continue_is_answered_by_the_proxy(front: tuple[Proxy, Backend]) -> None:
    proxy, backend = front
    n = len(backend.requests)
    with RawClient(proxy.port, timeout=5) as client:
        client.send(b"POST /continue HTTP/1.1\r\nHost: example.test\r\n"
                    b"Expect: 100-continue\r\nContent-Length: 11\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            data = client.sock.recv(4096)
            assert data, f"closed before 100 Continue: {interim!r}"
            interim += data
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        assert len(backend.requests) == n, "the upstream was contacted before the body came"
        client.send(b"hello world")
        resp = client.read_response("POST")
        assert resp.status == 200 and resp.complete
    req = backend.wait_for_requests(n + 1)[n]
    assert_rebuilt(req, "expect")
    assert req.body_sha256 == hashlib.sha256(b"hello world").hexdigest()


def test_expect_100_continue_with_the_body_already_sent(front: tuple[Proxy, Backend]) -> None:
    """A client that did not wait: the request is served, and no stray 100 breaks the
    framing of what follows on the connection."""
    proxy, backend = front
    n = len(backend.requests)
    with RawClient(proxy.port, timeout=5) as client:
        client.send(b"POST /eager HTTP/1.1\r\nHost: example.test\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 2\r\n\r\nhiGET /after HTTP/1.1\r\nHost: example.test\r\n\r\n")
        assert client.read_response("POST").status == 200
        assert client.read_response("GET").status == 200
    got = backend.wait_for_requests(n + 2)[n:]
    assert [r.target for r in got] == ["/eager", "/after"]
    assert all("expect" not in r.header_names() for r in got)


LIMITS_CONF = """
LimitRequestLine 200
LimitRequestFieldSize 150
LimitRequestFields 6
LimitRequestBody 1000
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


def _one(port: int, raw: bytes, method: str = "GET") -> tuple[int, bool]:
    with RawClient(port, timeout=5) as client:
        send_chunks(client, [raw])
        resp = client.read_response(method)
        closed = resp.status < 400 or client.closed_by_peer(3)
        return resp.status, closed


def test_limit_directives_move_the_thresholds(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(LIMITS_CONF, b=backend.port)
    host = b"Host: example.test\r\n"
    cases = [
        ("line under", b"GET /" + b"a" * 150 + b" HTTP/1.1\r\n" + host + b"\r\n", 200),
        ("line over", b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + host + b"\r\n", 414),
        ("field under", b"GET / HTTP/1.1\r\n" + host + b"X-A: " + b"a" * 100 + b"\r\n\r\n",
         200),
        ("field over", b"GET / HTTP/1.1\r\n" + host + b"X-A: " + b"a" * 200 + b"\r\n\r\n",
         431),
        ("fields under", b"GET / HTTP/1.1\r\n" + host
         + b"".join(b"X-%d: v\r\n" % i for i in range(4)) + b"\r\n", 200),
        ("fields over", b"GET / HTTP/1.1\r\n" + host
         + b"".join(b"X-%d: v\r\n" % i for i in range(8)) + b"\r\n", 431),
        ("body under", b"POST /echo HTTP/1.1\r\n" + host + b"Content-Length: 900\r\n\r\n"
         + b"b" * 900, 200),
        ("body over", b"POST /echo HTTP/1.1\r\n" + host + b"Content-Length: 1100\r\n\r\n"
         + b"b" * 1100, 413),
    ]
    failures = []
    for name, raw, want in cases:
        before = len(backend.requests)
        status, closed = _one(proxy.port, raw, raw.split(b" ", 1)[0].decode())
        time.sleep(SMUGGLE_GRACE if want != 200 else 0)
        reached = len(backend.requests) - before
        if status != want or not closed or reached != (1 if want == 200 else 0):
            failures.append(f"{name}: status {status} (want {want}), closed={closed}, "
                            f"upstream requests={reached}")
    assert not failures, "\n".join(failures)
    # The defaults are not in force any more: what passes 8190/100/8190 here fails.
    assert _one(proxy.port, b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\n" + host + b"\r\n")[0] == 414


def test_limit_request_body_applies_to_chunked_bodies(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    """LimitRequestBody counts decoded chunked bytes too (Apache: 413 once the sum
    passes the limit), and nothing reaches the upstream."""
    proxy = proxympm(LIMITS_CONF, b=backend.port)
    chunks = b"".join([b"190\r\n" + b"c" * 400 + b"\r\n"] * 3) + b"0\r\n\r\n"  # 1200 bytes
    status, closed = _one(proxy.port, b"POST /echo HTTP/1.1\r\nHost: example.test\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + chunks, "POST")
    time.sleep(SMUGGLE_GRACE)
    assert (status, closed, len(backend.requests)) == (413, True, 0), (
        f"1200 chunked bytes over LimitRequestBody 1000: status {status}, closed={closed}, "
        f"upstream saw {[r.body_length for r in backend.requests]} body bytes")
    small = b"190\r\n" + b"c" * 400 + b"\r\n0\r\n\r\n"
    assert _one(proxy.port, b"POST /echo HTTP/1.1\r\nHost: example.test\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + small, "POST")[0] == 200


def test_default_limits(front: tuple[Proxy, Backend]) -> None:
    """Apache's defaults: 8190-byte request line and fields, 100 fields."""
    proxy, backend = front
    host = b"Host: example.test\r\n"
    assert _one(proxy.port, b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\n" + host + b"\r\n")[0] == 200
    assert _one(proxy.port, b"GET / HTTP/1.1\r\n" + host + b"X-A: " + b"a" * 8000
                + b"\r\n\r\n")[0] == 200
    assert _one(proxy.port, b"GET / HTTP/1.1\r\n" + b"".join(
        b"X-%d: v\r\n" % i for i in range(98)) + host + b"\r\n")[0] == 200


def test_error_answer_is_not_reset_by_a_socket_close(front: tuple[Proxy, Backend]) -> None:
    """A rejected head followed by more bytes in the same send: the whole error
    response must still arrive."""
    proxy, _ = front
    with RawClient(proxy.port, timeout=5) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        send_chunks(client, [b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n" + b"x" * 200_000])
        resp = client.read_response()
        assert resp.status == 400 and resp.complete
