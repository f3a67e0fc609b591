"""TLS contexts, built once per child from the immutable config, never per connection.

Front side (mod_ssl's SSLEngine): one server SSLContext per virtual host. A
listener with ``https`` gets the context of the first TLS vhost on its address;
an SNI callback switches the handshake to the vhost whose ServerName/ServerAlias
matches, and tags the socket with that vhost so the request can be checked
against it (421 on mismatch).

Proxy side (SSLProxyEngine): one client SSLContext per distinct
``ProxyTLSSettings`` (``ClientContexts``); hosts with equal settings share it.
The handshake itself is ``proxympm.proxy.upstream.handshake``.

``validate_tls`` builds every context of a config once, in the arbiter, so that a
bad certificate or key is refused before any child depends on it (start, graceful
restart, ``proxympm -t``).

Contexts are only read after they are built, so every thread may use them.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

from proxympm.config.model import HostConfig, ProxyTLSSettings, ServerConfig, TLSSettings
from proxympm.proxy.routing import HostTable, name_matches

_VERSIONS = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


# TLSv1.2 suites of Mozilla's "intermediate" profile (ssl-config.mozilla.org, v5.7),
# the front side's default when SSLCipherSuite is not set: OpenSSL's DEFAULT also
# enables CBC suites that the profile rejects. (DHE suites need DH parameters,
# which proxympm does not load, so they never appear.)
MOZILLA_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)


class CipherSuiteError(ValueError):
    """An SSLCipherSuite / SSLProxyCipherSuite string that selects no cipher."""


def _set_ciphers(ctx: ssl.SSLContext, spec: str) -> None:
    try:
        ctx.set_ciphers(spec)
    except ssl.SSLError:  # "No cipher can be selected.", without a reason code
        raise CipherSuiteError(f"cipher string '{spec}' selects no cipher") from None


def build_context(tls: TLSSettings) -> ssl.SSLContext:
    """Raises ssl.SSLError / OSError with the file named when a cert or key is bad."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[p] for p in tls.protocols if p in _VERSIONS) or [
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_3,
    ]
    ctx.minimum_version = versions[0]
    ctx.maximum_version = versions[-1]
    if tls.certificate_file is None:
        raise ValueError("SSLEngine on without SSLCertificateFile")
    ctx.load_cert_chain(tls.certificate_file, tls.certificate_key_file, password=_no_passphrase)
    _set_ciphers(ctx, tls.cipher_suite or MOZILLA_INTERMEDIATE_CIPHERS)
    if tls.honor_cipher_order:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if not tls.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ServerTLS:
    """All TLS vhost contexts of one server configuration."""

    def __init__(self, hosts: HostTable) -> None:
        self.hosts = hosts
        self.contexts: dict[int, ssl.SSLContext] = {}
        for host in (hosts.main, *(v.host for v in hosts.vhosts)):
            if host.tls.engine:
                self.contexts[id(host)] = build_context(host.tls)

    def context_for_listener(self, ip: str, port: int) -> ssl.SSLContext | None:
        candidates = [h for h in self.hosts.for_address(ip, port) if id(h) in self.contexts]
        if not candidates:
            main = self.hosts.main
            if id(main) in self.contexts:
                candidates = [main]
            else:
                return None
        default = candidates[0]
        ctx = self.contexts[id(default)]
        own = {id(h): self.contexts[id(h)] for h in candidates}

        def on_sni(sock: ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
            chosen: HostConfig = default
            if name:
                lname = name.lower()
                for h in candidates:
                    if name_matches(h, lname):
                        chosen = h
                        break
            sock.proxympm_host = chosen  # type: ignore[attr-defined]
            if chosen is not default:
                sock.context = own[id(chosen)]

        # One wrapper context per listener so that its SNI callback knows the
        # candidates of that address; it shares certificates by loading the same
        # settings (built once at start).
        listener_ctx = build_context(default.tls)
        listener_ctx.sni_callback = on_sni
        del ctx
        return listener_ctx


# ---------------------------------------------------------------------------
# Proxy side: TLS to https:// backends


class EncryptedKeyError(ValueError):
    """A private key needs a pass phrase; proxympm has no SSLPassPhraseDialog."""


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal: a daemon would hang.
    raise EncryptedKeyError("the private key is encrypted (pass phrases are not supported)")


def build_client_context(settings: ProxyTLSSettings) -> ssl.SSLContext:
    """The client SSLContext for backends of hosts with these settings.

    TLSv1.2 at least (``SSLProxyProtocol`` may narrow it), ALPN ``http/1.1``, no
    compression. ``SSLProxyVerify require`` verifies the chain against
    ``SSLProxyCACertificateFile`` or the system store, and the name when
    ``SSLProxyCheckPeerName`` is on; ``none`` verifies nothing. Raises ssl.SSLError
    or OSError for a bad file, EncryptedKeyError for a key with a pass phrase.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    versions = sorted(_VERSIONS[p] for p in settings.protocols if p in _VERSIONS) or [
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_3,
    ]
    ctx.minimum_version = versions[0]
    ctx.maximum_version = versions[-1]
    if settings.verify == "require":
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = settings.check_peer_name
        if settings.ca_certificate_file:
            ctx.load_verify_locations(cafile=settings.ca_certificate_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False  # must go first: it forbids CERT_NONE
        ctx.verify_mode = ssl.CERT_NONE
    if settings.machine_certificate_file:
        ctx.load_cert_chain(settings.machine_certificate_file, password=_no_passphrase)
    if settings.cipher_suite:
        _set_ciphers(ctx, settings.cipher_suite)
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ClientContexts:
    """One client SSLContext per distinct ProxyTLSSettings, built when the child starts.

    ``ProxyTLSSettings`` is frozen and compared by value, so hosts whose SSLProxy*
    settings are equal (a vhost inheriting the main server's, typically) share one
    context and its session cache. Read-only after ``__init__``: any worker thread
    may call ``for_host``/``get`` without a lock.
    """

    __slots__ = ("_contexts",)

    def __init__(self, hosts: Iterable[HostConfig]) -> None:
        self._contexts: dict[ProxyTLSSettings, ssl.SSLContext] = {}
        for host in hosts:
            settings = host.proxy_tls
            if settings.engine and settings not in self._contexts:
                self._contexts[settings] = build_client_context(settings)

    def __len__(self) -> int:
        return len(self._contexts)

    def get(self, settings: ProxyTLSSettings) -> ssl.SSLContext:
        """The context for ``settings``; KeyError if SSLProxyEngine is off for them."""
        return self._contexts[settings]

    def for_host(self, host: HostConfig) -> ssl.SSLContext:
        """The context for https:// backends of ``host`` (the config loader has made
        sure that every host with an https:// route has SSLProxyEngine on)."""
        return self._contexts[host.proxy_tls]


# ---------------------------------------------------------------------------
# Checking a configuration's TLS material before it is used


def validate_tls(config: ServerConfig) -> list[str]:
    """Build every front and client context of ``config``; httpd-style messages for
    each that fails (empty: all good). Each message names the file at fault and the
    host by its ``<VirtualHost>`` file:line (the main server by its SSLEngine or
    SSLProxyEngine line). Runs in the arbiter; the contexts are thrown away."""
    errors: list[str] = []
    hosts = [(config.main, None)] + [(v.host, v) for v in config.vhosts]
    seen_client: set[ProxyTLSSettings] = set()
    for host, vhost in hosts:
        if host.tls.engine:
            label = _host_label(host, vhost, host.tls.where)
            try:
                build_context(host.tls)
            except (ssl.SSLError, OSError, ValueError) as exc:
                errors.append(_front_error(host.tls, label, exc))
        settings = host.proxy_tls
        if settings.engine and settings not in seen_client:
            seen_client.add(settings)
            label = _host_label(host, vhost, settings.where)
            try:
                build_client_context(settings)
            except (ssl.SSLError, OSError, ValueError) as exc:
                errors.append(_client_error(settings, label, exc))
    if not errors:
        errors += _check_https_listeners(config)
    return errors


def _host_label(host: HostConfig, vhost: object, where: str) -> str:
    name = host.server_name
    if vhost is None:
        at = f" ({where})" if where else f" ({host.where})" if host.where else ""
        return f"the main server{f' {name}' if name else ''}{at}"
    return f"virtual host {name or '(no ServerName)'} at {host.where}"


def _detail(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _holds_certificate(path: str) -> bool:
    """Whether OpenSSL finds at least one certificate in ``path``."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError):
        return False
    return True


def _front_error(tls: TLSSettings, label: str, exc: BaseException) -> str:
    cert = tls.certificate_file or "?"
    key = tls.certificate_key_file or cert
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        return f"AH02565: Certificate and private key of {label} from {cert} and {key} do not match"
    if isinstance(exc, CipherSuiteError):
        return (
            f"AH01898: Unable to configure permitted SSL ciphers for {label}: "
            f"SSLCipherSuite '{tls.cipher_suite}' selects none"
        )
    if isinstance(exc, EncryptedKeyError):
        return f"AH02577: Init: SSLPassPhraseDialog not supported: {key} of {label}: {exc}"
    if not _holds_certificate(cert):
        return (
            f"AH02562: Failed to configure certificate of {label}, check {cert}: "
            f"no PEM certificate could be read ({_detail(exc)})"
        )
    return (
        f"AH02564: Failed to configure encrypted (?) private key of {label}, "
        f"check {key}: {_detail(exc)}"
    )


def _client_error(settings: ProxyTLSSettings, label: str, exc: BaseException) -> str:
    ca = settings.ca_certificate_file
    machine = settings.machine_certificate_file
    if ca and not _holds_certificate(ca):
        return (
            f"AH01896: Unable to configure verify locations for client authentication "
            f"of {label}: SSLProxyCACertificateFile {ca} holds no PEM certificate "
            f"({_detail(exc)})"
        )
    if isinstance(exc, CipherSuiteError):
        return (
            f"AH01898: Unable to configure permitted SSL ciphers for {label}: "
            f"SSLProxyCipherSuite '{settings.cipher_suite}' selects none"
        )
    if machine:
        if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            why = "the certificate and private key do not match"
        elif isinstance(exc, EncryptedKeyError):
            why = str(exc)
        elif not _holds_certificate(machine):
            why = f"no PEM certificate could be read ({_detail(exc)})"
        else:
            why = f"missing or unreadable private key ({_detail(exc)})"
        return (
            f"AH02252: incomplete client cert configured for SSL proxy of {label}: "
            f"SSLProxyMachineCertificateFile {machine}: {why}"
        )
    return f"AH01894: Unable to configure TLS to backends of {label}: {_detail(exc)}"


def _check_https_listeners(config: ServerConfig) -> list[str]:
    """Every ``Listen ... https`` needs a TLS host answering on it (the child would
    refuse to start otherwise)."""
    errors = []
    hosts = HostTable(config.main, config.vhosts)
    server_tls = ServerTLS(hosts)
    for listen in config.listens:
        if listen.protocol != "https":
            continue
        if server_tls.context_for_listener(listen.family_host, listen.port) is None:
            errors.append(
                f"AH02572: Failed to configure at least one certificate and key for "
                f"Listen {listen.host or '*'}:{listen.port} https ({listen.where}): no "
                "virtual host on this address has SSLEngine on"
            )
    return errors


# ---------------------------------------------------------------------------
# Loading a configuration's TLS material once, in the arbiter, before forking


class TLSMaterial:
    """Every SSLContext of one configuration generation, built by the arbiter before
    it forks (as httpd loads certificates in the parent): children of a generation
    all serve the certificates that were checked, even if the files change later."""

    __slots__ = ("listeners", "client")

    def __init__(self, config: ServerConfig, hosts: HostTable) -> None:
        front = ServerTLS(hosts) if any(h.tls.engine for h in config.all_hosts()) else None
        self.listeners: dict[tuple[str, int], ssl.SSLContext | None] = {}
        for spec in config.listens:
            if spec.protocol == "https" and front is not None:
                ip = spec.family_host
                self.listeners[(spec.host, spec.port)] = front.context_for_listener(ip, spec.port)
        self.client = ClientContexts(config.all_hosts())
