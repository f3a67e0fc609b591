"""``tests.support.wsgi_app`` plus when the app worked on each request.

Every response carries ``X-App-Start`` and ``X-App-End`` (``time.time()`` when the
app was called and when it returned) and ``X-App-Pid``, so a test can compute how
many requests a set of gunicorn worker processes served at once: the intervals are
on one machine clock, whatever process served them.

``X-App-Waited-Ms``: how long the request had been sitting on its connection
before the app saw it (Linux ``TCP_INFO.tcpi_last_data_recv`` of gunicorn's client
socket). A sync worker takes a connection only when it is free, so a request the
proxy sent while both workers were busy waited in gunicorn's accept queue: this
shows it, where the app's own intervals cannot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from tests.support.wsgi_app import app as inner


def _waited_ms(environ: dict[str, Any]) -> int:
    import socket
    import struct

    sock = environ.get("gunicorn.socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return -1
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    # struct tcp_info: 8 one-byte fields, then u32s; tcpi_last_data_recv is the 12th
    return struct.unpack_from("I", info, 8 + 11 * 4)[0]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start = time.time()
    waited = _waited_ms(environ)
    captured: list[Any] = []

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.append((status, headers, exc_info))
        return lambda data: None

    body = b"".join(inner(environ, capture))
    status, headers, exc_info = captured[0]
    start_response(status, [*headers, ("X-App-Start", f"{start:.6f}"),
                            ("X-App-End", f"{time.time():.6f}"),
                            ("X-App-Pid", str(os.getpid())),
                            ("X-App-Waited-Ms", str(waited))], exc_info)
    return [body]


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at the same instant (an end before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
