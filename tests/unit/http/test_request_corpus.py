"""The request corpus through the sans-I/O reader, whole and in every chunking."""

from __future__ import annotations

import random

import pytest

from proxympm.http.errors import HTTPError
from proxympm.http.request import Limits, RequestReader
from tests.corpus.requests import CASES


def replay(raw: bytes, chunks: list[bytes]) -> object:
    """Feed chunks as a connection would; return forwarded (method, path) or a status."""
    reader = RequestReader(Limits())
    buf = bytearray()
    seen: list[tuple[bytes, bytes]] = []
    body = None
    try:
        for chunk in chunks:
            buf += chunk
            while True:
                if body is None:
                    parsed = reader.read(buf)
                    if parsed is None:
                        break
                    req, body = parsed
                    seen.append((req.method, req.path))
                body.feed(buf)
                if not body.done:
                    break
                body = None
    except HTTPError as exc:
        return exc.status
    assert body is None, "the corpus ends on message boundaries"
    assert not buf, f"unconsumed bytes {bytes(buf)!r}"
    return seen


def chunkings(raw: bytes, seed: int) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, 7)))
    random_chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return {
        "whole": [raw],
        "bytewise": [raw[i : i + 1] for i in range(len(raw))],
        "lines": raw.splitlines(keepends=True),
        "random": random_chunks,
    }


@pytest.mark.parametrize(("name", "raw", "expected"), CASES, ids=[c[0] for c in CASES])
def test_corpus_in_every_chunking(name: str, raw: bytes, expected: object) -> None:
    for how, chunks in chunkings(raw, hash(name) & 0xFFFF).items():
        assert replay(raw, chunks) == expected, f"{name} fed {how}"


def test_head_stays_in_buffer_until_complete() -> None:
    reader = RequestReader(Limits())
    buf = bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert reader.read(buf) is None
    assert bytes(buf) == b"GET / HTTP/1.1\r\nHost: a\r\n"
    buf += b"\r\nGET /next"
    req, _ = reader.read(buf)
    assert req.path == b"/" and bytes(buf) == b"GET /next"


def test_semantics_of_a_parsed_request() -> None:
    reader = RequestReader(Limits())
    buf = bytearray(
        b"POST http://h.test:81/p?q HTTP/1.1\r\nHost: ignored\r\nConnection: close, X-Drop\r\n"
        b"Expect: 100-Continue\r\nContent-Length: 3\r\nX-Pad:  v  \r\n\r\nabc"
    )
    req, body = reader.read(buf)
    assert req.host == b"h.test:81" and req.path == b"/p?q"
    assert req.connection_tokens == {b"close", b"x-drop"} and not req.keep_alive
    assert req.expect_continue and req.content_length == 3
    assert (b"X-Pad", b"v") in req.headers
    assert body.feed(buf) == b"abc" and body.done


def test_http10_gets_no_keepalive() -> None:
    raw = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    req, _ = RequestReader(Limits()).read(bytearray(raw))
    assert not req.keep_alive


def test_limits_are_configurable() -> None:
    reader = RequestReader(Limits(request_line=20, fields=2, field_size=30, body=10))
    with pytest.raises(HTTPError) as e:
        reader.read(bytearray(b"GET /" + b"a" * 30 + b" HTTP/1.1\r\n"))
    assert e.value.status == 414
    reader = RequestReader(Limits(request_line=100, fields=2, field_size=100, body=10))
    with pytest.raises(HTTPError) as e:
        reader.read(bytearray(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"))
    assert e.value.status == 431
    reader = RequestReader(Limits(request_line=100, fields=5, field_size=100, body=10))
    with pytest.raises(HTTPError) as e:
        reader.read(bytearray(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"))
    assert e.value.status == 413
