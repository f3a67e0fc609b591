"""TLS to backends: the SSLProxy* directives, client contexts, validate_tls, and the
non-blocking handshake/recv/send against a real local TLS server (trustme certs)."""

from __future__ import annotations

import dataclasses
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from proxympm.config import ConfigError, ServerConfig, load_config
from proxympm.config.model import HostConfig, ProxyTLSSettings
from proxympm.config.reference import render
from proxympm.proxy import upstream
from proxympm.tls import (
    ClientContexts,
    EncryptedKeyError,
    build_client_context,
    validate_tls,
)
from tests.support.tlsserver import TLSServer

Load = Callable[..., ServerConfig]


# -- certificates ---------------------------------------------------------------------


@dataclasses.dataclass
class Material:
    dir: Path
    ca: Path  # the CA that signed everything below
    other_ca: Path  # a CA that signed nothing here
    server: Path  # cert chain for localhost / 127.0.0.1
    server_key: Path
    client: Path  # client cert + key in one PEM (SSLProxyMachineCertificateFile)
    client_cert_only: Path
    client_encrypted: Path  # cert + encrypted key
    other_key: Path  # a key that matches none of the certificates
    garbage: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Material:
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("proxympm-client.example", common_name="proxympm-client")
    stray = ca.issue_cert("stray.example")
    m = Material(d, d / "ca.pem", d / "other-ca.pem", d / "server.pem", d / "server.key",
                 d / "client.pem", d / "client-cert.pem", d / "client-enc.pem",
                 d / "other.key", d / "garbage.pem")
    ca.cert_pem.write_to_path(str(m.ca))
    other.cert_pem.write_to_path(str(m.other_ca))
    server.private_key_pem.write_to_path(str(m.server_key))
    m.server.write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    client.private_key_and_cert_chain_pem.write_to_path(str(m.client))
    m.client_cert_only.write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    stray.private_key_pem.write_to_path(str(m.other_key))
    m.garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                         "-----END CERTIFICATE-----\n")
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret"))
    m.client_encrypted.write_bytes(m.client_cert_only.read_bytes() + encrypted)
    return m


@pytest.fixture
def load(tmp_path: Path) -> Load:
    """load(text) -> ServerConfig from tmp_path/httpd.conf, tmp_path as ServerRoot."""

    def _load(text: str) -> ServerConfig:
        (tmp_path / "httpd.conf").write_text(text)
        return load_config("httpd.conf", server_root=str(tmp_path))

    return _load


