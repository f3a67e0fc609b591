"""The upgrade handshake rules (proxympm.proxy.upgrade): which requests are forwarded
with Upgrade, and which 101 answers are accepted."""

from __future__ import annotations

import pytest

from proxympm.config.model import HostConfig
from proxympm.http.errors import HTTPError
from proxympm.http.request import Limits, RequestReader
from proxympm.http.response import read_response_head
from proxympm.proxy.upgrade import switched_head, wanted_upgrade, with_upgrade


def _req(head: bytes):  # type: ignore[no-untyped-def]
    parsed = RequestReader(Limits()).read(bytearray(head))
    assert parsed is not None
    return parsed[0]


WS = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
      b"Upgrade: websocket\r\n\r\n")


@pytest.mark.parametrize(("head", "allowed", "ws", "want"), [
    (WS, "websocket", False, b"websocket"),
    (WS, "", True, b"websocket"),  # a ws:// URL allows websocket by default
    (WS, "", False, None),  # a plain route: Upgrade is hop-by-hop, stripped
    (WS, "h2c", True, None),  # upgrade= replaces the ws:// default
    (WS, "*", False, b"websocket"),
    (WS.replace(b"Upgrade: websocket", b"Upgrade: WebSocket/13, foo"), "foo,websocket",
     False, b"WebSocket/13, foo"),
    (WS.replace(b"keep-alive, Upgrade", b"keep-alive"), "*", False, None),  # not in Connection
    (WS.replace(b"HTTP/1.1", b"HTTP/1.0"), "*", False, None),  # RFC 9110 7.8: ignored in 1.0
    (WS.replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\n"), "*", False, None),
])  # fmt: skip
def test_wanted_upgrade(head: bytes, allowed: str, ws: bool, want: bytes | None) -> None:
    assert wanted_upgrade(_req(head), allowed, ws) == want


def test_with_upgrade_adds_the_fields_before_the_blank_line() -> None:
    assert with_upgrade(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", b"websocket") == (
        b"GET / HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")


def _resp(head: bytes):  # type: ignore[no-untyped-def]
    resp = read_response_head(bytearray(head))
    assert resp is not None
    return resp


def test_switched_head_passes_the_101_on_without_hop_by_hop_fields() -> None:
    resp = _resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nKeep-Alive: x\r\nSec-WebSocket-Accept: abc\r\n\r\n")
    head, headers = switched_head(resp, b"websocket", HostConfig(), b"http://a", b"a")
    assert head == (b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert (b"Upgrade", b"websocket") in headers


@pytest.mark.parametrize("fields", [b"", b"Upgrade: h2c\r\n"])
def test_switch_to_another_protocol_is_a_502(fields: bytes) -> None:
    with pytest.raises(HTTPError) as exc:  # (llhttp itself refuses a 101 without Upgrade)
        resp = _resp(b"HTTP/1.1 101 Switching Protocols\r\n" + fields + b"\r\n")
        switched_head(resp, b"websocket", HostConfig(), b"http://a", b"a")
    assert exc.value.status == 502
