"""Bodies through the proxy: chunked both ways, and 100 MiB each way in bounded memory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.backend import Backend, pattern, pattern_sha256
from tests.support.net import curl
from tests.support.procs import RssSampler
from tests.support.rawhttp import RawClient, chunked, request_bytes
from tests.support.servers import Proxy

MiB = 1 << 20
BIG = 100 * MiB
RSS_LIMIT_KIB = 80 * 1024

CONF = """
Timeout 60
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


@pytest.fixture
def proxy(proxympm: Callable[..., Proxy], backend: Backend) -> Proxy:
    return proxympm(CONF, b=backend.port)


class PatternUpload:
    """An iterable body with a length, so requests streams it with Content-Length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[bytes]:
        return pattern(self.n)


def _assert_rss_bounded(sampler: RssSampler) -> None:
    assert sampler.samples > 3
    pid, peak = sampler.worst()
    assert peak < RSS_LIMIT_KIB, f"pid {pid} peaked at {peak // 1024} MiB: {sampler.peak_kib}"


def test_chunked_request_body_reaches_backend(proxy: Proxy, backend: Backend) -> None:
    body = bytes(range(256)) * 300
    with RawClient(proxy.port) as c:
        c.send(request_bytes("POST", "/echo", f"127.0.0.1:{proxy.port}",
                             [("Transfer-Encoding", "chunked")], chunked(body, 1000)))
        r = c.read_response("POST")
    assert r.status == 200 and r.complete
    assert r.body == body
    req = backend.requests[-1]
    assert req.body_length == len(body)
    assert req.body_sha256 == hashlib.sha256(body).hexdigest()


def test_chunked_upload_with_curl(proxy: Proxy, backend: Backend, tmp_path: Path) -> None:
    data = tmp_path / "up.bin"
    data.write_bytes(b"".join(pattern(3 * MiB + 17)))
    r = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{data}",
             "-o", str(tmp_path / "down.bin"), "-w", "%{http_code}", f"{proxy.url}/echo")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "200"
    assert (tmp_path / "down.bin").read_bytes() == data.read_bytes()
    assert backend.requests[-1].body_sha256 == pattern_sha256(3 * MiB + 17)


def test_chunked_response_reaches_client_well_framed(proxy: Proxy) -> None:
    n = 300_000
    with RawClient(proxy.port) as c:
        r = c.request("GET", f"/chunked/{n}?chunk=1000")
        assert r.status == 200
        assert r.complete, f"incomplete {r.framing} body"
        assert hashlib.sha256(r.body).hexdigest() == pattern_sha256(n)
        r2 = c.request("GET", "/after")  # the framing left the connection usable
        assert r2.status == 200


def test_head_request_has_no_body(proxy: Proxy) -> None:
    with RawClient(proxy.port) as c:
        r = c.request("HEAD", "/bytes/5000")
        assert r.status == 200
        assert r.header("Content-Length") in (None, "5000")
        r2 = c.request("GET", "/bytes/10")  # a body after HEAD would corrupt this
        assert r2.status == 200 and r2.body == b"".join(pattern(10))


def test_100_mib_download_streams_in_bounded_memory(proxy: Proxy) -> None:
    digest = hashlib.sha256()
    got = 0
    with RssSampler(proxy.pid) as sampler:
        with requests.get(f"{proxy.url}/bytes/{BIG}", stream=True, timeout=60) as r:
            assert r.status_code == 200
            for piece in r.iter_content(256 << 10):
                digest.update(piece)
                got += len(piece)
    assert got == BIG
    assert digest.hexdigest() == pattern_sha256(BIG)
    _assert_rss_bounded(sampler)


def test_100_mib_upload_streams_in_bounded_memory(proxy: Proxy, backend: Backend) -> None:
    with RssSampler(proxy.pid) as sampler:
        r = requests.post(f"{proxy.url}/upload", data=PatternUpload(BIG), timeout=100)
    assert r.status_code == 200, r.text[:500]
    echo = r.json()
    assert echo["body_length"] == BIG
    assert echo["body_sha256"] == pattern_sha256(BIG)
    _assert_rss_bounded(sampler)


def test_32_mib_chunked_upload_streams_in_bounded_memory(proxy: Proxy) -> None:
    n = 32 * MiB
    with RssSampler(proxy.pid) as sampler:
        r = requests.post(f"{proxy.url}/upload", data=pattern(n), timeout=60)  # chunked
    assert r.status_code == 200, r.text[:500]
    assert r.json()["body_length"] == n
    assert r.json()["body_sha256"] == pattern_sha256(n)
    _assert_rss_bounded(sampler)
