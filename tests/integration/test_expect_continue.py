"""Expect: 100-continue for requests that will not be forwarded.

httpd (and nginx) send ``100 Continue`` only when something reads the request body.
A request answered without one (no route: 404; ``Require`` denies: 403; a handler
such as server-status) gets its final status at once, with no 100 before it, so the
client never uploads its body; the connection is then closed, and a body sent anyway
is drained, never parsed as a next request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.backend import Backend
from tests.support.net import curl
from tests.support.rawhttp import RawClient
from tests.support.servers import Proxy

CONF = """
ProxyPass "/app" "http://127.0.0.1:{b}"
<Location "/private">
    ProxyPass "http://127.0.0.1:{b}/private"
    Require ip 10.0.0.0/8
</Location>
<Location "/server-status">
    SetHandler server-status
</Location>
"""

# Time given to anything smuggled in a refused body to reach the backend.
SMUGGLE_GRACE = 0.2


@pytest.fixture
def proxy(proxympm: Callable[..., Proxy], backend: Backend) -> Proxy:
    return proxympm(CONF, b=backend.port)


@pytest.mark.parametrize(("path", "status"), [
    ("/nowhere", 404), ("/private/x", 403), ("/server-status?auto", 405)])
def test_refused_request_gets_its_final_status_without_100(
    proxy: Proxy, backend: Backend, path: str, status: int
) -> None:
    smuggled = b"GET /app/smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"
    body = smuggled * 20
    with RawClient(proxy.port, timeout=5) as client:
        client.send(b"POST %s HTTP/1.1\r\nHost: example.test\r\nExpect: 100-continue\r\n"
                    b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body)))
        while b"\r\n" not in client.buf:
            assert client._fill(), "closed before any answer"
        assert client.buf.startswith(b"HTTP/1.1 %d " % status), bytes(client.buf[:80])
        resp = client.read_response("POST")
        assert resp.status == status and resp.complete
        assert "close" in resp.connection_tokens()
        try:  # a client that sends the body anyway: drained, never parsed
            client.send(body)
        except OSError:
            pass
        assert client.closed_by_peer(5)
    time.sleep(SMUGGLE_GRACE)
    assert not [r for r in backend.requests if r.target == "/app/smuggled"]
    assert not backend.requests


def test_forwarded_request_still_gets_100(proxy: Proxy, backend: Backend) -> None:
    with RawClient(proxy.port, timeout=5) as client:
        client.send(b"POST /app/up HTTP/1.1\r\nHost: example.test\r\n"
                    b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        while b"\r\n\r\n" not in client.buf:
            assert client._fill(), "closed before 100 Continue"
        assert bytes(client.buf) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        resp = client.read_response("POST")
        assert resp.status == 200 and "close" not in resp.connection_tokens()
    assert [r.target for r in backend.wait_for_requests(1)] == ["/up"]


def test_curl_never_uploads_a_refused_body(proxy: Proxy, backend: Backend,
                                           tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * (2 << 20))

    def post(path: str) -> tuple[int, int]:
        r = curl("-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
                 "-H", "Expect: 100-continue", "--expect100-timeout", "30",
                 "--data-binary", f"@{upload}", f"{proxy.url}{path}")
        code, sent = r.stdout.split()
        return int(code), int(sent)

    # --expect100-timeout 30: curl waits for the 100 (or the final status) itself
    assert post("/nowhere") == (404, 0)
    assert post("/private/x") == (403, 0)
    assert post("/app/up") == (200, 2 << 20)
    assert [r.target for r in backend.wait_for_requests(1)] == ["/up"]


def test_a_refused_request_whose_body_came_anyway_is_read_as_without_expect(
    proxy: Proxy, backend: Backend
) -> None:
    """A client that did not wait for the 100: its body is read as any body is, and
    the connection carries on."""
    with RawClient(proxy.port, timeout=5) as client:
        client.send(b"POST /nowhere HTTP/1.1\r\nHost: example.test\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 2\r\n\r\nhiGET /app/after HTTP/1.1\r\n"
                    b"Host: example.test\r\n\r\n")
        assert client.read_response("POST").status == 404
        assert client.read_response("GET").status == 200
    assert [r.target for r in backend.wait_for_requests(1)] == ["/after"]
