"""ProxyDNSServers, ProxyDNSTTLFloor/Ceiling and the srv=on key: values and errors."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from proxympm.config import ConfigError, ServerConfig, describe
from proxympm.proxy.routing import parse_target

Load = Callable[..., ServerConfig]


def error_of(load: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load("Listen 80\n" + text + "\n")
    return caught.value


def test_defaults(load: Load) -> None:
    config = load("Listen 80\n")
    assert config.dns_servers == ()
    assert (config.dns_ttl_floor, config.dns_ttl_ceiling) == (1.0, 60.0)
    assert "Upstream DNS: servers from /etc/resolv.conf, TTL floor 1s, ceiling 60s" in (
        describe(config))


def test_servers_with_ports_and_ttl_units(load: Load) -> None:
    config = load("Listen 80\nProxyDNSServers 127.0.0.1:5353 [::1]:53 ::1 10.0.0.2\n"
                  "ProxyDNSTTLFloor 2s\nProxyDNSTTLCeiling 2mi\n")
    assert config.dns_servers == ("127.0.0.1:5353", "[::1]:53", "[::1]:53", "10.0.0.2:53")
    assert (config.dns_ttl_floor, config.dns_ttl_ceiling) == (2.0, 120.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ProxyDNSServers dns.example", "ProxyDNSServers: 'dns.example' is not an IP address"),
        ("ProxyDNSServers 127.0.0.1:0", "ProxyDNSServers: '127.0.0.1:0' has an invalid port"),
        ("ProxyDNSServers 127.0.0.1:99999", "has an invalid port"),
        ("ProxyDNSServers [::1", "is not an IP address"),
        ("ProxyDNSServers", "ProxyDNSServers requires at least one argument"),
        ("ProxyDNSTTLFloor 0", "ProxyDNSTTLFloor must be at least one second"),
        ("ProxyDNSTTLFloor 500ms", "ProxyDNSTTLFloor must be at least one second"),
        ("ProxyDNSTTLCeiling soon", "ProxyDNSTTLCeiling has wrong format: 'soon'"),
        ("ProxyDNSTTLCeiling 1.5", "ProxyDNSTTLCeiling has wrong format"),
        ("ProxyDNSTTLFloor 90", "ProxyDNSTTLFloor (90s) must not exceed ProxyDNSTTLCeiling (60s)"),
        ("ProxyDNSTTLCeiling 10\nProxyDNSTTLFloor 20", "ProxyDNSTTLFloor 20: ProxyDNSTTLFloor "
         "(20s) must not exceed ProxyDNSTTLCeiling (10s)"),
        ("<VirtualHost *:80>\nProxyDNSTTLFloor 5\n</VirtualHost>",
         "ProxyDNSTTLFloor cannot occur within <VirtualHost> section"),
        ('BalancerMember balancer://a "http://_http._tcp.app.test"',
         "URL host '_http._tcp.app.test' is an SRV name: add srv=on"),
        ('BalancerMember balancer://a "http://app.test" srv=on',
         "srv=on needs a URL host of the form _service._proto.name"),
        ('BalancerMember balancer://a "http://_http._tcp.app.test:8080" srv=on',
         "srv=on: the URL must not give a port"),
        ('BalancerMember balancer://a "http://_http._tcp.app.test" srv=yes',
         "BalancerMember srv must be On|Off"),
        ('ProxyPass / "http://_http._tcp.app.test/"', "is an SRV name: add srv=on"),
        ('ProxyPass / "balancer://a/" srv=on', "ProxyPass unknown Balancer parameter 'srv'"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, load: Load, text: str, message: str) -> None:
    err = error_of(load, text)
    assert message in err.message
    assert err.file == f"{tmp_path}/httpd.conf"
    lines = text.split("\n")
    offending = 2 if "VirtualHost" in text else len(lines)  # after the "Listen 80" line
    assert err.line == 1 + offending


def test_srv_member_and_proxypass(load: Load) -> None:
    config = load("Listen 80\n<Proxy balancer://k8s>\n"
                  "  BalancerMember http://_http._tcp.app.default.svc.cluster.local srv=on\n"
                  "</Proxy>\nProxyPass /k balancer://k8s/\n"
                  "ProxyPass /d https://_https._tcp.db.test/x SRV=On retry=5\n"
                  "SSLProxyEngine on\n")
    member = config.balancers[0].members[0]
    target = parse_target(member.url)
    assert (target.srv, target.host, target.port) == (
        True, "_http._tcp.app.default.svc.cluster.local", 0)
    assert target.host_header == b"app.default.svc.cluster.local"
    assert target.origin_host == "app.default.svc.cluster.local"
    route = config.main.routes[1]
    assert route.params.retry == 5.0
    direct = parse_target(route.url or "")
    assert (direct.srv, direct.origin_host, direct.base_path) == (True, "db.test", b"/x")


def test_config_test_reports_file_and_line(
    tmp_path: Path, proxympm_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("Listen 127.0.0.1:8080\nProxyDNSServers 127.0.0.1:5353 ns1.example\n")
    r = proxympm_cli("-t", "-f", str(conf))
    assert r.returncode != 0
    assert f"{conf}:2" in r.stderr or f"line 2 of {conf}" in r.stderr, r.stderr
    assert "ns1.example" in r.stderr
