"""Immutable configuration objects: what a parsed httpd.conf means.

The config loader (``proxympm.config.loader``) builds these once, in the arbiter,
before anything forks; every other layer only reads them. Nothing here touches a
socket or a file. All durations are float seconds, all sizes int bytes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

# Apache's defaults (mpm_common, core, mod_proxy), in one place.
DEFAULT_TIMEOUT = 60.0
DEFAULT_KEEPALIVE_TIMEOUT = 5.0
DEFAULT_RETRY = 60.0
# Bounds on how long a DNS answer for an upstream name is used before it is asked
# again (proxympm's; see ProxyDNSTTLFloor / ProxyDNSTTLCeiling in directives.py).
DEFAULT_DNS_TTL_FLOOR = 1.0
DEFAULT_DNS_TTL_CEILING = 60.0
COMMON_LOG_FORMAT = '%h %l %u %t "%r" %>s %b'
COMBINED_LOG_FORMAT = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'


@dataclass(frozen=True, slots=True)
class Listen:
    """One ``Listen [addr:]port [protocol]``. ``host`` is '' for all addresses."""

    host: str
    port: int
    protocol: str  # "http" or "https"
    where: str = ""  # "file:line" of the directive, for messages
    # RemoteIPProxyProtocol On for a host on this address: a PROXY header must come first
    proxy_protocol: bool = field(default=False, compare=False)
    # ... except from these peers (RemoteIPProxyProtocolExceptions)
    proxy_exceptions: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), compare=False)

    @property
    def family_host(self) -> str:
        return self.host or "0.0.0.0"


@dataclass(frozen=True, slots=True)
class WorkerParams:
    """key=value parameters of a ProxyPass worker (mod_proxy's names).

    ``None`` means "not set here": the effective value falls back as Apache's does
    (timeout -> ProxyTimeout -> Timeout; connectiontimeout -> timeout).
    """

    timeout: float | None = None
    connectiontimeout: float | None = None
    ttl: float | None = None
    max: int | None = None  # concurrent requests to this backend, whole server
    retry: float = DEFAULT_RETRY
    keepalive: bool = False  # TCP SO_KEEPALIVE on backend sockets (not HTTP keep-alive)
    disablereuse: bool = False
    request_buffering: bool = True  # read the whole request body before going upstream
    response_buffering: bool = True  # spool what a slow client cannot take yet
    # upgrade=: protocols a client may switch to (lower-case, comma-separated), "*" for
    # ANY, "" for none (a ws:// or wss:// URL then still allows "websocket").
    upgrade: str = ""
    proxyprotocol: str = ""  # "v1"/"v2": send a PROXY header on each new connection
    # BalancerMember only (refused on ProxyPass):
    loadfactor: float = 1.0  # weight, 1..100
    lbset: int = 0  # cluster set: lower sets are tried first
    status: str = ""  # flags: D disabled, S stopped, I ignore errors, H hot standby,
    # R hot spare, N draining (sticky sessions only)
    route: str = ""  # sticky route: the session id suffix that names this member
    # plain ProxyPass with max: how long a request waits for a slot (httpd's acquire);
    # None: the worker's timeout
    acquire: float | None = None
    # mod_proxy_hcheck (active health checks, run by the watchdog process)
    hcmethod: str = ""  # "" (no checks) | TCP | GET | HEAD | OPTIONS
    hcuri: str = ""  # appended to the member URL's path
    hcinterval: float = 30.0
    hcpasses: int = 1
    hcfails: int = 1
    hcexpr: str = ""  # a ProxyHCExpr name (its expression is in ServerConfig.hc_exprs)


@dataclass(frozen=True, slots=True)
class BalancerSettings:
    """Balancer keys (``ProxySet`` in ``<Proxy balancer://...>`` or on its ProxyPass)."""

    lbmethod: str = "byrequests"  # byrequests | bytraffic | bybusyness | p2c | peakewma
    timeout: float = 0.0  # longest wait in the queue for a member under its max; 0: none
    maxattempts: int | None = None  # failover attempts; None: members - 1 (at least 1)
    nofailover: bool = False
    failonstatus: tuple[int, ...] = ()
    failontimeout: bool = False
    forcerecovery: bool = True  # all members in error: clear their error state and try
    stickysession: str = ""  # "COOKIE" or "COOKIE|urlparam"
    stickysessionsep: str = "."  # between session id and route; "" (Off): none
    scolonpathdelim: bool = False  # ';' also ends a URL session parameter


@dataclass(frozen=True, slots=True)
class BalancerMember:
    """``BalancerMember url [key=value ...]``: ``url`` without a trailing '/'."""

    url: str
    params: WorkerParams = field(default_factory=WorkerParams)
    where: str = ""


@dataclass(frozen=True, slots=True)
class Balancer:
    """``<Proxy balancer://name>``: its members and settings (server-wide namespace)."""

    name: str  # "balancer://name", the name lower-cased
    members: tuple[BalancerMember, ...] = ()
    settings: BalancerSettings = field(default_factory=BalancerSettings)
    where: str = ""


@dataclass(frozen=True, slots=True)
class Access:
    """The ``Require`` lines of one ``<Location>`` (mod_authz_host), which together
    are an implicit ``<RequireAny>``: a request is let in if one of them grants."""

    all_granted: bool = False  # Require all granted
    local: bool = False  # Require local
    networks: tuple[str, ...] = ()  # Require ip ...: normalized CIDR networks
    where: str = ""


@dataclass(frozen=True, slots=True)
class HandlerLocation:
    """``<Location path> SetHandler name [Require ...] </Location>``: a response
    proxympm makes itself (``server-status``, ``metrics``)."""

    path: str
    handler: str
    access: Access | None = None  # None: no Require, open to all (as httpd)
    where: str = ""


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    """``ProxyPass path url|! [key=value ...]``.

    ``url`` is None for an exclusion (``!``). ``path`` matching follows Apache's
    ``alias_match``: ``/foo`` matches ``/foo`` and ``/foo/x``, never ``/foobar``.
    """

    path: str
    url: str | None
    params: WorkerParams = field(default_factory=WorkerParams)
    where: str = ""
    # balancer:// URL only: balancer keys given on the ProxyPass line, in order
    balancer_settings: tuple[tuple[str, object], ...] = field(default=(), compare=False)
    # the Require lines of its <Location>, if any (None: no access control)
    access: Access | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ReverseRule:
    """``ProxyPassReverse path url``: rewrite Location/Content-Location/URI."""

    path: str
    url: str
    where: str = ""


@dataclass(frozen=True, slots=True)
class CustomLog:
    """``CustomLog target format|nickname``, with a nickname already resolved."""

    target: str  # a path (relative to ServerRoot already made absolute) or "|cmd"
    format: str
    where: str = ""


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """mod_ssl front-side settings of one virtual host."""

    engine: bool = False
    certificate_file: str | None = None
    certificate_key_file: str | None = None
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    cipher_suite: str | None = None
    honor_cipher_order: bool = False
    session_tickets: bool = True
    # "file:line" of the SSLEngine that turned TLS on, for messages; not part of the
    # settings' identity.
    where: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ProxyTLSSettings:
    """mod_ssl proxy-side settings of one host: TLS to ``https://`` backends.

    Hashable and compared by value, so that hosts with the same settings share one
    client SSLContext per child (``proxympm.tls.ClientContexts``).
    """

    engine: bool = False  # SSLProxyEngine
    verify: str = "require"  # SSLProxyVerify none|require (httpd's default is none)
    ca_certificate_file: str | None = None  # None: the system's default trust store
    check_peer_name: bool = True  # SSLProxyCheckPeerName
    machine_certificate_file: str | None = None  # PEM client certificate (+ chain) and key
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    cipher_suite: str | None = None
    where: str = field(default="", compare=False)  # "file:line" of SSLProxyEngine


@dataclass(frozen=True, slots=True)
class ReadStage:
    """One stage of mod_reqtimeout: ``timeout[-max][,MinRate=rate]``.

    ``timeout`` 0 disables the stage. The deadline starts at ``timeout`` and moves
    out by one second per ``min_rate`` bytes received, up to ``max`` (0: no cap).
    """

    timeout: float = 0.0
    max: float = 0.0
    min_rate: int = 0


@dataclass(frozen=True, slots=True)
class ReadTimeouts:
    """``RequestReadTimeout``, with mod_reqtimeout's defaults."""

    handshake: ReadStage = field(default_factory=ReadStage)
    header: ReadStage = field(default_factory=lambda: ReadStage(20.0, 40.0, 500))
    body: ReadStage = field(default_factory=lambda: ReadStage(20.0, 0.0, 500))


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """One ``Header`` or ``RequestHeader`` line (mod_headers), checked and compiled.

    ``value`` is the compiled format: literal bytes, or ``("e", NAME)`` for
    ``%{NAME}e``, ``("t",)`` for ``%t`` and ``("D",)`` for ``%D``. ``pattern`` is the
    regex of ``edit``/``edit*`` (on values) and ``echo`` (on names).
    """

    request: bool  # RequestHeader
    action: str  # set append merge add setifempty unset edit edit* echo
    name: bytes  # field name as written ('' for echo)
    lname: bytes
    value: tuple[bytes | tuple[str, ...], ...] = ()
    pattern: re.Pattern[bytes] | None = None
    replacement: bytes = b""
    always: bool = False  # Header always: httpd's err_headers_out table
    early: bool = False
    env: str | None = None  # env=NAME condition
    env_negate: bool = False  # env=!NAME
    where: str = ""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Everything that may differ per virtual host. The main server is one too."""

    server_name: str | None = None
    server_aliases: tuple[str, ...] = ()
    routes: tuple[ProxyRoute, ...] = ()
    reverse_rules: tuple[ReverseRule, ...] = ()
    preserve_host: bool = False
    add_headers: bool = True
    via: str = "off"  # off | on | full | block
    proxy_timeout: float | None = None  # None: use Timeout
    websocket_idle_timeout: float = 0.0  # ProxyWebsocketIdleTimeout; 0: the proxy timeouts
    timeout: float = DEFAULT_TIMEOUT
    keepalive: bool = True
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    max_keepalive_requests: int = 100  # 0 = unlimited
    limit_request_line: int = 8190
    limit_request_fields: int = 100  # 0 = unlimited
    limit_request_field_size: int = 8190
    limit_request_body: int = 1073741824  # 0 = unlimited
    read_timeout: ReadTimeouts = field(default_factory=ReadTimeouts)
    tls: TLSSettings = field(default_factory=TLSSettings)
    proxy_tls: ProxyTLSSettings = field(default_factory=ProxyTLSSettings)
    custom_logs: tuple[CustomLog, ...] = ()
    error_log: str | None = None
    # mod_headers: the host's own rules (main server's first), then per <Location>
    # (path, rules) in configuration order, the main server's Locations first.
    header_rules: tuple[HeaderRule, ...] = ()
    location_header_rules: tuple[tuple[bytes, tuple[HeaderRule, ...]], ...] = ()
    # mod_remoteip
    remote_ip_header: str | None = None  # RemoteIPHeader, as written
    remote_ip_proxies_header: str | None = None  # RemoteIPProxiesHeader, as written
    remote_ip_proxies: tuple[tuple[Network, bool], ...] = ()  # (network, internal)
    proxy_protocol: bool = False  # RemoteIPProxyProtocol
    proxy_protocol_exceptions: tuple[Network, ...] = ()  # RemoteIPProxyProtocolExceptions
    add_forwarded: bool = False  # ProxyAddForwarded: RFC 7239 Forwarded to backends
    handlers: tuple[HandlerLocation, ...] = ()  # tried before routes, first match wins
    where: str = ""


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """``<VirtualHost addr:port ...>``: the addresses it answers on and its settings.

    ``addresses`` holds (host, port) pairs; host '*' or '_default_' is any address,
    port 0 means any port.
    """

    addresses: tuple[tuple[str, int], ...]
    host: HostConfig


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The whole server: process model, listeners, logs, the main host and vhosts."""

    config_file: str
    server_root: str
    listens: tuple[Listen, ...]
    main: HostConfig
    vhosts: tuple[VirtualHost, ...] = ()
    balancers: tuple[Balancer, ...] = ()
    hc_exprs: tuple[tuple[str, str], ...] = ()  # ProxyHCExpr name -> expression
    listen_backlog: int = 511
    pid_file: str = "logs/httpd.pid"
    start_servers: int = 3
    server_limit: int = 16
    threads_per_child: int = 25
    thread_limit: int = 64
    max_request_workers: int = 400
    min_spare_threads: int = 75
    max_spare_threads: int = 250
    max_connections_per_child: int = 0
    async_request_worker_factor: float = 2.0
    cpu_affinity: bool = True  # ChildCPUAffinity: child slot i runs on CPU i mod n
    graceful_shutdown_timeout: float = 0.0
    error_log: str = "logs/error_log"
    log_level: str = "warn"
    # LogLevel module:level pairs, module by short name ("ssl", "proxy"), config order
    module_log_levels: tuple[tuple[str, str], ...] = ()
    # Upstream name resolution (ProxyDNSServers, ProxyDNSTTLFloor, ProxyDNSTTLCeiling):
    # name servers as "ip:port" / "[ipv6]:port"; none means the system's resolv.conf.
    dns_servers: tuple[str, ...] = ()
    dns_ttl_floor: float = DEFAULT_DNS_TTL_FLOOR
    dns_ttl_ceiling: float = DEFAULT_DNS_TTL_CEILING
    defines: tuple[str, ...] = ()  # names from -D and Define, for <IfDefine>
    warnings: tuple[str, ...] = ()  # httpd-style notices found while loading (AH00513...)

    def all_hosts(self) -> tuple[HostConfig, ...]:
        return (self.main, *(v.host for v in self.vhosts))
