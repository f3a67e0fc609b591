"""TLS to backends through a real proxy: verification on by default, SNI, pooled TLS
connections, client certificates, and plain-HTTP name-based virtual hosts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests
import trustme

from tests.support.backend import Backend
from tests.support.servers import Proxy
from tests.support.tlsserver import TLSServer

CONF = """
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4
SSLProxyEngine on
SSLProxyCACertificateFile {ca}
{extra}
ProxyPass "/" "https://localhost:{b}/"
"""


def test_verified_tls_backend_is_pooled_and_gets_sni(
        proxympm: Callable[..., Proxy], certs) -> None:
    with TLSServer(certs.cert_pem, certs.key_pem, mode="http") as tls:
        proxy = proxympm(CONF, b=tls.port, ca=certs.ca_pem, extra="")
        with requests.Session() as s:
            for _ in range(3):
                r = s.get(f"{proxy.url}/x", timeout=10)
                assert r.status_code == 200
                assert r.text == "tls backend, sni=localhost\n"
        assert tls.handshakes == 1, "pooled TLS connection not reused"


def test_wrong_ca_is_a_502_with_a_clear_log_line(
        proxympm: Callable[..., Proxy], certs, tmp_path: Path) -> None:
    other = trustme.CA()
    other_ca = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_ca))
    with TLSServer(certs.cert_pem, certs.key_pem, mode="http") as tls:
        proxy = proxympm(CONF, b=tls.port, ca=other_ca, extra="")
        r = requests.get(f"{proxy.url}/x", timeout=10)
        assert r.status_code == 502
        proxy.wait_for_log("error", r"AH01084: .*certificate verification failed")
        # A misconfigured certificate is not an outage: no retry window is opened.
        assert requests.get(f"{proxy.url}/y", timeout=10).status_code == 502


def test_client_certificate_to_a_backend_that_requires_one(
        proxympm: Callable[..., Proxy], certs, tmp_path: Path) -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert("proxympm-client")
    client_ca_pem = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_pem))
    machine = tmp_path / "machine.pem"
    with open(machine, "wb") as f:
        for blob in client.cert_chain_pems:
            f.write(blob.bytes())
        f.write(client.private_key_pem.bytes())
    with TLSServer(certs.cert_pem, certs.key_pem, mode="http", client_ca=client_ca_pem) as tls:
        without = proxympm(CONF, b=tls.port, ca=certs.ca_pem, extra="")
        assert requests.get(f"{without.url}/x", timeout=10).status_code == 502
        proxy = proxympm(CONF, b=tls.port, ca=certs.ca_pem,
                         extra=f"SSLProxyMachineCertificateFile {machine}")
        r = requests.get(f"{proxy.url}/x", timeout=10)
        assert r.status_code == 200
        assert any("proxympm-client" in s for s in tls.client_subjects), tls.client_subjects


VHOSTS = """
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4
ProxyPassInherit Off
<VirtualHost *:{port}>
    ServerName one.test
    ProxyPass "/" "http://127.0.0.1:{a}/"
</VirtualHost>
<VirtualHost *:{port}>
    ServerName two.test
    ServerAlias *.two.test
    ProxyPass "/" "http://127.0.0.1:{b}/"
</VirtualHost>
"""


def test_name_based_virtual_hosts_on_plain_http(
        proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend]) -> None:
    a = backend_factory(name="A")
    b = backend_factory(name="B")
    proxy = proxympm(VHOSTS, a=a.port, b=b.port)

    def served_by(host: str) -> str:
        r = requests.get(f"{proxy.url}/", headers={"Host": host}, timeout=10)
        assert r.status_code == 200
        return r.json()["backend"]

    assert served_by("one.test") == "A"
    assert served_by("two.test") == "B"
    assert served_by("www.two.test:8080") == "B"
    assert served_by("unknown.test") == "A"  # the first vhost for the address


def test_https_health_checks_trust_what_requests_trust(
        proxympm: Callable[..., Proxy], certs, tmp_path: Path) -> None:
    """A member whose certificate the proxy would refuse for requests fails its health
    checks and is taken out; a trusted one passes and serves."""
    other = trustme.CA().issue_cert("localhost", "127.0.0.1")
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(other_key))
    with open(other_cert, "wb") as f:
        for blob in other.cert_chain_pems:
            f.write(blob.bytes())
    with TLSServer(certs.cert_pem, certs.key_pem, mode="http") as good, \
            TLSServer(other_cert, other_key, mode="http") as bad:
        proxy = proxympm("""
SSLProxyEngine on
SSLProxyCACertificateFile {ca}
<Proxy "balancer://tls">
    BalancerMember "https://localhost:{good}" hcmethod=GET hcinterval=200ms hcfails=1
    BalancerMember "https://localhost:{bad}" hcmethod=GET hcinterval=200ms hcfails=1
</Proxy>
ProxyPass "/" "balancer://tls/"
""", good=good.port, bad=bad.port, ca=certs.ca_pem, wait_children=2)
        proxy.wait_for_log("error", rf"DISABLING https://localhost:{bad.port} after 1 "
                           r"failed checks \(last result -4\)")
        checked = good.handshakes
        for i in range(6):
            r = requests.get(f"{proxy.url}/x{i}", timeout=10)
            assert r.status_code == 200 and r.text == "tls backend, sni=localhost\n"
        deadline = time.monotonic() + 5
        while good.handshakes < checked + 3:  # a few more checks (and the requests)
            assert time.monotonic() < deadline, "the trusted member is not checked"
            time.sleep(0.05)
        assert bad.handshakes == 0, "a TLS session with the untrusted member"
        assert f"DISABLING https://localhost:{good.port}" not in proxy.error_log()