def _error(load: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value


# -- directives: defaults, values, inheritance -----------------------------------------


def test_defaults_verify_require_and_check_peer_name(load: Load) -> None:
    config = load("Listen 80\n")
    assert config.main.proxy_tls == ProxyTLSSettings()
    assert HostConfig().proxy_tls == ProxyTLSSettings(
        engine=False, verify="require", ca_certificate_file=None, check_peer_name=True,
        machine_certificate_file=None, protocols=("TLSv1.2", "TLSv1.3"), cipher_suite=None)


def test_every_directive_stored(load: Load, pki: Material, tmp_path: Path) -> None:
    config = load(
        "Listen 80\n"
        "SSLProxyEngine on\n"
        "SSLProxyVerify None\n"
        f"SSLProxyCACertificateFile {pki.ca}\n"
        "SSLProxyCheckPeerName off\n"
        f"SSLProxyMachineCertificateFile {os.path.relpath(pki.client, tmp_path)}\n"
        "SSLProxyProtocol -all +TLSv1.3\n"
        "SSLProxyCipherSuite HIGH:!aNULL\n"
    )
    assert config.main.proxy_tls == ProxyTLSSettings(
        engine=True, verify="none", ca_certificate_file=str(pki.ca), check_peer_name=False,
        machine_certificate_file=str(pki.client), protocols=("TLSv1.3",),
        cipher_suite="HIGH:!aNULL")
    assert config.main.proxy_tls.where == f"{tmp_path}/httpd.conf:2"


def test_vhost_inherits_main_settings_and_overrides_one(load: Load, pki: Material) -> None:
    config = load(
        "Listen 80\nSSLProxyEngine on\n"
        f"SSLProxyCACertificateFile {pki.ca}\n"
        "<VirtualHost *:80>\n  ServerName a\n</VirtualHost>\n"
        "<VirtualHost *:80>\n  ServerName b\n  SSLProxyCheckPeerName off\n</VirtualHost>\n"
        "<VirtualHost *:80>\n  ServerName c\n  SSLProxyEngine off\n</VirtualHost>\n"
    )
    a, b, c = (v.host.proxy_tls for v in config.vhosts)
    assert a == config.main.proxy_tls and a.engine and a.ca_certificate_file == str(pki.ca)
    assert b == dataclasses.replace(a, check_peer_name=False)
    assert not c.engine and c.ca_certificate_file == str(pki.ca)
    # Equal settings share one context, whatever line they came from.
    contexts = ClientContexts(config.all_hosts())
    assert len(contexts) == 2
    assert contexts.for_host(config.main) is contexts.for_host(config.vhosts[0].host)
    assert contexts.for_host(config.vhosts[1].host) is not contexts.for_host(config.main)
    with pytest.raises(KeyError):
        contexts.for_host(config.vhosts[2].host)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("SSLProxyEngine maybe", "SSLProxyEngine must be On or Off"),
        ("SSLProxyVerify optional",
         "SSLProxyVerify optional is not supported by proxympm: use require (verify the "
         "backend) or none"),
        ("SSLProxyVerify optional_no_ca", "SSLProxyVerify optional_no_ca is not supported"),
        ("SSLProxyVerify sometimes", "SSLProxyVerify: Invalid argument 'sometimes'"),
        ("SSLProxyVerify", "SSLProxyVerify takes one argument"),
        ("SSLProxyCheckPeerName yes", "SSLProxyCheckPeerName must be On or Off"),
        ("SSLProxyProtocol +TLSv1.1",
         "SSLProxyProtocol: TLSv1.1 is not supported: proxympm requires TLSv1.2 or later"),
        ("SSLProxyProtocol TLSv2", "SSLProxyProtocol: Illegal protocol 'TLSv2'"),
        ("SSLProxyProtocol -all", "SSLProxyProtocol: no protocol left enabled"),
        ("SSLProxyCipherSuite TLSv1.3 TLS_AES_128_GCM_SHA256",
         "SSLProxyCipherSuite TLSv1.3 is not supported"),
        ("SSLProxyCACertificateFile nowhere.pem", "SSLProxyCACertificateFile: file '"),
        ("SSLProxyMachineCertificateFile nowhere.pem",
         "SSLProxyMachineCertificateFile: file '"),
    ],
)
def test_directive_errors_name_file_and_line(load: Load, tmp_path: Path, line: str,
                                             message: str) -> None:
    err = _error(load, f"Listen 80\n# comment\n{line}\n")
    assert message in err.message
    assert (err.file, err.line) == (f"{tmp_path}/httpd.conf", 3)


def test_ssl_proxy_directives_not_allowed_in_location(load: Load, tmp_path: Path) -> None:
    err = _error(load, "Listen 80\n<Location /a>\nSSLProxyEngine on\n</Location>\n")
    assert err.line == 3 and "SSLProxyEngine not allowed here" in err.message


def test_reference_documents_the_require_default() -> None:
    text = render()
    section = text[text.index("### SSLProxyVerify"):]
    assert "require" in section.split("\n\n")[0] or "`require`" in section[:2000]
    assert "httpd's is `none`" in section[:3000]


# -- https:// ProxyPass needs SSLProxyEngine on ------------------------------------------


def test_https_proxypass_without_engine_fails_at_its_line(load: Load, tmp_path: Path) -> None:
    err = _error(load, "Listen 80\nProxyPass /a http://h/\nProxyPass /b https://h:8443/\n")
    assert (err.file, err.line) == (f"{tmp_path}/httpd.conf", 3)
    assert "ProxyPass to https://h:8443/ needs SSLProxyEngine on in the main server" in err.message
    assert str(err).startswith(f"AH00526: Syntax error on line 3 of {tmp_path}/httpd.conf:")


def test_https_proxypass_in_location_and_vhost(load: Load, tmp_path: Path) -> None:
    err = _error(load, "Listen 80\n<VirtualHost *:80>\n<Location /x>\n"
                       "ProxyPass HTTPS://h/\n</Location>\n</VirtualHost>\n")
    assert err.line == 4
    assert f"<VirtualHost *:80> at {tmp_path}/httpd.conf:2" in err.message


