"""A WSGI app that reports how long its gunicorn worker was busy with a request.

``/work?seconds=S&size=N``: read the whole request body, sleep S seconds, answer N
bytes. ``X-App-Busy`` is the time from the app being called (gunicorn has read the
request head) until it returns: with the proxy buffering request bodies, a slow
upload must not show up in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    t0 = time.monotonic()
    query = parse_qs(environ.get("QUERY_STRING", ""))
    stream = environ["wsgi.input"]
    received = 0
    while piece := stream.read(65536):
        received += len(piece)
    time.sleep(float(query.get("seconds", ["0"])[0]))
    size = int(query.get("size", ["0"])[0])
    busy = time.monotonic() - t0
    start_response("200 OK", [
        ("Content-Length", str(size)), ("X-App-Busy", f"{busy:.3f}"),
        ("X-Received", str(received)),
    ])
    return [b"x" * size]
