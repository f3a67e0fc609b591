"""Bodies through the proxy: chunked both ways, and 100 MiB each way in bounded memory."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
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


SAMPLE_EVERY = 4 * MiB


def sampled(pieces: Iterable[bytes], sampler: RssSampler) -> Iterator[bytes]:
    """Pass pieces through, sampling the proxy's RSS every SAMPLE_EVERY bytes."""
    moved = 0
    for piece in pieces:
        yield piece
        moved += len(piece)
        if moved >= SAMPLE_EVERY:
            moved = 0
            sampler.sample()


class PatternUpload:
    """An iterable body with a length, so requests streams it with Content-Length."""

    def __init__(self, n: int, sampler: RssSampler) -> None:
        self.n = n
        self.sampler = sampler

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[bytes]:
        return sampled(pattern(self.n), self.sampler)


def _assert_rss_bounded(sampler: RssSampler, min_samples: int) -> None:
    assert sampler.samples >= min_samples
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
    r = curl("--max-time", "20", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{data}",
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
            for piece in sampled(r.iter_content(256 << 10), sampler):
                digest.update(piece)
                got += len(piece)
    assert got == BIG
    assert digest.hexdigest() == pattern_sha256(BIG)
    _assert_rss_bounded(sampler, BIG // SAMPLE_EVERY)


def test_100_mib_upload_streams_in_bounded_memory(proxy: Proxy, backend: Backend) -> None:
    with RssSampler(proxy.pid) as sampler:
        r = requests.post(f"{proxy.url}/upload", data=PatternUpload(BIG, sampler),
                          timeout=100)
    assert r.status_code == 200, r.text[:500]
    echo = r.json()
    assert echo["body_length"] == BIG
    assert echo["body_sha256"] == pattern_sha256(BIG)
    _assert_rss_bounded(sampler, BIG // SAMPLE_EVERY)


def test_32_mib_chunked_upload_streams_in_bounded_memory(proxy: Proxy) -> None:
    n = 32 * MiB
    with RssSampler(proxy.pid) as sampler:
        # a generator without a length: requests sends it chunked
        r = requests.post(f"{proxy.url}/upload", data=sampled(pattern(n), sampler), timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["body_length"] == n
    assert r.json()["body_sha256"] == pattern_sha256(n)
    _assert_rss_bounded(sampler, n // SAMPLE_EVERY)


@pytest.mark.parametrize(
    "parts",
    [
        [b"5\r\nhello\r\n0\r\n\r\n"],
        [b"5\r\nhel", b"lo\r\n0\r\n\r\n"],
        [b"5\r\nhello\r", b"\n0\r\n\r\n"],
        [b"5\r\nhello\r\n0", b"\r\n\r\n"],
        [b"5\r\nhello\r\n0\r\n", b"\r\n"],
        [b"5\r\nhello\r\n0\r\n\r", b"\n"],
        [b"5", b"\r\nhello\r\n0\r\n\r\n"],
    ],
    ids=["whole", "mid-data", "mid-crlf", "after-last-size", "before-end", "mid-final-crlf",
         "mid-size-line"],
)
def test_chunked_request_split_across_reads(proxy: Proxy, backend: Backend,
                                            parts: list[bytes]) -> None:
    """The chunked body arrives in pieces cut anywhere (curl's 65524-byte chunks end up
    cut like this at 64 KiB read boundaries): the request must still go through."""
    with RawClient(proxy.port, timeout=5) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            time.sleep(0.2)
            c.send(part)
        r = c.read_response("POST")
    assert r.status == 200 and r.body == b"hello"
    assert backend.requests[-1].body_length == 5