def test_inherited_https_route_checked_against_the_vhost(load: Load, tmp_path: Path) -> None:
    base = "Listen 80\nSSLProxyEngine on\nProxyPass /b https://h/\n"
    config = load(base + "<VirtualHost *:80>\nServerName v\n</VirtualHost>\n")
    assert config.vhosts[0].host.proxy_tls.engine  # inherited, so the route is fine
    err = _error(load, base + "<VirtualHost *:80>\nSSLProxyEngine off\n</VirtualHost>\n")
    assert err.line == 3 and "<VirtualHost *:80>" in err.message
    # Not inherited: nothing to check.
    load(base + "<VirtualHost *:80>\nSSLProxyEngine off\nProxyPassInherit off\n"
                "</VirtualHost>\n")


def test_https_proxypassreverse_needs_no_engine(load: Load) -> None:
    # It only rewrites headers, never connects (httpd does not require it either).
    config = load("Listen 80\nProxyPass / http://h/\nProxyPassReverse / https://h/\n")
    assert config.main.reverse_rules[0].url == "https://h/"


# -- build_client_context ----------------------------------------------------------------


def test_client_context_require_with_ca_file(pki: Material) -> None:
    ctx = build_client_context(ProxyTLSSettings(engine=True, ca_certificate_file=str(pki.ca)))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert ctx.options & ssl.OP_NO_COMPRESSION


