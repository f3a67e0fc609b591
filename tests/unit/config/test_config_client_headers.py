"""Header/RequestHeader and mod_remoteip directives: checks, merge order, inheritance."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest

from proxympm.config import ConfigError, ServerConfig

Load = Callable[..., ServerConfig]


def test_rules_merge_main_then_vhost_then_locations(load: Load) -> None:
    config = load("""Listen 80
Header set X-A main
<Location /m>
Header set X-L main-loc
</Location>
<VirtualHost *:80>
ServerName v
RequestHeader unset X-Secret
<Location /v>
Header always add X-L v-loc
</Location>
</VirtualHost>
""")
    vhost = config.vhosts[0].host
    assert [(r.request, r.action, r.name) for r in vhost.header_rules] == [
        (False, "set", b"X-A"), (True, "unset", b"X-Secret")]
    assert [(p, [r.name for r in rules]) for p, rules in vhost.location_header_rules] == [
        (b"/m", [b"X-L"]), (b"/v", [b"X-L"])]
    assert vhost.location_header_rules[1][1][0].always
    assert [r.name for r in config.main.header_rules] == [b"X-A"]


@pytest.mark.parametrize(("line", "message"), [
    ("Header", "requires at least two arguments"),
    ("Header set", "requires at least two arguments"),
    ("Header set X-A", "requires a value"),
    ("Header edit X-A ^a", "requires a regular expression and a replacement"),
    ("Header note X-A n", "'note' is not supported"),
    ("Header always frob X-A 1", "first argument must be"),
    ("RequestHeader always set X-A 1", "first argument must be"),
    ("Header set X-A 1 env=", "env= needs a variable name"),
    ("Header set X-A 1 expr=true", "expr= conditions are not supported"),
    ("Header set X-A 1 sometimes", "unknown condition"),
    ("Header set X-A 100%", "a lone '%'"),
    ("Header set X-A %l", "'%l' is not supported"),
    ("Header set Transfer-Encoding chunked", "writes Transfer-Encoding itself"),
    ("RequestHeader unset Connection", "writes Connection itself"),
    ("Header set X:A 1", "not a valid header field name"),
    ("RemoteIPHeader X-Forwarded-For:", "not a valid header field name"),
    ("RemoteIPTrustedProxy 10.0.0.0/33", "not an IP address or network"),
    ("RemoteIPInternalProxyList missing.txt", "Could not open file"),
    ("ProxyPass / http://b/ proxyprotocol=v3", "proxyprotocol must be v1|v2|off"),
])
def test_mistakes_are_config_errors_at_their_line(load: Load, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(f"Listen 80\n{line}\n")
    assert caught.value.line == 2
    assert message in caught.value.message


def test_format_is_compiled_once(load: Load) -> None:
    rule = load("Listen 80\nHeader set X-T \"a %t b %D %{HTTPS}e %%\"\n").main.header_rules[0]
    assert rule.value == (b"a ", ("t",), b" b ", ("D",), b" ", ("e", "HTTPS"), b" %")


def test_remoteip_lists_add_up_and_vhosts_inherit(load: Load, tmp_path: Path) -> None:
    (tmp_path / "lbs.txt").write_text("# load balancers\n192.0.2.1 192.0.2.2  # two\n"
                                      "2001:db8::/32\n")
    config = load("""Listen 80
RemoteIPHeader X-Real-IP
RemoteIPTrustedProxy 10.0.0.0/8
RemoteIPTrustedProxyList lbs.txt
RemoteIPInternalProxy 127.0.0.1 ::1
<VirtualHost *:80>
ServerName inherits
</VirtualHost>
<VirtualHost *:80>
ServerName own
RemoteIPInternalProxy 172.16.0.0/12
</VirtualHost>
""")
    net = ipaddress.ip_network
    assert config.main.remote_ip_proxies == (
        (net("10.0.0.0/8"), False), (net("192.0.2.1/32"), False),
        (net("192.0.2.2/32"), False), (net("2001:db8::/32"), False),
        (net("127.0.0.1/32"), True), (net("::1/128"), True))
    inherits, own = (v.host for v in config.vhosts)
    assert inherits.remote_ip_proxies == config.main.remote_ip_proxies
    assert inherits.remote_ip_header == own.remote_ip_header == "X-Real-IP"
    assert own.remote_ip_proxies == ((net("172.16.0.0/12"), True),)


def test_proxy_protocol_marks_the_listens_its_hosts_answer_on(load: Load) -> None:
    config = load("""Listen 127.0.0.1:80
Listen 127.0.0.1:81
Listen 8443
<VirtualHost 127.0.0.1:81>
ServerName pp
RemoteIPProxyProtocol On
</VirtualHost>
<VirtualHost *:8443>
ServerName plain
</VirtualHost>
""")
    assert [(s.port, s.proxy_protocol) for s in config.listens] == [
        (80, False), (81, True), (8443, False)]
    everywhere = load("Listen 80\nListen 81\nRemoteIPProxyProtocol On\n")
    assert all(s.proxy_protocol for s in everywhere.listens)


def test_proxy_protocol_exceptions_go_with_the_listen(load: Load) -> None:
    config = load("Listen 80\nRemoteIPProxyProtocol On\n"
                  "RemoteIPProxyProtocolExceptions 127.0.0.1 192.0.2.0/24\n")
    assert config.listens[0].proxy_exceptions == (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("192.0.2.0/24"))
