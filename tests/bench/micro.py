"""In-process cost of the Python parts of one small proxied request, no sockets.

    python3 tests/bench/micro.py

Parses a wrk-like and a browser-like request head alone ("parse ...": the
``RequestReader.read`` of one whole head), then again with the upstream head built
(``upstream_request_head``); parses an nginx response head alone, then with the
client's response built (``ResponseRelay``) for a 13-byte body. Prints the best of 5 repeats in µs
per call. Use it to see whether a change to parsing or header rewriting pays before
measuring a whole child (tests/bench/README.md). Standard library only.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxympm.config.model import HostConfig  # noqa: E402
from proxympm.http.request import Limits, Request, RequestReader  # noqa: E402
from proxympm.http.response import read_response_head  # noqa: E402
from proxympm.proxy.headers import upstream_request_head  # noqa: E402
from proxympm.proxy.relay import ResponseRelay  # noqa: E402

RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 19:41:26 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n"
            b"hello, world\n")
WRK = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18501\r\n\r\n"
BROWSER = (b"GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\n"
           b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
           b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"Connection: keep-alive\r\nCookie: a=1; b=2\r\nUpgrade-Insecure-Requests: 1\r\n"
           b"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n")
HOST = HostConfig()


class _Client:
    """What the relay needs of a client connection: a socket that takes everything."""

    tls = False
    rules = None

    def send_some(self, data: bytes) -> bytes:
        return b""


def main() -> None:
    reader = RequestReader(Limits())
    client = _Client()

    def request(raw: bytes) -> Request:
        parsed = reader.read(bytearray(raw))
        assert parsed is not None
        req = parsed[0]
        upstream_request_head(req, HOST, b"/", b"127.0.0.1:18500", "127.0.0.1", False,
                              b"proxympm", None)
        return req

    req = request(WRK)

    def response() -> None:
        buf = bytearray(RESPONSE)
        resp = read_response_head(buf)
        assert resp is not None
        relay = ResponseRelay(client, resp, req, HOST, b"http://127.0.0.1", b"proxympm", True)
        relay.pump(buf)
        relay.finish()

    n = 50_000
    head = read_response_head
    for name, call in (("parse request (wrk)", lambda: reader.read(bytearray(WRK))),
                       ("parse req. (browser)", lambda: reader.read(bytearray(BROWSER))),
                       ("parse response", lambda: head(bytearray(RESPONSE[:-13]))),
                       ("request (wrk)", lambda: request(WRK)),
                       ("request (browser)", lambda: request(BROWSER)),
                       ("response (13 B)", response)):
        best = min(timeit.repeat(call, number=n, repeat=5)) / n * 1e6
        print(f"{name:20s} {best:6.2f} µs")


if __name__ == "__main__":
    main()
