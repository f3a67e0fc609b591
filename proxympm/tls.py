"""TLS contexts for the client side: one SSLContext per virtual host, built once.

A listener with ``https`` gets the context of the first TLS vhost on its address;
an SNI callback switches the handshake to the vhost whose ServerName/ServerAlias
matches, and tags the socket with that vhost so the request can be checked
against it (421 on mismatch). Contexts are rebuilt only when the config is
reloaded, never per connection.
"""

from __future__ import annotations

import ssl

from proxympm.config.model import HostConfig, TLSSettings
from proxympm.proxy.routing import HostTable, name_matches

_VERSIONS = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def build_context(tls: TLSSettings) -> ssl.SSLContext:
    """Raises ssl.SSLError / OSError with the file named when a cert or key is bad."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[p] for p in tls.protocols if p in _VERSIONS) or [
        ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
    ctx.minimum_version = versions[0]
    ctx.maximum_version = versions[-1]
    if tls.certificate_file is None:
        raise ValueError("SSLEngine on without SSLCertificateFile")
    ctx.load_cert_chain(tls.certificate_file, tls.certificate_key_file)
    if tls.cipher_suite:
        ctx.set_ciphers(tls.cipher_suite)
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
