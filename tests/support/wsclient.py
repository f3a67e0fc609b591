"""A lean raw-socket WebSocket client for opening thousands of connections from one
test process (the ``websockets`` library checks correctness elsewhere; one asyncio
or thread per connection would make 5,000 of them slow here).

Only what the scale test needs: the RFC 6455 opening handshake (101 and the
Sec-WebSocket-Accept check), masked text frames out, unmasked short text frames in.
"""

from __future__ import annotations

import base64
import hashlib
import os
import selectors
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake_request(path: bytes, host: bytes, key: bytes) -> bytes:
    return (b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host, key))


def accept_value(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def text_frame(payload: bytes) -> bytes:
    """A masked, final text frame (payload under 126 bytes)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def _wait_all(sel: selectors.BaseSelector, bufs: dict[socket.socket, bytearray],
              done, deadline: float) -> None:  # type: ignore[no-untyped-def]
    """Read from every registered socket until ``done(buf)`` holds for each."""
    left = set(bufs)
    while left:
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise TimeoutError(f"{len(left)} connections did not answer in time")
        for key, _ in sel.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"connection closed early: {bytes(bufs[sock])[:200]!r}")
            bufs[sock] += data
            if done(bufs[sock]):
                sel.unregister(sock)
                left.discard(sock)


def open_many(port: int, path: bytes, count: int, batch: int = 250,
              timeout: float = 60.0) -> list[socket.socket]:
    """``count`` WebSocket connections through 127.0.0.1:``port``, handshakes done
    ``batch`` at a time; each 101 is checked (status and accept key)."""
    out: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        n = min(batch, count - len(out))
        keys: dict[socket.socket, bytes] = {}
        sel = selectors.DefaultSelector()
        bufs: dict[socket.socket, bytearray] = {}
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            key = base64.b64encode(os.urandom(16))
            s.sendall(handshake_request(path, b"127.0.0.1:%d" % port, key))
            keys[s] = key
            bufs[s] = bytearray()
            sel.register(s, selectors.EVENT_READ)
        _wait_all(sel, bufs, lambda b: b"\r\n\r\n" in b, deadline)
        sel.close()
        for s, buf in bufs.items():
            head = bytes(buf).split(b"\r\n\r\n", 1)[0]
            assert head.startswith(b"HTTP/1.1 101 "), head[:200]
            assert b"sec-websocket-accept: " + accept_value(keys[s]).lower() in head.lower(), head
            out.append(s)
    return out


def echo_round(socks: list[socket.socket], tag: bytes, timeout: float = 60.0) -> None:
    """Send one text message on every connection and check each gets it back."""
    want = {s: b"%s-%d" % (tag, i) for i, s in enumerate(socks)}
    for s, payload in want.items():
        s.sendall(text_frame(payload))
    sel = selectors.DefaultSelector()
    bufs: dict[socket.socket, bytearray] = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = bytearray()
    expected = {s: struct.pack("!BB", 0x81, len(p)) + p for s, p in want.items()}
    _wait_all(sel, bufs, lambda b: len(b) >= 2 and len(b) >= 2 + b[1], time.monotonic() + timeout)
    sel.close()
    for s in socks:
        assert bytes(bufs[s]) == expected[s], (bytes(bufs[s])[:100], expected[s])
