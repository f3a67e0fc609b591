"""A WSGI app for gunicorn behind proxympm in tests.

``gunicorn -w 2 -k sync tests.support.wsgi_app:app``. Every JSON answer carries the
pid of the worker that served it, so tests can tell the workers apart.

- ``/bytes/N``: N pattern bytes (same bytes as the backend's ``/bytes/N``), generated
- ``/slow/SECONDS``: sleeps, then the echo JSON
- ``/upload``: reads the body in pieces; JSON with its length and sha256
- ``/status/CODE``: that status
- anything else: echo JSON (method, path, query, headers, body length, pid)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tests.support.backend import pattern

StartResponse = Callable[..., Any]


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    out = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            out[key.replace("_", "-").title()] = environ[key]
    return out


def _read_body(environ: dict[str, Any]) -> tuple[int, str]:
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = 0
    while piece := stream.read(256 << 10):
        digest.update(piece)
        total += len(piece)
    return total, digest.hexdigest()


def _json(start_response: StartResponse, obj: object, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path: str = environ.get("PATH_INFO", "/")
    parts = path.split("/")
    name = parts[1] if len(parts) > 1 else ""
    arg = parts[2] if len(parts) > 2 else ""
    length, sha = _read_body(environ)
    echo = {
        "server": "gunicorn",
        "pid": os.getpid(),
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "query": environ.get("QUERY_STRING", ""),
        "headers": _headers(environ),
        "body_length": length,
        "body_sha256": sha,
    }
    if name == "bytes" and arg.isdigit():
        n = int(arg)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])
        return _stream(n)
    if name == "slow":
        time.sleep(float(arg or "1"))
        return _json(start_response, echo)
    if name == "status" and arg.isdigit():
        start_response(f"{arg} Status", [("Content-Type", "text/plain"),
                                         ("Content-Length", "0")])
        return [b""]
    return _json(start_response, echo)


def _stream(n: int) -> Iterator[bytes]:
    yield from pattern(n)
