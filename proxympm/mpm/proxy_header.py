"""Reading an inbound PROXY protocol header (RemoteIPProxyProtocol), for the listener.

The listener calls ``read_header`` when a connection on a PROXY listener is
readable, before any TLS handshake or HTTP parsing. It never reads past the
header: what follows (a TLS ClientHello, a request) must stay in the socket for
the next layer. So it reads exactly what the header still needs; for a version 1
line whose end is not in sight yet it peeks (MSG_PEEK) to find the CRLF, and
takes only what the peek shows when no CRLF is there yet (so a slow sender never
makes the poller report the same bytes again and again).

Listener thread only; the connection's ``inbuf`` holds the partial header.
"""

from __future__ import annotations

import ipaddress
import socket

from proxympm.http.proxy_protocol import V1_MAX, ProxyHeaderError, header_length, next_read

__all__ = ["ProxyHeaderError", "excepted", "read_header"]


def excepted(networks: tuple, peer: str) -> bool:  # type: ignore[type-arg]
    """RemoteIPProxyProtocolExceptions: this peer may connect without a header."""
    addr = ipaddress.ip_address(peer)
    return any(addr.version == net.version and addr in net for net in networks)


def read_header(sock: socket.socket, buf: bytearray) -> bytes | None:
    """The complete header (taken out of ``buf``), or None to wait for more bytes.
    Raises ProxyHeaderError (malformed) or ConnectionError (EOF, reset)."""
    while True:
        want = next_read(buf)
        if want == 0:
            header = bytes(buf)
            buf.clear()
            return header
        if want == 1 and header_length(buf) is None and not buf.startswith(b"\r\n"):
            want = _v1_rest(sock, buf)
            if want == 0:
                return None
        try:
            data = sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return None
        if not data:
            raise ConnectionError("closed before the PROXY header was complete")
        buf += data


def _v1_rest(sock: socket.socket, buf: bytearray) -> int:
    """How much of a v1 line to read: up to the CRLF if the peek shows it, else all
    the peek shows. 0: nothing there yet."""
    try:
        peek = sock.recv(V1_MAX - len(buf), socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return 0
    if not peek:
        raise ConnectionError("closed before the PROXY header was complete")
    seen = bytes(buf) + peek
    end = seen.find(b"\r\n", max(0, len(buf) - 1))
    if end < 0:
        if len(seen) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 line longer than 107 bytes")
        return len(peek)
    return end + 2 - len(buf)
