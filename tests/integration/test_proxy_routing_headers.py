"""Routing (ProxyPass prefixes, ``!``), the rebuilt upstream request's headers as the
recording backend sees them, and ProxyPassReverse on the way back."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.backend import Backend
from tests.support.rawhttp import RawClient
from tests.support.servers import Proxy

Two = tuple[Backend, Backend]

ROUTES = """
ProxyPass "/gone" "!"
ProxyPass "/foo" "http://127.0.0.1:{a}/foo"
ProxyPass "/app/" "http://127.0.0.1:{a}/" timeout=5 retry=5
ProxyPassReverse "/app/" "http://127.0.0.1:{a}/"
ProxyPass "/" "http://127.0.0.1:{b}/"
"""


@pytest.fixture
def two(backend_factory: Callable[..., Backend]) -> tuple[Backend, Backend]:
    return backend_factory("A"), backend_factory("B")


@pytest.fixture
def proxy(proxympm: Callable[..., Proxy], two: tuple[Backend, Backend]) -> Proxy:
    a, b = two
    return proxympm(ROUTES, a=a.port, b=b.port)


def _get(proxy, path: str, **kw: object) -> requests.Response:
    return requests.get(proxy.url + path, timeout=10, allow_redirects=False, **kw)


@pytest.mark.parametrize(
    ("path", "backend", "seen"),
    [
        ("/foo", "A", "/foo"),
        ("/foo/x", "A", "/foo/x"),
        ("/foo/x?q=1&r=2", "A", "/foo/x?q=1&r=2"),
        ("/foobar", "B", "/foobar"),
        ("/app/", "A", "/"),
        ("/app/deep/path?x=y", "A", "/deep/path?x=y"),
        ("/application", "B", "/application"),
        ("/", "B", "/"),
    ],
)
def test_prefix_routing(proxy: Proxy, path: str, backend: str, seen: str) -> None:
    r = _get(proxy, path)
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["backend"] == backend
    assert echo["target"] == seen


def test_exclusion_is_404_and_reaches_no_backend(proxy: Proxy, two: Two) -> None:
    for path in ("/gone", "/gone/x"):
        assert _get(proxy, path).status_code == 404
    assert _get(proxy, "/gonezo").json()["backend"] == "B"  # prefix, not substring
    seen = [r.target for b in two for r in b.requests]
    assert seen == ["/gonezo"]


def test_forwarded_headers_and_host(proxy: Proxy, two: Two) -> None:
    a, _ = two
    r = _get(proxy, "/app/h", headers={"X-Custom": "kept"})
    assert r.status_code == 200
    req = a.requests[-1]
    assert req.header("Host") == f"127.0.0.1:{a.port}"
    assert req.header("X-Forwarded-For") == "127.0.0.1"
    assert req.header("X-Forwarded-Host") == f"127.0.0.1:{proxy.port}"
    assert req.header("X-Forwarded-Server")
    assert req.header("X-Custom") == "kept"
    assert len(req.header_all("Host")) == 1


def test_x_forwarded_for_is_appended(proxy: Proxy, two: Two) -> None:
    a, _ = two
    _get(proxy, "/app/", headers={"X-Forwarded-For": "10.1.2.3"})
    values = ", ".join(a.requests[-1].header_all("X-Forwarded-For"))
    assert [v.strip() for v in values.split(",")] == ["10.1.2.3", "127.0.0.1"]


def test_hop_by_hop_and_connection_listed_request_headers_removed(
    proxy: Proxy, two: Two
) -> None:
    a, _ = two
    with RawClient(proxy.port) as c:
        r = c.request("GET", "/app/hop", headers=[
            ("Connection", "keep-alive, X-Private-Hop"),
            ("X-Private-Hop", "must not pass"),
            ("Keep-Alive", "timeout=99"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("X-End-To-End", "passes"),
        ])
    assert r.status == 200
    req = a.requests[-1]
    names = req.header_names()
    for gone in ("x-private-hop", "keep-alive", "proxy-connection", "te"):
        assert gone not in names, f"{gone} reached the backend: {req.raw_head!r}"
    for value in req.header_all("Connection"):
        assert "x-private-hop" not in value.lower()
    assert req.header("X-End-To-End") == "passes"


def test_hop_by_hop_response_headers_removed(proxy: Proxy) -> None:
    with RawClient(proxy.port) as c:
        r = c.request("GET", "/app/hopbyhop")
    assert r.status == 200
    assert r.header("X-Kept") == "yes"
    assert r.header("X-Backend-Private") is None, r.raw_head
    assert "x-backend-private" not in r.connection_tokens()
    assert "timeout=77" not in (r.header("Keep-Alive") or "")


def test_no_via_by_default(proxy: Proxy, two: Two) -> None:
    a, _ = two
    _get(proxy, "/app/")
    assert a.requests[-1].header("Via") is None


def test_proxy_via_on_and_preserve_host(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    proxy = proxympm(
        'ProxyVia On\nProxyPreserveHost On\nProxyPass "/" "http://127.0.0.1:{b}/"\n',
        b=backend.port,
    )
    r = requests.get(f"{proxy.url}/x", headers={"Host": "www.example.test:8080"}, timeout=10)
    assert r.status_code == 200
    req = backend.requests[-1]
    assert req.header("Host") == "www.example.test:8080"
    assert req.header("X-Forwarded-Host") == "www.example.test:8080"
    via = req.header("Via")
    assert via is not None and via.startswith("1.1 "), via
    assert r.headers.get("Via", "").startswith("1.1 ")  # ProxyVia On: responses too


def test_proxy_add_headers_off(proxympm: Callable[..., Proxy], backend: Backend) -> None:
    proxy = proxympm('ProxyAddHeaders Off\nProxyPass "/" "http://127.0.0.1:{b}/"\n',
                     b=backend.port)
    assert requests.get(f"{proxy.url}/", timeout=10).status_code == 200
    assert not {"x-forwarded-for", "x-forwarded-host", "x-forwarded-server"} & (
        backend.requests[-1].header_names())


def test_location_rewritten_by_proxy_pass_reverse(proxy: Proxy) -> None:
    r = _get(proxy, "/app/redirect")
    assert r.status_code == 302
    loc = urlsplit(r.headers["Location"])
    assert loc.path == "/app/elsewhere", r.headers["Location"]
    assert loc.netloc in ("", f"127.0.0.1:{proxy.port}"), r.headers["Location"]


def test_location_of_unmapped_backend_untouched(proxy: Proxy, two: Two) -> None:
    _, b = two
    r = _get(proxy, "/redirect")  # served by B, which has no ProxyPassReverse
    assert r.headers["Location"] == f"{b.url}/elsewhere"


def test_request_body_framing_reaches_backend_once(proxy: Proxy, two: Two) -> None:
    a, _ = two
    r = requests.post(f"{proxy.url}/app/upload", data=b"x" * 1234, timeout=10)
    assert r.json()["body_length"] == 1234
    req = a.requests[-1]
    framing = {n for n in req.header_names() if n in ("content-length", "transfer-encoding")}
    assert len(framing) == 1, req.raw_head
    assert json.loads(r.text)["method"] == "POST"
