"""<Location> SetHandler (server-status, metrics) and Require (mod_authz_host)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxympm.config import ConfigError, ServerConfig
from proxympm.config.model import Access
from proxympm.proxy.routing import AccessCheck, Router

Load = Callable[..., ServerConfig]

STATUS = """Listen 80
ProxyPass / http://127.0.0.1:8000/
<Location "/server-status">
    SetHandler server-status
    Require local
    Require ip 10.1 192.168.0.0/255.255.0.0 2001:db8::/32
</Location>
<Location /metrics>
    SetHandler METRICS
    Require all granted
</Location>
"""


def error_of(load: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value


def test_handlers_and_their_access(load: Load) -> None:
    config = load(STATUS)
    status, metrics = sorted(config.main.handlers, key=lambda h: h.path)[::-1]
    assert (status.path, status.handler) == ("/server-status", "server-status")
    assert status.access is not None and status.access.local
    assert not status.access.all_granted
    assert status.access.networks == ("10.1.0.0/16", "192.168.0.0/16", "2001:db8::/32")
    assert (metrics.path, metrics.handler) == ("/metrics", "metrics")
    assert metrics.access is not None and metrics.access.all_granted
    assert not any("open to every client" in w for w in config.warnings)


def test_a_handler_wins_over_a_catch_all_proxypass(load: Load) -> None:
    config = load(STATUS)
    router = Router(config.main.routes, None, config.main.handlers)
    match = router.match(b"/server-status")
    assert match is not None and match[0].handler is not None
    assert match[0].target is None
    match = router.match(b"/server-statusx")  # whole segments only
    assert match is not None and match[0].target is not None


def test_vhost_sees_main_server_locations(load: Load) -> None:
    config = load(STATUS + "<VirtualHost *:80>\nServerName v\n</VirtualHost>\n")
    assert {h.path for h in config.vhosts[0].host.handlers} == {"/server-status", "/metrics"}


def test_open_status_location_is_warned(load: Load) -> None:
    config = load("Listen 80\n<Location /server-status>\nSetHandler server-status\n"
                  "</Location>\n")
    assert config.main.handlers[0].access is None
    assert any("has no Require" in w for w in config.warnings)


def test_require_on_a_proxypass_location(load: Load) -> None:
    config = load("Listen 80\n<Location /admin>\nProxyPass http://127.0.0.1:9/\n"
                  "Require ip 127.0.0.1\n</Location>\n")
    access = config.main.routes[0].access
    assert access == Access(networks=("127.0.0.1/32",), where=access.where)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("SetHandler server-status\n", 2, "not allowed here"),
        ("<Location /s>\nSetHandler cgi-script\n</Location>\n", 3, "only the handlers"),
        ("<Location /s>\nRequire ip 10.300\n</Location>\n", 3, "appears to be invalid"),
        ("<Location /s>\nRequire not ip 10.0.0.1\n</Location>\n", 3, "negative Require"),
        ("<Location /s>\nRequire user bob\n</Location>\n", 3, "not supported"),
        ("<Location /s>\nRequire all maybe\n</Location>\n", 3, "granted' or 'denied"),
        ("<Location /s>\nRequire ip 10.0.0.1\n</Location>\n", 3, "protects nothing"),
        ("<Location /s>\nProxyPass http://h/\nSetHandler metrics\n</Location>\n", 4,
         "choose one"),
    ],
)
def test_errors_name_file_and_line(load: Load, text: str, line: int, message: str) -> None:
    err = error_of(load, "Listen 80\n" + text)
    assert err.line == line, str(err)
    assert message in str(err)


@pytest.mark.parametrize(
    ("access", "peer", "local", "allowed"),
    [
        (Access(local=True), "127.0.0.1", "127.0.0.1", True),
        (Access(local=True), "127.5.6.7", "127.0.0.1", True),
        (Access(local=True), "::1", "::1", True),
        (Access(local=True), "192.0.2.7", "192.0.2.7", True),  # client on our own address
        (Access(local=True), "192.0.2.7", "192.0.2.8", False),
        (Access(networks=("10.1.0.0/16",)), "10.1.200.3", "10.0.0.1", True),
        (Access(networks=("10.1.0.0/16",)), "10.2.0.1", "10.0.0.1", False),
        (Access(networks=("10.1.0.0/16",)), "::ffff:10.1.0.9", "::1", True),
        (Access(networks=("2001:db8::/32",)), "2001:db8::5", "::1", True),
        (Access(networks=("2001:db8::/32",)), "10.1.0.1", "::1", False),
        (Access(all_granted=True), "203.0.113.1", "127.0.0.1", True),
        (Access(), "127.0.0.1", "127.0.0.1", False),  # Require all denied
    ],
)
def test_access_check(access: Access, peer: str, local: str, allowed: bool) -> None:
    assert AccessCheck(access).allows(peer, local) is allowed



def test_describe_shows_handlers_and_require(load: Load) -> None:
    from proxympm.config.describe import describe

    text = describe(load(STATUS + "<Location /adm>\nProxyPass http://127.0.0.1:9/\n"
                         "Require ip 127.0.0.1\n</Location>\n"))
    assert ("Handler: /server-status -> server-status, Require local | ip 10.1.0.0/16 "
            "192.168.0.0/16 2001:db8::/32") in text
    assert "Handler: /metrics -> metrics, Require all granted" in text
    assert "[Require ip 127.0.0.1/32]" in text
