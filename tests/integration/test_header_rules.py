"""Header and RequestHeader (mod_headers) through a real proxympm: server, vhost and
<Location> rules merged in httpd's order, the two tables (onsuccess vs always) on
proxied responses and on proxympm's own error responses, edits with back-references,
formats, env= conditions, and request rules as the recording backend sees them."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import requests

from tests.support.backend import Backend
from tests.support.net import free_port
from tests.support.rawhttp import RawClient
from tests.support.servers import Proxy

CONF = """
Header always set Strict-Transport-Security "max-age=63072000; includeSubDomains"
Header unset Server
Header unset X-Powered-By
Header set X-Timing "%D %t"
Header set X-Plain yes env=!HTTPS
Header always set X-Dup proxy
RequestHeader unset X-Secret
RequestHeader set X-Forwarded-Proto https
RequestHeader edit Authorization "^Bearer\\s+(\\S+)$" "Token $1 (&)"
RequestHeader merge X-List b
ProxyPass /gone !
ProxyPass /dead http://127.0.0.1:{dead}/ retry=0
ProxyPass /late http://127.0.0.1:{b}/slow/3 timeout=1
<Proxy balancer://down>
    BalancerMember http://127.0.0.1:{dead} retry=30
</Proxy>
ProxyPass /pool balancer://down/
ProxyPass / http://127.0.0.1:{b}/

<VirtualHost *:{port}>
    ServerName a.test
    Header set X-Vhost a
    Header edit* Set-Cookie "(^|; )path=/" "$1path=/app"
    <Location /api>
        ProxyPass http://127.0.0.1:{b}/
        Header always set Access-Control-Allow-Origin "*"
        Header merge Vary Origin
        RequestHeader set X-Location api
    </Location>
    <Location /api/v2>
        Header set X-Vhost a-v2
    </Location>
</VirtualHost>
<VirtualHost *:{port}>
    ServerName b.test
