"""Property tests: no input makes the parsing layer raise anything but HTTPError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxympm.http.body import ChunkedBody
from proxympm.http.errors import HTTPError
from proxympm.http.request import Limits, RequestReader
from proxympm.http.response import read_response_head, response_body
from tests.corpus.requests import CASES

SEEDS = [raw for _, raw, _ in CASES]


def mutate(data: st.DataObject) -> bytes:
    raw = bytearray(data.draw(st.sampled_from(SEEDS)))
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.integers(0, 2))
        if op == 0 and pos < len(raw):
            del raw[pos]
        elif op == 1:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif pos < len(raw):
            raw[pos] = data.draw(st.integers(0, 255))
    return bytes(raw)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_request_reader_only_raises_httperror(data: st.DataObject) -> None:
    raw = mutate(data)
    split = data.draw(st.integers(0, len(raw)))
    reader = RequestReader(Limits())
    buf = bytearray()
    body = None
    try:
        for part in (raw[:split], raw[split:]):
            buf += part
            for _ in range(len(raw) + 1):  # bounded: each round consumes or stops
                if body is None:
                    parsed = reader.read(buf)
                    if parsed is None:
                        break
                    _, body = parsed
                body.feed(buf)
                if not body.done:
                    break  # waits for more input (an incomplete chunk line stays buffered)
                body = None
    except HTTPError as exc:
        assert 400 <= exc.status < 600


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_chunked_decoder_only_raises_httperror(raw: bytes) -> None:
    decoder = ChunkedBody(400)
    buf = bytearray(raw)
    try:
        decoder.feed(buf)
    except HTTPError as exc:
        assert exc.status == 400


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"GET", b"HEAD"]))
def test_response_head_only_raises_httperror(raw: bytes, method: bytes) -> None:
    buf = bytearray(b"HTTP/1.1 200 OK\r\n" + raw)
    try:
        resp = read_response_head(buf)
        if resp is not None:
            response_body(resp, method).feed(buf)
    except HTTPError as exc:
        assert exc.status == 502
