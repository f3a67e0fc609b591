"""Which httpd modules proxympm stands in for.

``<IfModule>`` treats these as loaded (by module identifier or source file name,
as httpd accepts both) and everything else as absent; ``LogLevel mod:level``
accepts levels for them. ``LoadModule`` lines are accepted and ignored, so a
pasted httpd.conf keeps working.
"""

from __future__ import annotations

PROVIDED_MODULES: tuple[tuple[str, str], ...] = (
    ("proxy_module", "mod_proxy.c"),
    ("proxy_http_module", "mod_proxy_http.c"),
    ("proxy_balancer_module", "mod_proxy_balancer.c"),
    ("proxy_wstunnel_module", "mod_proxy_wstunnel.c"),
    ("ssl_module", "mod_ssl.c"),
    ("mpm_event_module", "event.c"),
    ("log_config_module", "mod_log_config.c"),
    ("status_module", "mod_status.c"),
    ("authz_core_module", "mod_authz_core.c"),
    ("authz_host_module", "mod_authz_host.c"),
    ("headers_module", "mod_headers.c"),
    ("remoteip_module", "mod_remoteip.c"),
    ("reqtimeout_module", "mod_reqtimeout.c"),
    ("core_module", "core.c"),
    ("http_module", "http_core.c"),
)

LOADED_MODULES = frozenset(
    {name for pair in PROVIDED_MODULES for name in pair} | {"mod_mpm_event.c"}
)


def short_name(module: str) -> str:
    """httpd's equivalence for LogLevel: ``ssl``, ``mod_ssl.c`` and ``ssl_module``."""
    return module.removesuffix(".c").removesuffix("_module").removeprefix("mod_").lower()


KNOWN_SHORT_NAMES = frozenset(short_name(m) for m in LOADED_MODULES)
