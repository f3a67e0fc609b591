"""ProxyPass and ProxyPassReverse: forms, worker parameters, match order, inheritance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from proxympm.config import ConfigError, ProxyRoute, ReverseRule, ServerConfig, WorkerParams

Load = Callable[..., ServerConfig]


def routes(config: ServerConfig, host: int | None = None) -> list[tuple[str, str | None]]:
    chosen = config.main if host is None else config.vhosts[host].host
    return [(r.path, r.url) for r in chosen.routes]


def error_of(load: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load("Listen 80\n" + text + "\n")
    return caught.value


def test_route_exclusion_and_position(tmp_path: Path, load: Load) -> None:
    config = load("Listen 80\nProxyPass /static !\nProxyPass / http://127.0.0.1:8000/\n")
    assert config.main.routes == (
        ProxyRoute("/static", None, WorkerParams(), f"{tmp_path}/httpd.conf:2"),
        ProxyRoute("/", "http://127.0.0.1:8000/", WorkerParams(), f"{tmp_path}/httpd.conf:3"),
    )


def test_worker_params_convert_with_case_insensitive_keys(load: Load) -> None:
    config = load(
        "Listen 80\nSSLProxyEngine on\n"
        "ProxyPass /a https://b.example:8443/a TIMEOUT=5 ConnectionTimeout=250ms "
        "ttl=30 max=10 retry=0 keepalive=On disablereuse=off\n"
    )
    assert config.main.routes[0].params == WorkerParams(
        timeout=5.0,
        connectiontimeout=0.25,
        ttl=30.0,
        max=10,
        retry=0.0,
        keepalive=True,
        disablereuse=False,
    )


@pytest.mark.parametrize(
    ("words", "params"),
    [
        ("connectiontimeout=3", WorkerParams(connectiontimeout=3.0)),
        ("enablereuse=off", WorkerParams(disablereuse=True)),
        ("disablereuse=On enablereuse=On", WorkerParams(disablereuse=False)),
        ("max=0", WorkerParams(max=None)),
        ("retry=5", WorkerParams(retry=5.0)),
        ("upgrade=WebSocket", WorkerParams(upgrade="websocket")),
        ("upgrade=ANY", WorkerParams(upgrade="*")),
        ("upgrade=websocket,h2c", WorkerParams(upgrade="websocket,h2c")),
        ("flushpackets=on", WorkerParams(response_buffering=False)),
    ],
)
def test_worker_param_values(load: Load, words: str, params: WorkerParams) -> None:
    assert load(f"Listen 80\nProxyPass / http://b/ {words}\n").main.routes[0].params == params


def test_location_exclusion_and_uppercase_scheme(load: Load) -> None:
    config = load("Listen 80\n<Location /private>\nProxyPass !\n</Location>\n"
                  "ProxyPass / HTTP://Backend:8080/\n")  # fmt: skip
    assert routes(config) == [("/private", None), ("/", "HTTP://Backend:8080/")]


def test_balancer_url_is_accepted_syntactically(load: Load) -> None:
    config = load("Listen 80\nProxyPass /app balancer://cluster/app\n")
    assert routes(config) == [("/app", "balancer://cluster/app")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ProxyPass / http://b/ bogus=1", "ProxyPass unknown Worker parameter 'bogus'"),
        ("ProxyPass / http://b/ ping=1", "ProxyPass Worker parameter 'ping' is not supported by "
         "proxympm"),
        ("ProxyPass / http://b/ timeout=5ms", "ProxyPass Timeout must be at least one second "
         "(integer seconds)"),
        ("ProxyPass / http://b/ timeout=0", "ProxyPass Timeout must be at least one second "
         "(integer seconds)"),
        ("ProxyPass / http://b/ connectiontimeout=0", "ProxyPass Connectiontimeout must be at "
         "least one millisecond."),
        ("ProxyPass / http://b/ connectiontimeout=fast", "ProxyPass Connectiontimeout has wrong "
         "format"),
        ("ProxyPass / http://b/ retry=-1", "ProxyPass Retry must be a positive value"),
        ("ProxyPass / http://b/ max=-1", "ProxyPass Max must be a positive number"),
        ("ProxyPass / http://b/ ttl=0", "ProxyPass TTL must be at least one second (integer "
         "seconds)"),
        ("ProxyPass / http://b/ keepalive=yes", "ProxyPass KeepAlive must be On|Off"),
        ("ProxyPass / ws://b/ upgrade=NONE", "ProxyPass upgrade=NONE (mod_proxy_wstunnel's "
         "forced upgrade) is not supported by proxympm: name the protocol, or ANY"),
        ("ProxyPass / http://b/ upgrade=web/socket", "ProxyPass upgrade 'web/socket' must be a "
         "protocol name (e.g. websocket), a comma-separated list of them, or ANY"),
        ("ProxyPass / http://b/ enablereuse=1", "ProxyPass EnableReuse must be On|Off"),
        ("ProxyPass / http://b/ extra", "Invalid ProxyPass|ProxyPassMatch parameter. Parameter "
         "must be in the form 'key=value'."),
        ("ProxyPass / http://b/ nocanon", "ProxyPass flag 'nocanon' is not supported by proxympm"),
        ("ProxyPass /", "ProxyPass|ProxyPassMatch needs a path when not defined in a location"),
        ("ProxyPass", "ProxyPass|ProxyPassMatch needs a path when not defined in a location"),
        ("ProxyPass ~ ^/x http://b/", "ProxyPass ~ (regular expressions) is not supported"),
        ("ProxyPass app http://b/", "ProxyPass path 'app' must start with '/'"),
        ("ProxyPass / http://b/?x=1", "ProxyPass URL 'http://b/?x=1' must not contain a query "
         "string"),
        ("ProxyPass / ftp://b/", "ProxyPass URL 'ftp://b/' is not supported: proxympm proxies "
         "to http://, https://, ws://, wss:// and balancer:// URLs"),
        ("ProxyPass / 127.0.0.1:8000", "ProxyPass URL '127.0.0.1:8000' is not supported: "
         "proxympm proxies to http://, https://, ws://, wss:// and balancer:// URLs"),
        ("ProxyPass / http:///x", "ProxyPass URL 'http:///x' is not supported: proxympm "
         "proxies to http://, https://, ws://, wss:// and balancer:// URLs"),
        ("ProxyPass / http://b:99999/", "ProxyPass URL 'http://b:99999/' has an invalid port"),
    ],
)  # fmt: skip
def test_proxypass_errors(load: Load, text: str, message: str) -> None:
    error = error_of(load, text)
    assert (error.line, error.message) == (2, message)


def test_location_form_takes_its_path_from_the_location(tmp_path: Path, load: Load) -> None:
    config = load(
        "Listen 80\n<Location /app>\n  ProxyPass http://b/app retry=1\n"
        "  ProxyPassReverse http://b/app\n</Location>\n"
    )
    assert config.main.routes == (
        ProxyRoute("/app", "http://b/app", WorkerParams(retry=1.0), f"{tmp_path}/httpd.conf:3"),
    )
    assert config.main.reverse_rules == (
        ReverseRule("/app", "http://b/app", f"{tmp_path}/httpd.conf:4"),
    )


@pytest.mark.parametrize(
    ("inside", "message"),
    [
        ("ProxyPass /app http://b/", "ProxyPass|ProxyPassMatch can not have a path when "
         "defined in a location."),
        ("ProxyPassReverse /app http://b/", "ProxyPassReverse can not have a path when defined "
         "in a location"),
    ],
)  # fmt: skip
def test_location_form_refuses_a_path(load: Load, inside: str, message: str) -> None:
    error = error_of(load, f"<Location /app>\n{inside}\n</Location>")
    assert (error.line, error.message) == (3, message)


def test_wildcard_and_regex_locations_are_refused(load: Load) -> None:
    error = error_of(load, "<Location /a*>\nProxyPass http://b/\n</Location>")
    assert error.message == "ProxyPass inside a wildcard <Location> is not supported"
    error = error_of(load, "<Location ~ ^/a>\n</Location>")
    assert error.message == "<Location ~> (regular expressions) is not supported by proxympm"


def test_location_routes_come_first_and_the_last_location_wins(load: Load) -> None:
    config = load(
        "Listen 80\n"
        "ProxyPass /static !\n"
        "ProxyPass / http://server-level/\n"
        "<Location />\n  ProxyPass http://root-location/\n</Location>\n"
        "<Location /api>\n  ProxyPass http://api-location/\n</Location>\n"
    )
    assert routes(config) == [
        ("/api", "http://api-location/"),
        ("/", "http://root-location/"),
        ("/static", None),
        ("/", "http://server-level/"),
    ]


def test_second_proxypass_in_one_location_replaces_the_first(load: Load) -> None:
    config = load("Listen 80\n<Location /a>\nProxyPass http://one/\nProxyPass http://two/\n"
                  "</Location>\n")  # fmt: skip
    assert routes(config) == [("/a", "http://two/")]
    assert "a <Location> holds one ProxyPass" in config.warnings[0]


def test_vhost_routes_after_inherited_main_routes_as_httpd(load: Load) -> None:
    config = load(
        "Listen 80\n"
        "ProxyPass /health http://main-health/\n"
        "<Location /main-loc>\n  ProxyPass http://main-loc/\n</Location>\n"
        "<VirtualHost *:80>\n"
        "  ServerName a.example\n"
        "  ProxyPass / http://a/\n"
        "  <Location /vloc>\n    ProxyPass http://vloc/\n  </Location>\n"
        "</VirtualHost>\n"
        "<VirtualHost *:80>\n"
        "  ServerName b.example\n"
        "  ProxyPassInherit Off\n"
        "  ProxyPass / http://b/\n"
        "</VirtualHost>\n"
    )
    assert routes(config) == [("/main-loc", "http://main-loc/"), ("/health", "http://main-health/")]
    assert routes(config, 0) == [
        ("/vloc", "http://vloc/"),
        ("/main-loc", "http://main-loc/"),
        ("/health", "http://main-health/"),
        ("/", "http://a/"),
    ]
    assert routes(config, 1) == [("/main-loc", "http://main-loc/"), ("/", "http://b/")]


def test_proxypassinherit_off_in_main_server_applies_to_vhosts(load: Load) -> None:
    config = load("Listen 80\nProxyPassInherit Off\nProxyPass /x http://main/\n"
                  "<VirtualHost *:80>\nProxyPass / http://v/\n</VirtualHost>\n")  # fmt: skip
    assert routes(config, 0) == [("/", "http://v/")]


def test_reverse_rules_server_and_vhost(load: Load) -> None:
    config = load(
        "Listen 80\nProxyPassReverse / http://main/\n"
        "<VirtualHost *:80>\nProxyPassReverse /v http://v/\n</VirtualHost>\n"
    )
    assert [(r.path, r.url) for r in config.main.reverse_rules] == [("/", "http://main/")]
    assert [(r.path, r.url) for r in config.vhosts[0].host.reverse_rules] == [
        ("/", "http://main/"),
        ("/v", "http://v/"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ProxyPassReverse /", "ProxyPassReverse needs a path when not defined in a location"),
        ("ProxyPassReverse", "ProxyPassReverse takes 1-2 arguments, a virtual path and a URL"),
        ("ProxyPassReverse / http://b/ interpolate", "ProxyPassReverse interpolate is not "
         "supported by proxympm"),
        ("ProxyPassReverse / b.example", "ProxyPassReverse URL 'b.example' is not supported: "
         "proxympm proxies to http://, https://, ws://, wss:// and balancer:// URLs"),
    ],
)  # fmt: skip
def test_proxypassreverse_errors(load: Load, text: str, message: str) -> None:
    assert error_of(load, text).message == message


def test_ws_urls_and_websocket_idle_timeout(load: Load) -> None:
    from proxympm.proxy.routing import parse_target

    config = load("Listen 80\nSSLProxyEngine on\nProxyWebsocketIdleTimeout 1500ms\n"
                  "ProxyPass /ws ws://b/ws\nProxyPass /wss wss://b:8443/\n")
    assert routes(config) == [("/ws", "ws://b/ws"), ("/wss", "wss://b:8443/")]
    assert config.main.websocket_idle_timeout == 1.5
    plain, tls = parse_target("ws://b/ws"), parse_target("wss://b:8443/")
    assert (plain.scheme, plain.port, plain.websocket) == ("http", 80, True)
    assert (tls.scheme, tls.port, tls.websocket, tls.host_header) == ("https", 8443, True,
                                                                      b"b:8443")
    assert error_of(load, "ProxyWebsocketIdleTimeout soon").message == (
        "ProxyWebsocketIdleTimeout timeout has wrong format")
