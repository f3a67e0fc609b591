"""The test servers and fixtures themselves, checked without proxympm.

If these fail, the proxy tests' verdicts mean nothing; if these pass, a proxy test
failure points at the proxy.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support import procs
from tests.support.backend import Backend, pattern_sha256
from tests.support.net import curl
from tests.support.rawhttp import RawClient, chunked, request_bytes
from tests.support.servers import Certs, Gunicorn

ROOT = Path(__file__).resolve().parents[2]


def test_echo_records_request_and_counts_connections(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        for i in range(3):
            r = c.request("GET", f"/x?i={i}", headers=[("X-Test", "yes")])
            assert r.status == 200
            echo = json.loads(r.body)
            assert echo["target"] == f"/x?i={i}"
            assert echo["backend"] == "backend"
            assert ["X-Test", "yes"] in echo["headers"]
            assert echo["number_on_connection"] == i + 1
    assert backend.connections_accepted == 1
    assert len(backend.requests) == 3
    req = backend.requests[0]
    assert req.raw_head.startswith(b"GET /x?i=0 HTTP/1.1\r\nHost: ")
    assert req.header("x-test") == "yes"


def test_pipelined_requests_are_answered_in_order(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        host = f"127.0.0.1:{backend.port}"
        c.send(b"".join(request_bytes("GET", p, host) for p in ("/slow/0.2", "/a", "/b")))
        paths = [json.loads(c.read_response().body)["path"] for _ in range(3)]
    assert paths == ["/slow/0.2", "/a", "/b"]


def test_chunked_upload_is_decoded_and_echoed_chunked(backend: Backend) -> None:
    body = bytes(range(256)) * 40
    with RawClient(backend.port) as c:
        c.send(request_bytes("POST", "/echo", "h", [("Transfer-Encoding", "chunked")],
                             chunked(body, 777)))
        r = c.read_response("POST")
    assert r.framing == "chunked" and r.complete and r.body == body
    assert backend.requests[0].framing == "chunked"
    assert backend.requests[0].body_sha256 == hashlib.sha256(body).hexdigest()
    assert backend.requests[0].raw.endswith(b"0\r\n\r\n")


def test_streamed_bytes_and_chunked_download(backend: Backend) -> None:
    n = 5_000_000
    r = requests.get(f"{backend.url}/bytes/{n}", stream=True, timeout=10)
    h = hashlib.sha256()
    for piece in r.iter_content(1 << 16):
        h.update(piece)
    assert h.hexdigest() == pattern_sha256(n)
    r = requests.get(f"{backend.url}/chunked/100000", timeout=10)
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert hashlib.sha256(r.content).hexdigest() == pattern_sha256(100000)


def test_large_upload_counted_with_sha(backend: Backend) -> None:
    n = 20 << 20
    piece = b"u" * (1 << 20)
    r = requests.post(f"{backend.url}/upload", data=(piece for _ in range(n >> 20)), timeout=30)
    echo = r.json()
    assert echo["body_length"] == n
    assert echo["body_sha256"] == hashlib.sha256(piece * 20).hexdigest()


def test_broken_responses(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        r = c.request("GET", "/half")
        assert r.framing == "content-length" and not r.complete and len(r.body) == 500
    assert curl(f"{backend.url}/half").returncode == 18  # partial file
    with RawClient(backend.port) as c, pytest.raises(ConnectionError):
        c.request("GET", "/truncated")
    with RawClient(backend.port) as c, pytest.raises(ValueError, match="bad status line"):
        c.request("GET", "/garbage")
    with RawClient(backend.port) as c:
        r = c.request("GET", "/close")
        assert r.connection_tokens() == {"close"}
        assert c.closed_by_peer(2)


def test_strict_parser_refuses_cl_and_te(backend: Backend) -> None:
    with RawClient(backend.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert c.read_response().status == 400
        assert c.closed_by_peer(2)
    assert backend.errors and not backend.requests


def test_redirect_and_status(backend: Backend) -> None:
    r = requests.get(f"{backend.url}/redirect", allow_redirects=False, timeout=5)
    assert r.status_code == 302
    assert r.headers["Location"] == f"{backend.url}/elsewhere"
    assert requests.get(f"{backend.url}/status/418", timeout=5).status_code == 418


def test_max_concurrent(backend: Backend) -> None:
    threads = [threading.Thread(target=requests.get, args=(f"{backend.url}/slow/0.5",))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.max_concurrent == 3
    assert backend.connections_accepted == 3


def test_backend_restarts_on_the_same_port(backend_factory: Callable[..., Backend]) -> None:
    b = backend_factory("first")
    port = b.port
    b.stop()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        raise AssertionError("stopped backend still accepts")
    except ConnectionRefusedError:
        pass
    b2 = backend_factory("second", port=port)
    assert requests.get(b2.url, timeout=5).json()["backend"] == "second"


def test_backend_as_subprocess(free_port: Callable[[], int]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.backend", "--port", str(port), "--name", "sub"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"READY {port}"
        echo = requests.get(f"http://127.0.0.1:{port}/", timeout=5).json()
        assert echo["backend"] == "sub" and echo["pid"] == proc.pid
        stats = requests.get(f"http://127.0.0.1:{port}/_stats", timeout=5).json()
        assert stats["connections_accepted"] == 2
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_gunicorn_fixture(gunicorn_server: Callable[..., Gunicorn]) -> None:
    g = gunicorn_server()
    pids = set()
    for _ in range(10):
        pids.add(requests.get(f"{g.url}/", timeout=5).json()["pid"])
    assert pids <= set(g.workers())
    r = requests.post(f"{g.url}/upload", data=b"z" * 100000, timeout=5)
    assert r.json()["body_sha256"] == hashlib.sha256(b"z" * 100000).hexdigest()
    tree = procs.tree(g.pid)
    assert len(tree) == 3
    g.stop()
    assert not procs.survivors(tree)


def _serve_tls_once(cert: Path, key: Path) -> tuple[int, threading.Thread, socket.socket]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    lsock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = lsock.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1000)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock.getsockname()[1], t, lsock


def test_certs_fixture_serves_tls(certs: Certs) -> None:
    port, t, lsock = _serve_tls_once(certs.cert_pem, certs.key_pem)
    r = curl("--cacert", str(certs.ca_pem), f"https://localhost:{port}/")
    t.join(5)
    lsock.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok"


def test_make_dev_certs_script(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    r = subprocess.run([sys.executable, str(ROOT / "certs" / "make_dev_certs.py"), "--out",
                        str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert f"curl --cacert {out / 'ca.pem'} https://localhost:8443/" in r.stdout
    assert (out / "server-key.pem").stat().st_mode & 0o077 == 0
    port, t, lsock = _serve_tls_once(out / "server.pem", out / "server-key.pem")
    res = curl("--cacert", str(out / "ca.pem"), f"https://127.0.0.1:{port}/")
    t.join(5)
    lsock.close()
    assert res.returncode == 0, res.stderr