</VirtualHost>
"""


@pytest.fixture
def proxy(proxympm: Callable[..., Proxy], backend: Backend) -> Proxy:
    return proxympm(CONF, b=backend.port, dead=free_port())


def _get(proxy: Proxy, path: str, host: str = "a.test", **kw: object) -> requests.Response:
    headers = {"Host": host, **kw.pop("headers", {})}  # type: ignore[dict-item]
    return requests.get(proxy.url + path, headers=headers, timeout=10, allow_redirects=False,
                        **kw)


def test_server_vhost_and_location_rules_merge_in_config_order(proxy: Proxy) -> None:
    q = "?Server=gunicorn&X-Powered-By=PHP&Vary=Accept-Encoding&Set-Cookie=s=1; path=/; HttpOnly"
    r = _get(proxy, "/respond/200" + q)
    assert r.status_code == 200
    assert "Server" not in r.headers and "X-Powered-By" not in r.headers
    assert r.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    assert r.headers["X-Vhost"] == "a"
    assert r.headers["Set-Cookie"] == "s=1; path=/app; HttpOnly"
    assert "Access-Control-Allow-Origin" not in r.headers  # /api only
    assert re.fullmatch(r"D=\d+ t=\d{16}", r.headers["X-Timing"])
    assert r.headers["X-Plain"] == "yes"  # env=!HTTPS on a plain connection

    r = _get(proxy, "/api/respond/200" + q)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Vary"] == "Accept-Encoding, Origin"  # merged once
    assert r.headers["X-Vhost"] == "a"
    r = _get(proxy, "/api/respond/200?Vary=Origin")
    assert r.headers["Vary"] == "Origin"  # merge: already an element
    r = _get(proxy, "/api/v2/x")
    assert r.headers["X-Vhost"] == "a-v2"  # the later Location wins
    assert r.headers["Access-Control-Allow-Origin"] == "*"  # both Locations apply
    assert "Access-Control-Allow-Origin" not in _get(proxy, "/apix").headers  # segments

    r = _get(proxy, "/api/respond/200" + q, host="b.test")  # the other vhost: server rules only
    assert "X-Vhost" not in r.headers and "Access-Control-Allow-Origin" not in r.headers
    assert "Server" not in r.headers and "Strict-Transport-Security" in r.headers


def test_always_is_a_second_table_as_in_httpd(proxy: Proxy) -> None:
    """A backend 404 is a proxied response: onsuccess rules edit it. ``always set``
    beside a backend field of the same name sends both (httpd's err_headers_out)."""
    r = _get(proxy, "/respond/404?X-Dup=backend&Server=x")
    assert r.status_code == 404
    assert "Server" not in r.headers
    assert r.headers["X-Vhost"] == "a"
    assert r.raw.headers.getlist("X-Dup") == ["backend", "proxy"]


@pytest.mark.parametrize(("path", "status"), [("/gone", 404), ("/dead/x", 503),
                                              ("/garbage", 502), ("/late", 504),
                                              ("/pool", 503)])
def test_own_error_responses_get_only_always_rules(proxy: Proxy, path: str,
                                                   status: int) -> None:
    if path == "/pool":  # the member fails, then the balancer answers 503 itself
        assert _get(proxy, path).status_code == 503
    r = _get(proxy, "/api" + path if path == "/garbage" else path)
    assert r.status_code == status
    if path == "/pool":
        assert r.headers["Retry-After"]
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    assert r.headers["X-Dup"] == "proxy"
    assert "X-Vhost" not in r.headers and "X-Timing" not in r.headers  # onsuccess only
    if path == "/garbage":
        assert r.headers["Access-Control-Allow-Origin"] == "*"  # Location's always rule
    proxy.wait_for_log("access", rf'HTTP/1.1" {status} ')


def test_listener_errors_get_the_hosts_always_rules(proxy: Proxy) -> None:
    with RawClient(proxy.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\nBad Header: x\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 400
    assert resp.header("Strict-Transport-Security") == "max-age=63072000; includeSubDomains"


def test_request_rules_reach_the_backend(proxy: Proxy, backend: Backend) -> None:
    r = _get(proxy, "/api/r", headers={"X-Secret": "s3cr3t", "Authorization": "Bearer abc",
                                       "X-List": "a, b", "X-Forwarded-Proto": "gopher"})
    assert r.status_code == 200
    seen = backend.requests[-1]
    assert seen.header("X-Secret") is None
    assert seen.header("Authorization") == "Token abc (Bearer abc)"
    assert seen.header("X-List") == "a, b"
    assert seen.header("X-Location") == "api"
    # the rule's X-Forwarded-Proto is the operator's word, sent instead of proxympm's
    assert seen.header_all("X-Forwarded-Proto") == ["https"]
    _get(proxy, "/r", host="b.test", headers={"X-List": "a"})
    seen = backend.requests[-1]
    assert seen.header("X-List") == "a, b" and seen.header("X-Location") is None


def test_bad_values_are_refused_at_load_with_file_and_line(
        proxympm_cli: Callable[..., object], tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "bad.conf"
    for line, message in [
        ('Header set X-A "a\rb"', "CR, LF or NUL"),
        ("Header set Content-Length 5", "writes Content-Length itself"),
        ("RequestHeader set X-A %{SSL_PROTOCOL}s", "not supported"),
        ("Header edit X-A (unclosed x", "regex could not be compiled"),
        ("<Location /x>\nHeader set X-A 1 early\n</Location>", "'early' is not allowed"),
    ]:
        conf.write_text(f"Listen 8080\nServerName x\n{line}\n")
        done = proxympm_cli("-t", "-f", str(conf))
        assert done.returncode != 0  # type: ignore[attr-defined]
        assert f"line {3 + line.startswith('<')} of {conf}" in done.stderr, done.stderr  # type: ignore[attr-defined]
        assert message in done.stderr  # type: ignore[attr-defined]


def test_listener_errors_after_the_head_name_the_believed_client(
        proxympm: Callable[..., Proxy], backend: Backend) -> None:
    """A 400 for a broken chunked body comes from the listener once the head is
    parsed: %{REMOTE_ADDR}e in an always rule is the client mod_remoteip believes,
    as it is on every other answer for that request."""
    proxy = proxympm("""
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
Header always set X-Client "%{REMOTE_ADDR}e"
ProxyPass / http://127.0.0.1:{b}/
""", b=backend.port)
    with RawClient(proxy.port) as c:
        c.send(b"POST /x HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 203.0.113.7\r\n"
               b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
        resp = c.read_response()
    assert resp.status == 400
    assert resp.header("X-Client") == "203.0.113.7"
    assert backend.requests == []
    with RawClient(proxy.port) as c:  # before the head is parsed: the peer itself
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 203.0.113.7\r\n"
               b"Bad Header: x\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 400 and resp.header("X-Client") == "127.0.0.1"
