"""Which client address proxympm believes (mod_remoteip), as the backend's
X-Forwarded-For and Forwarded and the access log's %a/%h vs %{c}a/%{c}h show it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.support.backend import Backend
from tests.support.servers import Proxy

CONF = """
LogFormat "%a|%{c}a|%h|%{c}h|%{X-Forwarded-For}i" remoteip
CustomLog {access_log} remoteip
RemoteIPHeader X-Forwarded-For
RemoteIPProxiesHeader X-Forwarded-By
RemoteIPInternalProxy 127.0.0.1
RemoteIPTrustedProxy 198.51.100.0/24
ProxyAddForwarded On
ProxyPass / http://127.0.0.1:{b}/

<VirtualHost *:{port}>
    ServerName trusting.test
</VirtualHost>
<VirtualHost *:{port}>
    ServerName wary.test
    # its own list replaces the main server's: the loopback peer is not trusted here
    RemoteIPTrustedProxy 10.0.0.0/8
</VirtualHost>
"""


@pytest.fixture
def proxy(proxympm: Callable[..., Proxy], backend: Backend) -> Proxy:
    return proxympm(CONF, b=backend.port)


def _send(proxy: Proxy, backend: Backend, host: str, **headers: str):  # type: ignore[no-untyped-def]
    fields = {"Host": host, **{k.replace("_", "-"): v for k, v in headers.items()}}
    with requests.Session() as s:
        r = s.get(proxy.url + "/who", headers=fields, timeout=10)
    assert r.status_code == 200
    return backend.requests[-1]


@pytest.mark.parametrize(("xff", "believed", "upstream_xff"), [
    # the internal loopback peer presents a public client
    ("203.0.113.9", "203.0.113.9", "203.0.113.9"),
    # internal -> trusted 198.51.100.7 -> 203.0.113.9, which is not a proxy: stop
    ("6.6.6.6, 203.0.113.9,198.51.100.7", "203.0.113.9", "6.6.6.6, 203.0.113.9"),
    # a trusted (external) proxy may not present a private address
    ("10.1.2.3, 198.51.100.7", "198.51.100.7", "10.1.2.3, 198.51.100.7"),
    # an entry that is not an address stops the walk where it is
    ("nonsense", "127.0.0.1", "nonsense, 127.0.0.1"),
    # IPv6 from the internal proxy: believed, and bracketed in Forwarded
    ("2001:db8::7", "2001:db8::7", "2001:db8::7"),
])
def test_trusted_chain_is_walked_right_to_left(proxy: Proxy, backend: Backend, xff: str,
                                               believed: str, upstream_xff: str) -> None:
    seen = _send(proxy, backend, "trusting.test", X_Forwarded_For=xff)
    assert seen.header("X-Forwarded-For") == upstream_xff
    # the trusted (not internal) hops crossed; the internal loopback peer is not one
    crossed = "198.51.100.7" if "198.51.100.7" in xff and believed != "198.51.100.7" else None
    assert seen.header("X-Forwarded-By") == crossed
    shown = f"[{believed}]" if ":" in believed else believed
    forwarded = seen.header("Forwarded")
    if believed == "127.0.0.1":  # nothing believed: the connection's own address and port
        assert forwarded.startswith('for="127.0.0.1:')
    else:
        node = f'"{shown}"' if ":" in believed else shown
        assert forwarded == f"for={node};host=trusting.test;proto=http"
    # %a and %h: the believed address; %{c}a and %{c}h: the peer; %i: what is left
    left = upstream_xff.rpartition(", ")[0] if believed != "127.0.0.1" else xff
    assert _last_access(proxy) == [believed, "127.0.0.1", believed, "127.0.0.1", left or "-"]


def _last_access(proxy: Proxy) -> list[str]:
    proxy.wait_for_log("access", r"\|")
    return proxy.access_log().splitlines()[-1].split("|")


def test_untrusted_peer_is_not_believed(proxy: Proxy, backend: Backend) -> None:
    seen = _send(proxy, backend, "wary.test", X_Forwarded_For="1.2.3.4",
                 Forwarded="for=1.2.3.4")
    assert seen.header("X-Forwarded-For") == "1.2.3.4, 127.0.0.1"
    # an untrusted peer's Forwarded is dropped, ours names the real peer (with port)
    forwarded = seen.header_all("Forwarded")
    assert len(forwarded) == 1 and forwarded[0].startswith('for="127.0.0.1:')
    assert forwarded[0].endswith(";host=wary.test;proto=http")
    assert _last_access(proxy) == ["127.0.0.1"] * 4 + ["1.2.3.4"]


def test_trusted_peers_forwarded_is_kept_and_chained(proxy: Proxy, backend: Backend) -> None:
    seen = _send(proxy, backend, "trusting.test", X_Forwarded_For="203.0.113.9",
                 Forwarded='for=203.0.113.9;proto=https')
    value = seen.header("Forwarded")
    first, _, ours = value.partition(", ")
    assert first == "for=203.0.113.9;proto=https"
    assert ours.startswith('for="127.0.0.1:') and ours.endswith(";host=trusting.test;proto=http")