def test_client_context_system_store_and_options(pki: Material) -> None:
    ctx = build_client_context(ProxyTLSSettings(engine=True))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    ctx = build_client_context(ProxyTLSSettings(engine=True, check_peer_name=False,
                                                protocols=("TLSv1.3",)))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    ctx = build_client_context(ProxyTLSSettings(engine=True, verify="none"))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    ctx = build_client_context(ProxyTLSSettings(engine=True, cipher_suite="ECDHE+AESGCM"))
    assert all("GCM" in c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2")


def test_client_context_encrypted_key_refused_not_prompted(pki: Material) -> None:
    settings = ProxyTLSSettings(engine=True, machine_certificate_file=str(pki.client_encrypted))
    with pytest.raises(EncryptedKeyError):
        build_client_context(settings)


# -- validate_tls --------------------------------------------------------------------------


def _front(load: Load, cert: Path, key: Path, extra: str = "") -> ServerConfig:
    return load(
        "Listen 127.0.0.1:8443 https\n"
        "<VirtualHost *:8443>\n"
        "  ServerName www.example\n"
        "  SSLEngine on\n"
        f"  SSLCertificateFile {cert}\n"
        f"  SSLCertificateKeyFile {key}\n"
        f"{extra}"
        "</VirtualHost>\n"
    )


def test_validate_tls_good_config(load: Load, pki: Material) -> None:
    config = _front(load, pki.server, pki.server_key,
                    f"  SSLProxyEngine on\n  SSLProxyMachineCertificateFile {pki.client}\n")
    assert validate_tls(config) == []


def test_validate_tls_key_mismatch(load: Load, pki: Material, tmp_path: Path) -> None:
    errors = validate_tls(_front(load, pki.server, pki.other_key))
    assert errors == [
        f"AH02565: Certificate and private key of virtual host www.example at "
        f"{tmp_path}/httpd.conf:2 from {pki.server} and {pki.other_key} do not match"
    ]


def test_validate_tls_bad_certificate(load: Load, pki: Material, tmp_path: Path) -> None:
    [error] = validate_tls(_front(load, pki.garbage, pki.server_key))
    assert error.startswith(
        f"AH02562: Failed to configure certificate of virtual host www.example at "
        f"{tmp_path}/httpd.conf:2, check {pki.garbage}: no PEM certificate could be read")


def test_validate_tls_bad_key_names_the_key(load: Load, pki: Material) -> None:
    [error] = validate_tls(_front(load, pki.server, pki.garbage))
    assert error.startswith("AH02564: ") and f"check {pki.garbage}" in error


def test_validate_tls_main_server_named_by_its_sslengine_line(
        load: Load, pki: Material, tmp_path: Path) -> None:
    config = load(f"Listen 127.0.0.1:8443 https\n\nSSLEngine on\n"
                  f"SSLCertificateFile {pki.server}\nSSLCertificateKeyFile {pki.other_key}\n")
    [error] = validate_tls(config)
    assert f"the main server ({tmp_path}/httpd.conf:3)" in error


@pytest.mark.parametrize(
    ("directive", "attr", "expected"),
    [
        ("SSLProxyCACertificateFile", "garbage",
         "AH01896: Unable to configure verify locations for client authentication of the "
         "main server ({conf}:2): SSLProxyCACertificateFile {path} holds no PEM certificate"),
        ("SSLProxyMachineCertificateFile", "client_cert_only",
         "AH02252: incomplete client cert configured for SSL proxy of the main server "
         "({conf}:2): SSLProxyMachineCertificateFile {path}: missing or unreadable private key"),
        ("SSLProxyMachineCertificateFile", "client_encrypted",
         "AH02252: incomplete client cert configured for SSL proxy of the main server "
         "({conf}:2): SSLProxyMachineCertificateFile {path}: the private key is encrypted"),
        ("SSLProxyMachineCertificateFile", "garbage",
         "AH02252: incomplete client cert configured for SSL proxy of the main server "
         "({conf}:2): SSLProxyMachineCertificateFile {path}: no PEM certificate could be read"),
    ],
)
def test_validate_tls_client_side(load: Load, pki: Material, tmp_path: Path, directive: str,
                                  attr: str, expected: str) -> None:
    path = getattr(pki, attr)
    [error] = validate_tls(load(f"Listen 80\nSSLProxyEngine on\n{directive} {path}\n"))
    assert error.startswith(expected.format(conf=f"{tmp_path}/httpd.conf", path=path)), error


def test_validate_tls_bad_cipher_suite(load: Load, pki: Material) -> None:
    [error] = validate_tls(load("Listen 80\nSSLProxyEngine on\nSSLProxyCipherSuite NOPE\n"))
    assert error.startswith("AH01898: Unable to configure permitted SSL ciphers")
    assert "'NOPE'" in error


def test_validate_tls_https_listen_without_tls_host(load: Load, tmp_path: Path) -> None:
    [error] = validate_tls(load("Listen 80\nListen 127.0.0.1:8443 https\n"))
    assert f"Listen 127.0.0.1:8443 https ({tmp_path}/httpd.conf:2)" in error


def test_validate_tls_reports_shared_settings_once(load: Load, pki: Material) -> None:
    config = load(f"Listen 80\nSSLProxyEngine on\nSSLProxyCACertificateFile {pki.garbage}\n"
                  "<VirtualHost *:80>\n</VirtualHost>\n")
    assert len(validate_tls(config)) == 1


# -- handshake() and friends against a real TLS server --------------------------------------


def _connect(port: int) -> socket.socket:
    return upstream.connect(socket.AF_INET, ("127.0.0.1", port), 5.0)


def _ctx(pki: Material, **kw: object) -> ssl.SSLContext:
    settings = ProxyTLSSettings(engine=True, ca_certificate_file=str(pki.ca))
    return build_client_context(dataclasses.replace(settings, **kw))  # type: ignore[arg-type]


def test_handshake_good_ca(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key) as server:
        tls = upstream.handshake(_connect(server.port), _ctx(pki), "localhost", 5.0)
        try:
            assert isinstance(tls, ssl.SSLSocket)
            assert tls.gettimeout() == 0.0  # still non-blocking
            assert tls.selected_alpn_protocol() == "http/1.1"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert upstream.recv_tls(tls, 5.0) == b"hello"
        finally:
            tls.close()
        assert server.sni_names == ["localhost"]


def test_handshake_ip_address_sends_no_sni_and_matches_ip_san(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key) as server:
        upstream.handshake(_connect(server.port), _ctx(pki), "127.0.0.1", 5.0).close()
        assert server.sni_names == [None]


def test_handshake_wrong_ca(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key) as server:
        sock = _connect(server.port)
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            upstream.handshake(sock, _ctx(pki, ca_certificate_file=str(pki.other_ca)),
                               "localhost", 5.0)
        assert "unable to get local issuer certificate" in str(info.value)
        assert sock.fileno() == -1  # closed (detached into the failed SSLSocket)


def test_handshake_wrong_hostname(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            upstream.handshake(_connect(server.port), _ctx(pki), "backend.example", 5.0)
        assert "Hostname mismatch" in str(info.value)
        tls = upstream.handshake(_connect(server.port), _ctx(pki, check_peer_name=False),
                                 "backend.example", 5.0)
        tls.close()
        assert server.sni_names[-1] == "backend.example"


def test_handshake_verify_none_accepts_unknown_ca(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key) as server:
        ctx = _ctx(pki, verify="none", ca_certificate_file=str(pki.other_ca))
        upstream.handshake(_connect(server.port), ctx, "wrong.example", 5.0).close()


def test_handshake_presents_client_certificate(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key, client_ca=pki.ca) as server:
        ctx = _ctx(pki, machine_certificate_file=str(pki.client))
        tls = upstream.handshake(_connect(server.port), ctx, "localhost", 5.0)
        assert upstream.recv_tls(tls, 5.0) == b"hello"
        tls.close()
        assert server.client_subjects == ["proxympm-client"]


def test_server_requiring_client_cert_refuses_without_one(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key, client_ca=pki.ca) as server:
        with pytest.raises(ssl.SSLError):
            # TLS 1.3: the client's handshake ends before the server has checked it,
            # so the alert may arrive with the first read instead.
            tls = upstream.handshake(_connect(server.port), _ctx(pki), "localhost", 5.0)
            try:
                upstream.recv_tls(tls, 5.0)
            finally:
                tls.close()
        assert server.client_subjects == []


def test_handshake_timeout_against_silent_server(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key, mode="silent") as server:
        sock = _connect(server.port)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="TLS handshake"):
            upstream.handshake(sock, _ctx(pki), "localhost", 0.3)
        assert 0.25 < time.monotonic() - start < 2.0
        assert sock.fileno() == -1


def test_handshake_tls12_server(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key, maximum_version=ssl.TLSVersion.TLSv1_2) as s:
        tls = upstream.handshake(_connect(s.port), _ctx(pki), "localhost", 5.0)
        assert tls.version() == "TLSv1.2"
        tls.close()
        with pytest.raises(ssl.SSLError):
            upstream.handshake(_connect(s.port), _ctx(pki, protocols=("TLSv1.3",)),
                               "localhost", 5.0)


def test_send_duplex_tls_against_an_echo_server(pki: Material) -> None:
    """4 MiB to a server that writes back while it reads: without reading meanwhile
    both sides would block on full windows."""
    payload = os.urandom(1 << 16) * 64
    with TLSServer(pki.server, pki.server_key, mode="echo") as server:
        tls = upstream.handshake(_connect(server.port), _ctx(pki), "localhost", 5.0)
        got = bytearray()

        def on_readable() -> None:
            try:
                got.extend(tls.recv(65536))
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass

        upstream.send_duplex_tls(tls, payload, 10.0, on_readable)
        while len(got) < len(payload):
            got += upstream.recv_tls(tls, 10.0)
        tls.close()
    assert got == payload


def test_recv_tls_times_out_and_sees_eof(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key, mode="echo") as server:
        tls = upstream.handshake(_connect(server.port), _ctx(pki), "localhost", 5.0)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            upstream.recv_tls(tls, 0.3)
        assert time.monotonic() - start < 2.0
        tls.close()
    with TLSServer(pki.server, pki.server_key, mode="close") as server:
        tls = upstream.handshake(_connect(server.port), _ctx(pki), "localhost", 5.0)
        assert upstream.recv_tls(tls, 5.0) == b""
        tls.close()


def test_still_open_tls(pki: Material) -> None:
    with TLSServer(pki.server, pki.server_key, mode="echo") as server:
        tls = upstream.handshake(_connect(server.port), _ctx(pki), "localhost", 5.0)
        time.sleep(0.1)
        # TLS 1.3 session tickets are waiting unread: the fd is readable, which the
        # plain-TCP check takes for EOF or stray bytes, yet the connection is fine.
        assert tls.version() == "TLSv1.3"
        poller = select.poll()
        poller.register(tls, select.POLLIN)
        assert poller.poll(0)
        assert upstream.still_open_tls(tls)
        tls.send(b"x")
        assert upstream.recv_tls(tls, 5.0) == b"x"
        assert upstream.still_open_tls(tls)
        tls.send(b"stray")
        time.sleep(0.2)
        assert not upstream.still_open_tls(tls)  # bytes nobody asked for
        tls.close()
    with TLSServer(pki.server, pki.server_key, mode="close") as server:
        tls = upstream.handshake(_connect(server.port), _ctx(pki), "localhost", 5.0)
        time.sleep(0.2)
        assert not upstream.still_open_tls(tls)  # close_notify
        tls.close()


def test_client_contexts_used_from_many_threads(pki: Material) -> None:
    """One context, concurrent handshakes from worker threads."""
    config_host = HostConfig(proxy_tls=ProxyTLSSettings(engine=True,
                                                        ca_certificate_file=str(pki.ca)))
    contexts = ClientContexts([config_host, HostConfig()])
    assert len(contexts) == 1
    ctx = contexts.for_host(config_host)
    errors: list[BaseException] = []
    with TLSServer(pki.server, pki.server_key) as server:

        def one() -> None:
            try:
                tls = upstream.handshake(_connect(server.port), ctx, "localhost", 5.0)
                assert upstream.recv_tls(tls, 5.0) == b"hello"
                tls.close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert not errors
