"""Every directive proxympm understands, declared once.

This table drives the reader (read-time directives), the loader (contexts,
arity, conversion, storage) and the generated reference, conf/DIRECTIVES.md
(``python -m proxympm.config.reference``). Adding a directive means adding one
``Declaration`` here, a converter if none fits, and a model field if it needs one.
"""

from __future__ import annotations

from proxympm.config import converters as cv
from proxympm.config import header_rules as hr
from proxympm.config import remoteip as rip
from proxympm.config import stores as st
from proxympm.config.declaration import (
    ANYWHERE,
    FLAG,
    ITERATE,
    RAW,
    SERVER,
    TAKE1,
    TAKE2,
    TAKE12,
    TAKE23,
    VHOST,
    Arity,
    Declaration,
    check_arity,
)
from proxympm.config.scope import Context

__all__ = ["DECLARATIONS", "Arity", "Declaration", "check_arity", "lookup", "spelling"]

LOCATION_TOO = VHOST | Context.LOCATION
_NON_NEGATIVE = '{name} "{arg}" must be a non-negative integer'


def _mpm(
    name: str,
    default: str,
    doc: str,
    field: str,
    usage: str,
    aliases: tuple[str, ...] = (),
    minimum: int | None = None,
) -> Declaration:
    """An mpm_event number: server context, one integer (clamped after loading)."""
    return Declaration(
        name=name, contexts=SERVER, arity=TAKE1, convert=cv.whole_number(minimum, _NON_NEGATIVE),
        store=st.server(field), syntax=f"{name} number", default=default, doc=doc,
        usage=usage, aliases=aliases, module="mpm_event",
    )  # fmt: skip


def _read_time(name: str, arity: Arity, syntax: str, doc: str, **kw: object) -> Declaration:
    return Declaration(
        name=name, contexts=ANYWHERE, arity=arity, convert=cv.all_words, store=st.nothing,
        syntax=syntax, default=None, doc=doc, read_time=True, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


DECLARATIONS: tuple[Declaration, ...] = (
    # -- read while the files are read ------------------------------------
    Declaration(
        "ServerRoot", SERVER, TAKE1, cv.all_words, st.nothing,
        syntax="ServerRoot directory", default=None, read_time=True,
        doc="Directory that relative paths (Include, PidFile, logs, certificates) are "
        "resolved against. Defaults to the directory given with `-d`, else the current "
        "directory. It takes effect for the lines after it.",
        compat="As httpd, the directive overrides `-d`. Must be at top level.",
        usage="Common directory of server-related files (logs, confs, etc.)",
    ),  # fmt: skip
    _read_time(
        "Define", TAKE12, "Define name [value]",
        "Defines `name` for `<IfDefine>` (like `-D name`) and, with a value, the variable "
        "`${name}` for every later line, in every file, regardless of sections.",
        usage="Define a variable, optionally to a value.  Same as passing -D to the command "
        "line.",
    ),
    _read_time(
        "UnDefine", TAKE1, "UnDefine name",
        "Removes a name set by `Define` or `-D`, and its variable.",
        usage="Undefine the existence of a variable. Undo a Define.",
    ),
    _read_time(
        "Include", TAKE1, "Include file-path|directory-path|wildcard",
        "Reads other files here, as if they were written in place of the line (also inside "
        "sections). Relative to ServerRoot. Wildcards (`*`, `?`, `[..]`) may appear in the "
        "file and directory parts; matches are read in alphabetical order; a directory "
        "includes every file below it. A wildcard that matches nothing is an error. At most "
        "128 levels of nested Include.",
        usage="Name(s) of the config file(s) to be included; fails if the wildcard does not "
        "match at least one file",
    ),
    _read_time(
        "IncludeOptional", TAKE1, "IncludeOptional file-path|directory-path|wildcard",
        "As `Include`, but a path or wildcard that matches nothing is silently ignored.",
        usage="Name or pattern of the config file(s) to be included; ignored if the file "
        "does not exist or the pattern does not match any files",
    ),
    _read_time(
        "IfDefine", TAKE1, "<IfDefine [!]name> ... </IfDefine>",
        "Reads the enclosed lines only if `name` is (with `!`: is not) defined by `-D` or "
        "`Define`. Nests.", section=True,
    ),
    _read_time(
        "IfModule", TAKE1, "<IfModule [!]module> ... </IfModule>",
        "Reads the enclosed lines only if the module is (with `!`: is not) present, by "
        "identifier (`proxy_module`) or source file (`mod_proxy.c`). proxympm counts as "
        "present: proxy, proxy_http, proxy_balancer, proxy_wstunnel, ssl, mpm_event, "
        "log_config, status, headers, remoteip, reqtimeout (and core); nothing else.",
        section=True,
    ),
    _read_time(
        "IfFile", TAKE1, "<IfFile [!]path> ... </IfFile>",
        "Reads the enclosed lines only if the path (relative to ServerRoot) exists (with "
        "`!`: does not).", section=True,
    ),
    # -- sections ---------------------------------------------------------
    Declaration(
        "VirtualHost", SERVER, ITERATE, cv.vhost_addresses, st.virtual_host,
        syntax="<VirtualHost addr[:port] [addr[:port]] ...> ... </VirtualHost>", default=None,
        section=True,
        doc="A virtual host: the directives inside apply to requests that arrive on one of "
        "the addresses (`*`, `_default_`, an IP, `[IPv6]`; port `*` or none for any) and, "
        "among vhosts on the same address, carry a matching Host (ServerName, then "
        "ServerAlias; the first vhost is the default). Settings not given inside are "
        "inherited from the main server, ProxyPass rules included (see ProxyPassInherit).",
        compat="Host names are kept as written, not resolved while loading.",
    ),  # fmt: skip
    Declaration(
        "Location", VHOST, TAKE12, cv.location, st.location,
        syntax="<Location URL-path> ... </Location>", default=None, section=True,
        doc="Holds a `ProxyPass` and `ProxyPassReverse` for one URL path, given without the "
        "path, or a `SetHandler` (server-status, metrics); `Require` lines control who may "
        "use either. Location rules are tried before the server's ProxyPass rules (a "
        "handler before any ProxyPass); when several Locations match, the last one in the "
        "configuration wins, as httpd merges them. The main server's Locations apply in "
        "every virtual host too.",
        compat="Only ProxyPass, ProxyPassReverse, SetHandler and Require are allowed "
        "inside. The path matches on whole segments (`/server-status` does not match "
        "`/server-statusx`, where httpd's plain prefix would). `<Location ~ regex>` and "
        "`<LocationMatch>` are not supported.",
    ),
    Declaration(
        "SetHandler", Context.LOCATION, TAKE1, cv.set_handler, st.set_handler,
        module="core", syntax="SetHandler server-status|metrics", default=None,
        doc="Answers requests for the `<Location>` with a page proxympm makes itself. "
        "`server-status`: mod_status's page for the event MPM (HTML; `?auto` machine "
        "readable as mod_status has it; `?refresh=N` reloads every N seconds; `?notable` "
        "leaves out the per-worker table; `?prometheus` the Prometheus text below). "
        "`metrics`: the Prometheus text exposition format (version 0.0.4) of the whole "
        "server: per backend requests, errors, responses by class, latency histogram, in "
        "flight, balancer queue, pooled connections (idle, new, reused); per process "
        "connections by state, busy and idle workers; totals. Usually "
        '`<Location "/metrics">`. Only GET and HEAD are answered (405 otherwise).',
        compat="`SetHandler` is only allowed in `<Location>`, with these two handlers. A "
        "Location's handler wins over a ProxyPass for the same path (no "
        "`ProxyPass /server-status !` needed). `ExtendedStatus` is always on.",
        usage="a handler name that overrides any other configured handler",
    ),  # fmt: skip
    Declaration(
        "Require", Context.LOCATION, ITERATE, cv.require, st.require,
        module="mod_authz_host", syntax="Require all granted|all denied|local|ip addr ...",
        default=None,
        doc="Who may use the `<Location>`'s handler or ProxyPass (others get 403): "
        "`all granted`, `all denied`, `local` (loopback addresses, or the client's address "
        "equal to the server's), `ip` followed by addresses: full or partial IPv4 "
        "(`10.1`), `addr/len` (CIDR) or `addr/netmask`, IPv6 `addr/len`. Several Require "
        "lines are an implicit `<RequireAny>`: one that grants is enough. Without any, "
        "everyone is let in (as httpd); proxympm warns for a server-status or metrics "
        "Location left open.",
        compat="Only the `all`, `local` and `ip` providers, without `not`, and no "
        "`<RequireAll>`/`<RequireAny>` sections. A Location holding Require but neither "
        "SetHandler nor ProxyPass is an error (it would protect nothing here).",
        usage="specifies authorization directives which must be met",
    ),  # fmt: skip
    # -- server identity and processes ------------------------------------
    Declaration(
        "ServerName", VHOST, TAKE1, cv.server_name, st.host("server_name"),
        syntax="ServerName [scheme://]domain-name|ip-address[:port]", default=None,
        doc="The name this (virtual) server answers to, used to select name-based virtual "
        "hosts. A vhost without one inherits the main server's. A `scheme://` prefix is "
        "accepted and dropped; the port is kept.",
        usage="The hostname and port of the server",
    ),
    Declaration(
        "ServerAlias", VHOST, ITERATE, cv.all_words, st.server_alias,
        syntax="ServerAlias hostname [hostname] ...", default=None,
        doc="Other names a virtual host answers to; wildcards `*` and `?` allowed.",
        usage="A name or names alternatively used to access the server",
    ),
    Declaration(
        "Listen", SERVER, RAW, cv.listen, st.listen,
        syntax="Listen [IP-address:]port [http|https]", default=None,
        doc="An address and port to accept connections on; at least one is required. IPv6 "
        "addresses in brackets (`[::1]:8080`). The protocol defaults to `https` for port 443 "
        "and `http` otherwise. The same address and port twice is an error.",
        compat="Only the protocols `http` and `https` are accepted.",
    ),
    Declaration(
        "ListenBacklog", SERVER, TAKE1, cv.whole_number(1, "ListenBacklog must be > 0"),
        st.server("listen_backlog"), syntax="ListenBacklog backlog", default="511",
        doc="The `listen(2)` backlog of every listening socket; the OS may cap it.",
        usage="Maximum length of the queue of pending connections, as used by listen(2)",
    ),
    Declaration(
        "PidFile", SERVER, TAKE1, cv.path, st.server("pid_file"),
        syntax="PidFile filename", default="logs/httpd.pid",
        doc="File the parent process writes its pid to (relative to ServerRoot).",
        usage="A file for logging the server process ID",
    ),
    Declaration(
        "LoadModule", SERVER, TAKE2, cv.all_words, st.nothing,
        syntax="LoadModule module filename", default=None,
        doc="Accepted and ignored, so that httpd configurations can be pasted in; the "
        "modules proxympm provides are built in.",
    ),
    Declaration(
        "User", SERVER, TAKE1, cv.first, st.ignored_user, syntax="User unix-userid",
        default=None, doc="Accepted with a warning and ignored: proxympm does not switch "
        "users; start it as the user it should run as.",
    ),  # fmt: skip
    Declaration(
        "Group", SERVER, TAKE1, cv.first, st.ignored_user, syntax="Group unix-group",
        default=None, doc="Accepted with a warning and ignored, as `User`.",
    ),
    # -- MPM (mpm_event) ---------------------------------------------------
    _mpm(
        "StartServers", "3", "Child processes created at startup (at least 1).",
        field="start_servers", usage="Number of child processes launched at server startup",
    ),
    _mpm(
        "ServerLimit", "16", "Upper limit on child processes for the server's lifetime "
        "(1 to 20000); it sizes the scoreboard and cannot change on a restart.",
        field="server_limit", usage="Maximum number of child processes for this run of Apache",
    ),
    _mpm(
        "ThreadsPerChild", "25", "Worker threads in each child; capped at ThreadLimit.",
        field="threads_per_child", usage="Number of threads each child creates",
    ),
    _mpm(
        "ThreadLimit", "64", "Upper limit on ThreadsPerChild for the server's lifetime "
        "(1 to 100000); it sizes the scoreboard.",
        field="thread_limit", usage="Maximum number of worker threads per child process for "
        "this run of Apache - Upper limit for ThreadsPerChild",
    ),
    _mpm(
        "MaxRequestWorkers", "400", "Total worker threads, i.e. requests served at once; "
        "also caps active children at MaxRequestWorkers / ThreadsPerChild. Raised to "
        "ThreadsPerChild if lower, rounded down to a multiple of it (AH00513) and capped at "
        "ServerLimit x ThreadsPerChild (AH00515), each with a warning.",
        field="max_request_workers", aliases=("MaxClients",),
        usage="Maximum number of threads alive at the same time",
    ),
    _mpm(
        "MinSpareThreads", "75", "Server-wide idle worker floor: below it, children are "
        "started.", field="min_spare_threads",
        usage="Minimum number of idle threads, to handle request spikes",
    ),
    _mpm(
        "MaxSpareThreads", "250", "Server-wide idle worker ceiling: above it, one child per "
        "second is stopped gracefully. Raised to MinSpareThreads + ThreadsPerChild if lower.",
        field="max_spare_threads", usage="Maximum number of idle threads",
    ),
    _mpm(
        "MaxConnectionsPerChild", "0", "Connections (not requests) a child accepts before it "
        "stops gracefully; 0 means never.", field="max_connections_per_child",
        aliases=("MaxRequestsPerChild",), minimum=0,
        usage="Maximum number of connections a particular child serves before dying.",
    ),
    Declaration(
        "ChildCPUAffinity", SERVER, FLAG, cv.on_off, st.server("cpu_affinity"),
        syntax="ChildCPUAffinity On|Off", default="On", module="mpm_event",
        doc="Pin each child process to one CPU (child slot i on CPU i modulo the CPUs this "
        "process may use). A Python child runs its Python code on one CPU at a time anyway; "
        "pinned, its listener and worker threads stop handing the interpreter lock across "
        "CPUs, which measured here halves the CPU cost per proxied request. Turn it off "
        "where an external CPU manager assigns CPUs.",
        compat="proxympm only (nginx's worker_cpu_affinity auto is the model).",
        usage="Pin each child to one CPU",
    ),
    Declaration(
        "AsyncRequestWorkerFactor", SERVER, TAKE1, cv.worker_factor,
        st.server("async_request_worker_factor"), syntax="AsyncRequestWorkerFactor factor",
        default="2", module="mpm_event",
        doc="How many connections a child accepts per idle worker, which decides when its "
        "listener stops accepting. httpd stops accepting when a child's connections (not "
        "counting lingering closes) exceed `ThreadsPerChild + factor x idle_workers`. In "
        "proxympm, connections waiting in keep-alive or still sending their request head "
        "cost no thread, so only connections that hold a worker or wait for one count "
        "against `ThreadsPerChild + factor x idle_workers`; the total number of connections "
        "per child is capped separately by a limit derived from the file descriptor limit "
        "(RLIMIT_NOFILE less a reserve for upstream sockets and files). When the limit is "
        "reached the listener stops accepting (new connections wait in the backlog, or "
        "another child takes them) until a worker hands a connection back.",
        compat="A factor <= 0 is an error; between 0 and 1 it is raised to 1 with a warning "
        "(httpd clamps silently). The factor is used as a real number (httpd's admission "
        "check truncates it to an integer).",
        usage="How many additional connects will be accepted per idle worker thread",
    ),  # fmt: skip
    Declaration(
        "GracefulShutdownTimeout", SERVER, TAKE1,
        cv.whole_seconds(0, _NON_NEGATIVE), st.server("graceful_shutdown_timeout"),
        syntax="GracefulShutdownTimeout seconds", default="0", module="mpm_event",
        doc="After a graceful stop, how long the parent waits for children to finish before "
        "terminating them; 0 waits indefinitely.",
        usage="Maximum time in seconds to wait for child processes to complete transactions "
        "during shutdown",
    ),  # fmt: skip
    # -- connections and requests -----------------------------------------
    Declaration(
        "KeepAlive", VHOST, FLAG, cv.on_off, st.host("keepalive"),
        syntax="KeepAlive On|Off", default="On",
        doc="Whether client connections persist across requests.",
        usage="Whether persistent connections should be On or Off",
    ),
    Declaration(
        "KeepAliveTimeout", VHOST, TAKE1, cv.keepalive_timeout, st.host("keepalive_timeout"),
        syntax="KeepAliveTimeout num[ms|s|mi|h]", default="5",
        doc="How long an idle persistent connection waits for its next request; seconds "
        "unless a unit is given (`500ms`).",
        usage="Keep-Alive timeout duration (sec)",
    ),
    Declaration(
        "MaxKeepAliveRequests", VHOST, TAKE1, cv.whole_number(0, _NON_NEGATIVE),
        st.host("max_keepalive_requests"), syntax="MaxKeepAliveRequests number",
        default="100", doc="Requests per persistent connection; 0 means unlimited.",
        usage="Maximum number of Keep-Alive requests per connection, or 0 for infinite",
    ),
    Declaration(
        "Timeout", VHOST, TAKE1,
        cv.whole_seconds(1, "{name} must be at least one second"), st.host("timeout"),
        syntax="Timeout seconds", default="60",
        doc="How long to wait for the client to send or accept data once a request has "
        "started; also the default for ProxyTimeout.",
        compat="Integer seconds >= 1; httpd's atoi reads `5ms` as 5 seconds, proxympm "
        "refuses it.",
        usage="Timeout duration (sec)",
    ),  # fmt: skip
    Declaration(
        "LimitRequestLine", VHOST, TAKE1, cv.whole_number(0, _NON_NEGATIVE),
        st.host("limit_request_line"), syntax="LimitRequestLine bytes", default="8190",
        doc="Largest request line accepted; longer gets 414.",
        usage="Limit on maximum size of an HTTP request line",
    ),
    Declaration(
        "LimitRequestFields", VHOST, TAKE1, cv.whole_number(0, _NON_NEGATIVE),
        st.host("limit_request_fields"), syntax="LimitRequestFields number", default="100",
        doc="Most header fields in a request; 0 means unlimited. More gets 431.",
        usage="Limit (0 = unlimited) on max number of header fields in a request message",
    ),
    Declaration(
        "LimitRequestFieldSize", VHOST, TAKE1, cv.whole_number(0, _NON_NEGATIVE),
        st.host("limit_request_field_size"), syntax="LimitRequestFieldSize bytes",
        default="8190", doc="Largest single request header field; larger gets 431.",
        usage="Limit on maximum size of an HTTP request header field",
    ),
    Declaration(
        "LimitRequestBody", VHOST, TAKE1,
        cv.whole_number(0, "LimitRequestBody requires a non-negative integer."),
        st.host("limit_request_body"), syntax="LimitRequestBody bytes", default="1073741824",
        doc="Largest request body accepted (1 GiB by default, as httpd since 2.4.54); 0 "
        "means unlimited. Larger gets 413.",
        compat="Server and virtual host only (httpd also allows directories).",
        usage="Limit (in bytes) on maximum size of request message body",
    ),  # fmt: skip
    Declaration(
        "RequestReadTimeout", VHOST, RAW, cv.request_read_timeout, st.read_timeout,
        module="mod_reqtimeout",
        syntax="RequestReadTimeout [handshake=timeout[-maxtimeout][,MinRate=rate]] "
        "[header=...] [body=...]",
        default="handshake=0 header=20-40,MinRate=500 body=20,MinRate=500",
        doc="Deadlines for a client to send its TLS handshake, request head and request "
        "body. Each stage starts at `timeout` seconds and moves out by one second for every "
        "`rate` bytes received, up to `maxtimeout` (no cap if not given); 0 disables the "
        "stage. A client too slow for the head or body gets 408 and the connection is "
        "closed; one that never sent a byte is closed without an answer. The listener "
        "thread enforces the head and body stages, so a slow client never holds a worker; "
        "a body streamed to the backend (requestbuffering Off) is read by a worker under "
        "the same body stage (Timeout per read when it is off), and a 408 that would "
        "follow an answer the backend had already begun closes the connection instead. "
        "handshake=0 means the TLS handshake is bounded by Timeout.",
        compat="The header timer of a keep-alive connection starts with the first byte of "
        "the next request, as in mod_reqtimeout.",
        usage="Set various timeout parameters for TLS handshake and reading request "
        "headers and body",
    ),
    # -- mod_proxy ---------------------------------------------------------
    Declaration(
        "ProxyPass", LOCATION_TOO, RAW, cv.proxy_pass, st.proxy_pass, module="mod_proxy",
        syntax="ProxyPass [path] !|url [key=value ...]", default=None,
        doc="Maps requests whose path starts with `path` (on a whole segment: `/app` matches "
        "`/app` and `/app/x`, never `/apps`) to `url` plus the rest of the path; `!` "
        "excludes the path from proxying. Rules are tried in configuration order, first "
        "match wins, so list exclusions and longer paths first. Inside `<Location>` the path "
        "is omitted. The URL is `http://`, `https://` or `balancer://name/path` (see "
        "`<Proxy>`; on a balancer URL the keys are ProxySet's, plus the buffering switches), "
        "without a query. "
        "Worker keys (case-insensitive): `timeout` (integer seconds >= 1, default "
        "ProxyTimeout), `connectiontimeout` (seconds, or with a unit such as `500ms`; "
        "default `timeout`), `ttl` (seconds an idle pooled connection may be reused), `max` "
        "(concurrent requests to the backend across the whole server, all children "
        "together; more wait first come first served; 0 = no cap), `acquire` (with `max` "
        "on a plain ProxyPass: how long a request may wait for a free slot, in "
        "milliseconds or with a unit, default the worker's `timeout`; then 503 with "
        "`Retry-After`), `retry` "
        "(seconds a failed backend is skipped, default 60, 0 = always retry), `keepalive` "
        "(TCP keep-alive probes on backend sockets), `disablereuse`/`enablereuse` "
        "(no connection pooling), `requestbuffering` (On by default: the whole request "
        "body is read, in memory up to 64 KiB and then in a temp file, before the backend "
        "is contacted, so a slow upload never holds an app worker; Off streams it as it "
        "arrives), `responsebuffering` (On by default: what a slow client cannot take yet "
        "is spooled, 256 KiB in memory then a temp file up to 1 GiB, so the backend "
        "connection is freed as soon as the response is complete; Off makes the worker "
        "wait for the client), `flushpackets` (httpd's name: on or auto turn response "
        "buffering off and pass every piece of the response on as it arrives, the head "
        "at once, for server-sent events and long polls), `proxyprotocol` (`v1` or "
        "`v2`: every new connection to the backend starts with a PROXY protocol header "
        "(HAProxy's `send-proxy`/`send-proxy-v2`) carrying the client address proxympm "
        "believes (see RemoteIPHeader) and the address the client connected to; such a "
        "connection is bound to that client, so it is never pooled for another request; "
        "a backend that resets or closes it before answering refused it, as a refused "
        "connect: that address is skipped for `retry` and an idempotent request tries the "
        "next one). "
        "If the temp directory is "
        "unusable, both fall back to streaming with an error-log line. "
        "`upgrade=proto[,proto...]` or `upgrade=ANY` (httpd 2.4.47+): an HTTP/1.1 "
        "request without a body that carries `Connection: Upgrade` and an `Upgrade` "
        "naming one of these protocols is forwarded with them; a `101` from the backend "
        "that names a requested protocol is passed on and the connection becomes a "
        "tunnel relayed by the listener thread (no worker is held; idle for "
        "`ProxyWebsocketIdleTimeout` it is closed); any other answer is relayed as a "
        "normal response. A `ws://` or `wss://` URL is `http://` or `https://` that "
        "allows `upgrade=websocket` by default; its plain requests are proxied as usual "
        "(httpd's ProxyWebsocketFallbackToProxyHttp On).",
        compat="`requestbuffering`/`responsebuffering` are proxympm's (nginx's "
        "proxy_request_buffering/proxy_buffering); httpd streams both ways. httpd "
        "documents `flushpackets` for AJP and FastCGI only; here it applies to HTTP. "
        "`upgrade=NONE` (mod_proxy_wstunnel's forced upgrade) is refused. "
        "Any other httpd key is refused by name (`ping`, `acquire`, `min`, ...); an "
        "unknown key is httpd's 'unknown Worker parameter'. `timeout=5ms` is refused where "
        "httpd reads 5 seconds. The flags `nocanon`, `interpolate`, `noquery` and the `~` "
        "regex form are not supported. httpd's `max` sizes a per-child connection pool; "
        "proxympm's caps requests server-wide (what an app server with N workers needs). "
        "Two routes to the same backend origin share one cap (the first route's `max`). "
        "A plain ProxyPass worker's error state (`retry`) is server-wide, as httpd keeps "
        "it in shared memory: once any child finds the backend refusing connections, every "
        "child answers 503 without trying it until `retry` seconds are over (routes to "
        "the same backend origin share it). With several addresses for the name, an "
        "address that refuses is tried last for `retry` seconds by every child (the "
        "request goes on to the next address; the list of such addresses is shared "
        "too); the backend goes into error state when all of them refuse.",
        usage="a virtual path and a URL",
    ),  # fmt: skip
    Declaration(
        "ProxyPassReverse", LOCATION_TOO, RAW, cv.proxy_pass_reverse,
        st.proxy_pass_reverse, module="mod_proxy",
        syntax="ProxyPassReverse [path] url", default=None,
        doc="Rewrites `Location`, `Content-Location` and `URI` response headers that start "
        "with `url` so that they start with `path` on this server. Inside `<Location>` the "
        "path is omitted.",
        compat="Rules given in a `<Location>` apply to every response of the host.",
        usage="a virtual path and a URL for reverse proxy behaviour",
    ),  # fmt: skip
    Declaration(
        "Proxy", VHOST, TAKE1, cv.proxy_section, st.proxy_section, module="mod_proxy",
        syntax="<Proxy balancer://name> ... </Proxy>", default=None, section=True,
        doc="A load balancer: `BalancerMember` lines name its members and `ProxySet` its "
        "parameters; `ProxyPass /path balancer://name/...` sends requests to it. A "
        "request goes to a member chosen by `lbmethod` among the usable members of the "
        "lowest `lbset`; hot standbys (`status=+H`) of a set are used only when no other "
        "member of that set is usable. A member that refuses connections or times out "
        "connecting (with `failontimeout=On` also one that times out answering, and one "
        "that answers a `failonstatus` code) is skipped for its `retry` seconds. A request "
        "whose member failed before anything was sent (connect refused or timed out) "
        "goes to another member, whatever its method; a GET, HEAD, OPTIONS, TRACE, PUT or "
        "DELETE with a buffered body also fails over when the member failed before its "
        "response began; a request whose bytes went out is otherwise never sent again. "
        "With every member in error, or no member free before the queue `timeout`, the "
        "client gets 503 with `Retry-After` (with `forcerecovery=On`, the default, a "
        "request that finds every member in error first clears their error state and "
        "tries again, as httpd does). Member state (error state, requests in flight, "
        "`max`, the queue, byrequests credit, traffic and latency, health-check results) "
        "is in shared memory: one view for all children and the watchdog.",
        compat="Only `balancer://` URLs (no `<Proxy *>` or worker sections). Balancer "
        "names are server-wide, also when declared in a `<VirtualHost>`. No "
        "balancer-manager; a balancer with no members answers 503. During a graceful "
        "restart the old and new generations count `max` separately (error and health "
        "state carry over).",
        usage="Container for directives affecting resources located in the proxied "
        "location",
    ),  # fmt: skip
    Declaration(
        "BalancerMember", VHOST | Context.PROXY, RAW, cv.balancer_member,
        st.balancer_member, module="mod_proxy",
        syntax="BalancerMember [balancer://name] url [key=value ...]", default=None,
        doc="Adds a member (an `http://` or `https://` URL; a trailing `/` is dropped) to "
        "the balancer of the enclosing `<Proxy>`, or to the one named first when outside. "
        "The request path is the member URL's path followed by what the balancer URL of "
        "the ProxyPass makes of it. Keys: those of ProxyPass (`timeout`, "
        "`connectiontimeout`, `ttl`, `retry`, `keepalive`, `disablereuse`/`enablereuse`, "
        "`proxyprotocol`) "
        "and `loadfactor` (weight 1-100, default 1), `lbset` (0-99, default 0: lower sets "
        "are used first), `status` (`+H` hot standby, `+D` disabled, `+S` stopped, `+I` "
        "ignore errors: never put in error state; `+R` hot spare: stands in for a member "
        "of its lbset that is not usable; `+N` draining: only sticky sessions routed to "
        "it; `-X` clears a flag), `route` (the sticky-session route that names this "
        "member, see ProxySet `stickysession`), `max`: at most that many requests to the "
        "member at once across the whole server (all children together); more wait, "
        "first come first served across children, up to the balancer's `timeout`, for "
        "this member or another one of the same set; a client that hangs up while "
        "waiting leaves the queue. Active health checks (mod_proxy_hcheck, run once for "
        "the whole server by the watchdog process): `hcmethod` (`TCP`: connect only; "
        "`GET`, `HEAD`, `OPTIONS`: an HTTP request; default none: no checks), `hcuri` "
        "(appended to the member URL's path), `hcinterval` (default 30 s; units allowed, "
        "e.g. `500ms`), `hcfails` (failed checks in a row that take the member out, "
        "default 1), `hcpasses` (good checks in a row that bring it back, default 1), "
        "`hcexpr` (a `ProxyHCExpr` name; without it a check passes on 2xx/3xx). "
        "The watchdog resolves the member's name as the children do (the same "
        "ProxyDNSServers, TTLs and SRV handling) and checks every address it stands for "
        "(each A/AAAA record, each SRV target) each interval: an address that fails "
        "`hcfails` checks in a row is left out of every child's rotation (no request "
        "is sent to it) until it passes `hcpasses` in a row; the member itself is taken "
        "out when none of its addresses passes (if every address is out but the member "
        "is still used, all are tried). An `https://` member is checked with the TLS "
        "settings its requests use (SSLProxyVerify, SSLProxyCACertificateFile, "
        "SSLProxyCheckPeerName, SSLProxyMachineCertificateFile ... of the first host, "
        "main server first, with a ProxyPass to the balancer) and the member URL's host "
        "as the TLS server name: a certificate a request would refuse fails the check "
        "(last result -4 in the log).",
        compat="`requestbuffering`/`responsebuffering`/`flushpackets` belong on the "
        "ProxyPass line. Status flags `E` and `C` are refused (they are states here, not "
        "settings). A waiting request holds no thread (as in HAProxy, not httpd, where it "
        "would hold its worker): it waits in its child's listener, so requests to other "
        "backends go on meanwhile; the queue holds up to the server's connection "
        "capacity (at most 65,536 per balancer). No "
        "`hctemplate`. httpd checks a member's one address as its connection would "
        "find it; proxympm checks each address of the name, since requests rotate over "
        "them all. The addresses taken out are a 1 KiB list per member in shared memory "
        "(at least 22 IPv6 or 46 IPv4 addresses); beyond it they are logged and stay in "
        "use. Under ProxyPreserveHost a request sends the client's Host as TLS server "
        "name; a check sends the member's.",
        usage="A balancer name and scheme with list of params",
    ),  # fmt: skip
    Declaration(
        "ProxyHCExpr", VHOST, RAW, cv.hc_expr, st.hc_expr, module="mod_proxy_hcheck",
        syntax="ProxyHCExpr name {expression}", default=None,
        doc="Names a condition on a health check's response, for a BalancerMember's "
        "`hcexpr=name`: the check passes when it holds (without `hcexpr`: when the "
        "status is 2xx or 3xx). proxympm's subset of httpd's expressions: "
        "`%{REQUEST_STATUS}` compared with a number (`==`, `!=`, `<`, `<=`, `>`, `>=`, "
        "`-eq`, `-ne`, `-lt`, `-le`, `-gt`, `-ge`) or matched with `=~ /regex/` or "
        "`!~ /regex/`, each optionally negated with `!`, joined by `&&` and `||` (`&&` "
        "binds tighter; no parentheses). Example: "
        "`ProxyHCExpr ok234 {%{REQUEST_STATUS} =~ /^[234]/}`.",
        compat="Only `%{REQUEST_STATUS}`: no `hc('body')`, other variables, functions "
        "or parentheses (refused with a message). Names are server-wide.",
        usage="Define a health check condition ruleset expression",
    ),  # fmt: skip
    Declaration(
        "ProxySet", VHOST | Context.PROXY, RAW, cv.proxy_set, st.proxy_set,
        module="mod_proxy", syntax="ProxySet [balancer://name] key=value ...",
        default=None,
        doc="Balancer parameters (also accepted on the balancer's ProxyPass line, the later "
        "one winning): `lbmethod` (`byrequests`: smooth weighted round robin by "
        "`loadfactor`, the default; `bytraffic`: fewest bytes sent and read per unit of "
        "weight; `bybusyness`: fewest requests in flight, ties by "
        "weighted round robin; `p2c`: power of two random choices; `peakewma`: two "
        "random choices compared by latency x load, see below), `timeout` "
        "(seconds a request may wait for a member under its `max`; default 0: no wait, "
        "503 at once), `maxattempts` (failovers per request; default members - 1, at "
        "least 1), `nofailover` (On: never fail over), `failonstatus` (comma list of "
        "statuses that put the member in error; the response still goes to the client), "
        "`failontimeout` (On: a member that does not answer within its `timeout` goes in "
        "error), `forcerecovery` (On by default: when every member is in error state, "
        "clear it and try them; Off: 503), `stickysession` (`COOKIE` or `COOKIE|param`: "
        "the session id in that cookie, or in a `param=` URL parameter, which wins, ends "
        "in `.route`, and the request goes to the member with that `route`; if it is not "
        "usable the request goes elsewhere, unless `nofailover=On`: then 503), "
        "`stickysessionsep` (default `.`; `Off`: the whole value is the route), "
        "`scolonpathdelim` (On: `;` also ends the URL parameter's value). "
        "`p2c` samples two members at random (weighted by `loadfactor`) and takes "
        "the one with fewer requests in flight per unit of weight: nearly as good as "
        "`bybusyness` at spreading load, but many choosers acting on the same counts "
        "at once do not all pile onto the one idlest member. `peakewma` samples two "
        "the same way and takes the one with the lower latency x (in flight + 1) / "
        "weight, where latency is a moving average of the time to the response head that "
        "jumps up at once on a slow answer and decays over ~10 s: load moves away from a "
        "member that is slow right now before its queue grows (Finagle's and Linkerd's "
        "method).",
        compat="Worker URLs (`ProxySet http://...`) are refused: set worker keys on "
        "ProxyPass or BalancerMember. `p2c` and `peakewma` are proxympm's. `heartbeat`, "
        "`growth` and `nonce` are not supported. Routes are not added to cookies: the "
        "application sets its session id with the route suffix, as with httpd.",
        usage="A balancer or worker name with list of params",
    ),  # fmt: skip
    Declaration(
        "ProxyPassInherit", VHOST, FLAG, cv.on_off, st.proxy_pass_inherit, module="mod_proxy",
        syntax="ProxyPassInherit On|Off", default="On",
        doc="Whether a virtual host also uses the main server's ProxyPass rules (and "
        "Locations), which are tried before its own, as in httpd. Set it in the vhost.",
        usage="Inherit ProxyPass directives defined from the main server",
    ),  # fmt: skip
    Declaration(
        "ProxyPreserveHost", VHOST, FLAG, cv.on_off, st.host("preserve_host"),
        module="mod_proxy", syntax="ProxyPreserveHost On|Off", default="Off",
        doc="On: send the client's Host header upstream (and use it as TLS SNI to https "
        "backends). Off: Host is the backend URL's host[:port].",
        compat="Server and virtual host only (httpd also allows directories).",
        usage="on if we should preserve host header while proxying",
    ),  # fmt: skip
    Declaration(
        "ProxyTimeout", VHOST, TAKE1,
        cv.whole_seconds(1, "Proxy Timeout must be at least 1 second."),
        st.host("proxy_timeout"), module="mod_proxy", syntax="ProxyTimeout seconds",
        default=None, doc="Default `timeout` of backend connections; unset, `Timeout` is used.",
        usage="Set the timeout (in seconds) for a proxied connection. This overrides the "
        "server timeout",
    ),  # fmt: skip
    Declaration(
        "ProxyWebsocketIdleTimeout", VHOST, TAKE1, cv.websocket_idle_timeout,
        st.host("websocket_idle_timeout"), module="mod_proxy_wstunnel",
        syntax="ProxyWebsocketIdleTimeout num[ms]", default="0",
        doc="How long an upgraded connection (a WebSocket or any other `upgrade=` tunnel) "
        "may stay silent in both directions before proxympm closes it. 0 (the default) "
        "uses the larger of `Timeout` and the route's backend timeout (`timeout=`, else "
        "`ProxyTimeout`), as httpd's mod_proxy_http tunnels do.",
        compat="In httpd 2.4.47+ this mod_proxy_wstunnel directive only applies when "
        "`ProxyWebsocketFallbackToProxyHttp Off`; proxympm has one tunnel implementation "
        "and always honours it.",
        usage="timeout for activity in either direction, unlimited by default",
    ),  # fmt: skip
    Declaration(
        "ProxyWebsocketFallbackToProxyHttp", VHOST, FLAG, cv.on_off, st.nothing,
        module="mod_proxy_wstunnel", syntax="ProxyWebsocketFallbackToProxyHttp On|Off",
        default="On",
        doc="Accepted so that httpd configurations load; proxympm has one upgrade "
        "implementation (mod_proxy_http's, httpd 2.4.47+), used either way.",
        compat="With Off, httpd hands `ws://`/`wss://` to the older mod_proxy_wstunnel; "
        "the visible behaviour is the same.",
        usage="whether to let mod_proxy_http handle the upgrade and tunneling of "
        "websockets",
    ),  # fmt: skip
    Declaration(
        "ProxyAddHeaders", VHOST, FLAG, cv.on_off, st.host("add_headers"), module="mod_proxy",
        syntax="ProxyAddHeaders On|Off", default="On",
        doc="Add X-Forwarded-For, X-Forwarded-Host and X-Forwarded-Server to proxied "
        "requests.", usage="on if X-Forwarded-* headers should be added or completed",
    ),  # fmt: skip
    Declaration(
        "ProxyVia", VHOST, TAKE1,
        cv.one_of("off", "on", "full", "block",
                  complaint="ProxyVia must be one of: off | on | full | block"),
        st.host("via"), module="mod_proxy", syntax="ProxyVia Off|On|Full|Block",
        default="Off",
        doc="On: add a `Via` header to requests and responses; Full: with the server "
        "version; Block: remove `Via` from requests; Off: pass it through.",
        usage="Configure Via: proxy header header to one of: on | off | block | full",
    ),  # fmt: skip
    Declaration(
        "ProxyRequests", VHOST, FLAG, cv.proxy_requests, st.nothing, module="mod_proxy",
        syntax="ProxyRequests Off", default="Off",
        doc="Forward proxying. Only `Off` is accepted: proxympm is a reverse proxy.",
        usage="on if the true proxy requests should be accepted",
    ),
    # -- mod_proxy: upstream name resolution (proxympm's) -------------------
    Declaration(
        "ProxyDNSServers", SERVER, ITERATE, cv.dns_servers, st.server("dns_servers"),
        module="mod_proxy", syntax="ProxyDNSServers ip[:port] [ip[:port]] ...",
        default=None,
        doc="Name servers used to resolve the host names of ProxyPass and BalancerMember "
        "URLs (IPv6 in brackets when a port is given: `127.0.0.1:5353 [::1]:53`; port 53 "
        "by default), asked in order. Unset, the system's `/etc/resolv.conf` gives them "
        "(with its search domains). Either way `/etc/hosts` is read first, as getaddrinfo "
        "does; an SRV name is asked as written (give it in full). Names are resolved with "
        "aiodns by "
        "a background thread in each child, never on a request's path: A and AAAA records "
        "together, each answer kept for its TTL bounded by ProxyDNSTTLFloor and "
        "ProxyDNSTTLCeiling, then asked again. A name with several addresses spreads "
        "requests over all of them (round robin per request, each address with its own "
        "pool of kept-alive connections; an address that refuses a connection is tried "
        "last, by every child, for the worker's `retry` seconds, and the next one is "
        "tried at once). When an address "
        "disappears from the answer, its idle pooled connections are closed and requests "
        "in flight on it finish normally. A failed lookup (timeout, SERVFAIL, refused, "
        "name server down) keeps the last good answer, is logged once, and is retried "
        "after the floor, doubling up to 30 s (and the ceiling); its recovery is logged "
        "too. NXDOMAIN or an empty answer means the name is gone: the last good "
        "addresses are still used until they are older than the ceiling, then dropped, "
        "and requests get 503. "
        "At startup a child waits up to 5 s for the first answers; a name that does not "
        "resolve then does not stop the server (as in httpd; nginx refuses to start): it "
        "is logged (AH00898), requests for it get 503, and it is retried in the "
        "background. "
        "SRV: a URL whose host is an SRV name, with the key `srv=on` "
        "(`BalancerMember http://_http._tcp.app.default.svc.cluster.local srv=on`, no "
        "port), takes hosts and ports from the SRV records: the lowest priority whose "
        "addresses are reachable is used, spread by the records' weights (smooth "
        "weighted round robin; weight 0 only when the whole priority has weight 0); "
        "the targets' A/AAAA records come from the answer's additional section when "
        "present, else from their own lookups. `Host` and TLS SNI are the name without "
        "its `_service._proto.` labels (`app.default.svc.cluster.local`), so a "
        "Kubernetes headless Service can be a balancer.",
        compat="proxympm's. httpd resolves a worker's name once per child (`addressttl` "
        "bounds that since 2.4.59); nginx's `resolver ... valid=` and `server ... resolve "
        "service=` and HAProxy's `resolvers` section and `server-template` do what this "
        "does.",
        usage="Name servers for upstream host names",
    ),  # fmt: skip
    Declaration(
        "ProxyDNSTTLFloor", SERVER, TAKE1, cv.dns_ttl, st.dns_ttl, module="mod_proxy",
        syntax="ProxyDNSTTLFloor seconds[ms|s|mi|h]", default="1",
        doc="An answer for an upstream name is kept at least this long before it is asked "
        "again, whatever its TTL (at least 1 s), so that TTL 0 records (some service "
        "registries use them) cannot make every child ask many times a second. Also the "
        "first retry delay after a failed lookup. The default, 1 s, is HAProxy's "
        "default resolution interval (`timeout resolve 1s`).",
        compat="proxympm's; nginx's `resolver ... valid=` replaces the TTL with one "
        "value, where proxympm bounds it on both sides.",
        usage="Least time a DNS answer for an upstream name is used",
    ),  # fmt: skip
    Declaration(
        "ProxyDNSTTLCeiling", SERVER, TAKE1, cv.dns_ttl, st.dns_ttl, module="mod_proxy",
        syntax="ProxyDNSTTLCeiling seconds[ms|s|mi|h]", default="60",
        doc="An answer for an upstream name is asked again after at most this long, "
        "whatever its TTL, so that a long TTL cannot keep a moved backend out of use for "
        "hours; also how long the last good addresses of a name that became NXDOMAIN are "
        "still used. Must not be below ProxyDNSTTLFloor. The default, 60 s, is the "
        "longest TTL commonly advised for records of moving backends.",
        compat="proxympm's (HAProxy's `hold valid`, default 10 s, plays a similar role).",
        usage="Longest time a DNS answer for an upstream name is used",
    ),  # fmt: skip
    Declaration(
        "ProxyAddForwarded", VHOST, FLAG, cv.on_off, st.host("add_forwarded"),
        module="mod_proxy", syntax="ProxyAddForwarded On|Off", default="Off",
        doc="Also send the RFC 7239 `Forwarded` header to backends, beside X-Forwarded-*: "
        "`for` (an IPv6 address in brackets and quotes, a port in quotes), `proto`, and "
        "`host` when the request had one. An incoming `Forwarded` is kept, and ours "
        "appended to it, only when the peer is a RemoteIPTrustedProxy or "
        "RemoteIPInternalProxy; then `for` is that peer, the next hop of the chain. From "
        "any other peer the incoming header is dropped and `for` is the client address "
        "proxympm believes (after RemoteIPHeader), with its port when it is the "
        "connection's own.",
        compat="proxympm only; httpd has no Forwarded support (HAProxy 2.9's "
        "`option forwarded` is the model).",
        usage="on if the RFC 7239 Forwarded header should be added",
    ),  # fmt: skip
    # -- mod_headers -------------------------------------------------------
    Declaration(
        "Header", LOCATION_TOO, RAW, hr.header, st.header_rule, module="mod_headers",
        syntax="Header [always|onsuccess] set|append|merge|add|setifempty|unset|edit|edit*|"
        "echo header [value] [replacement] [early|env=[!]variable]", default=None,
        doc="Changes response headers. `set` replaces, `setifempty` sets only when absent, "
        "`append` adds `, value` to the first one (or sets it), `merge` appends unless the "
        "value is already one of its comma-separated elements, `add` adds another field, "
        "`unset` removes every one, `edit`/`edit*` replace the first/every match of a "
        "regular expression in each value (`$0`-`$9` and `&` in the replacement), `echo` "
        "copies request headers whose name matches a regular expression. Values may "
        "hold `%%`, `%t` (`t=` microseconds since the epoch at request start), `%D` "
        "(`D=` microseconds since then) and `%{VAR}e` (the request environment: `HTTPS` "
        "is `on` for TLS requests, `REMOTE_ADDR` is the believed client address). "
        "`env=VAR` (`env=!VAR`) applies the rule only if VAR is (is not) set. Rules apply "
        "in httpd's merge order: the main server's, the virtual host's, then every "
        "`<Location>` whose path is a prefix of the request path, in configuration order "
        "(the main server's Locations first). As in httpd, the default condition "
        "(`onsuccess`) works on the response's own headers (the backend's, for a proxied "
        "response of any status), while `always` rules work on a separate table that is "
        "added to every response, proxympm's own error responses (404, 502, 503, 504, "
        "400...) included, which get only the `always` rules: so `Header always unset` "
        "cannot remove a backend's header, and `Header always set` beside a backend's "
        "field of the same name sends both.",
        compat="The `note` action, `expr=` values and conditions, and the format "
        "specifiers `%l`, `%i`, `%b` and `%{VAR}s` are refused. Rules on Content-Length, "
        "Transfer-Encoding, Connection and the other hop-by-hop fields are refused "
        "(proxympm writes those itself). `early` is accepted in server and virtual host "
        "context and applies the rule before the others. Regular expressions are "
        "Python's, not PCRE. Values with CR, LF or NUL are refused at load time.",
        usage="an optional condition, an action, header and value followed by optional "
        "env clause",
    ),  # fmt: skip
    Declaration(
        "RequestHeader", LOCATION_TOO, RAW, hr.request_header, st.header_rule,
        module="mod_headers",
        syntax="RequestHeader set|append|merge|add|setifempty|unset|edit|edit* header "
        "[value] [replacement] [early|env=[!]variable]", default=None,
        doc="Changes the request headers before the request goes to the backend, with "
        "Header's actions (not `echo`), formats and merge order. proxympm adds its own "
        "X-Forwarded-For (appended to what the rules left), X-Forwarded-Host, "
        "X-Forwarded-Server, Via and Forwarded afterwards, as mod_proxy does. An "
        "X-Forwarded-Proto made by `RequestHeader set`, `add` or `setifempty` (where the "
        "client sent none) is sent instead of proxympm's own; a client's is always "
        "replaced, also when a rule only edited or appended to it. The access log's "
        "`%{...}i` shows the request as the rules left it, as in httpd.",
        compat="Host and the framing fields are proxympm's to write: rules on Host do not "
        "change the Host sent upstream; rules on framing and hop-by-hop fields are "
        "refused. Otherwise as Header.",
        usage="an action, header and value followed by optional env clause",
    ),  # fmt: skip
    # -- mod_remoteip ------------------------------------------------------
    Declaration(
        "RemoteIPHeader", VHOST, TAKE1, rip.header_name, st.host("remote_ip_header"),
        module="mod_remoteip", syntax="RemoteIPHeader header-field", default=None,
        doc="The header (usually X-Forwarded-For) that carries the client address from "
        "trusted proxies. It is read right to left: while the address it came from (the "
        "peer first) is a RemoteIPTrustedProxy or RemoteIPInternalProxy, the rightmost "
        "address is believed and removed; the walk stops at the first untrusted hop or "
        "unparsable entry. An address presented by a trusted (not internal) proxy must be "
        "public: private, loopback and link-local IPv4 and any IPv6 outside 2000::/3 "
        "stop the walk; internal proxies may present any address. What is left of the "
        "header goes to the backend (removed when empty), and X-Forwarded-For gets the "
        "believed address appended. With no proxy list at all, every peer is trusted "
        "(httpd's behaviour; set a list). The believed address is the access log's `%a` "
        "and `%h` (`%{c}a`/`%{c}h`: the peer), the error log's client, and what address "
        "checks use.",
        compat="Hop by hop, an internal proxy presented by a trusted one is treated as "
        "trusted (httpd 2.4.3x).",
        usage="Specifies a request header to trust as the client IP, e.g. X-Forwarded-For",
    ),  # fmt: skip
    Declaration(
        "RemoteIPProxiesHeader", VHOST, TAKE1, rip.header_name,
        st.host("remote_ip_proxies_header"), module="mod_remoteip",
        syntax="RemoteIPProxiesHeader header-field", default=None,
        doc="When RemoteIPHeader believed a client through trusted (not internal) "
        "proxies, their addresses, in the order the walk met them, are sent to the "
        "backend in this header (e.g. X-Forwarded-By), replacing a client's field of that "
        "name; otherwise the field is left as it came, as in httpd.",
        usage="Specifies a request header to record proxy IP's",
    ),  # fmt: skip
    Declaration(
        "RemoteIPTrustedProxy", VHOST, ITERATE, rip.proxies, st.remote_ip_proxies(False),
        module="mod_remoteip", syntax="RemoteIPTrustedProxy address[/prefix] ...",
        default=None,
        doc="Peers whose RemoteIPHeader is believed, when they present a public address. "
        "Lines add up; a virtual host with none of its own uses the main server's list.",
        compat="Addresses and networks only; host names are refused.",
        usage="Specifies one or more proxies which are trusted to present IP headers",
    ),  # fmt: skip
    Declaration(
        "RemoteIPInternalProxy", VHOST, ITERATE, rip.proxies, st.remote_ip_proxies(True),
        module="mod_remoteip", syntax="RemoteIPInternalProxy address[/prefix] ...",
        default=None,
        doc="As RemoteIPTrustedProxy, for proxies on the internal network, which may "
        "present private addresses too.",
        compat="Addresses and networks only; host names are refused.",
        usage="Specifies one or more internal (transparent) proxies which are trusted to "
        "present IP headers",
    ),  # fmt: skip
    Declaration(
        "RemoteIPTrustedProxyList", VHOST, TAKE1, rip.proxy_list,
        st.remote_ip_proxies(False), module="mod_remoteip",
        syntax="RemoteIPTrustedProxyList filename", default=None,
        doc="RemoteIPTrustedProxy addresses read from a file (relative to ServerRoot), "
        "whitespace-separated, `#` comments.",
        usage="The filename to read the list of trusted proxies, see the RemoteIPTrustedProxy "
        "directive",
    ),  # fmt: skip
    Declaration(
        "RemoteIPInternalProxyList", VHOST, TAKE1, rip.proxy_list,
        st.remote_ip_proxies(True), module="mod_remoteip",
        syntax="RemoteIPInternalProxyList filename", default=None,
        doc="RemoteIPInternalProxy addresses read from a file, as RemoteIPTrustedProxyList.",
        usage="The filename to read the list of internal proxies, see the "
        "RemoteIPInternalProxy directive",
    ),  # fmt: skip
    Declaration(
        "RemoteIPProxyProtocol", VHOST, FLAG, cv.on_off, st.host("proxy_protocol"),
        module="mod_remoteip", syntax="RemoteIPProxyProtocol On|Off", default="Off",
        doc="Every connection to an address this host answers on (all addresses, in the "
        "main server) must start with a PROXY protocol header, version 1 (text) or 2 "
        "(binary), as sent by HAProxy's `send-proxy`/`send-proxy-v2` or an L4 load "
        "balancer. It is read before the TLS handshake, by the listener thread, within "
        "the RequestReadTimeout header stage's first timeout (Timeout when that stage is "
        "off). The source address it carries becomes the connection's client address "
        "(`%a`, `%{c}a`, X-Forwarded-For, RemoteIPHeader's first hop); a `LOCAL` or "
        "`UNKNOWN` header keeps the real peer. A connection without a valid header is "
        "closed with an error-log line (AH03507); other connections are not affected.",
        compat="As httpd 2.4.31+: on one address, one host with it on turns it on for "
        "all. TLVs of version 2 are skipped.",
        usage="Enable PROXY protocol handling (On, Off)",
    ),  # fmt: skip
    Declaration(
        "RemoteIPProxyProtocolExceptions", VHOST, ITERATE, rip.proxies,
        st.proxy_protocol_exceptions, module="mod_remoteip",
        syntax="RemoteIPProxyProtocolExceptions address[/prefix] ...", default=None,
        doc="Peers that connect without a PROXY header where RemoteIPProxyProtocol requires "
        "one (monitoring, local health checks): their connections are read as plain "
        "HTTP (or TLS) and keep their own address.",
        compat="Addresses and networks only; host names are refused.",
        usage="Specifies one or more host names or IP addresses or ranges that are "
        "exempt from the PROXY protocol",
    ),  # fmt: skip
    # -- logging -----------------------------------------------------------
    Declaration(
        "ErrorLog", VHOST, TAKE1, cv.error_log, st.host("error_log"),
        syntax='ErrorLog file-path|"|command"|syslog[:facility]', default="logs/error_log",
        doc="Where error messages go; relative to ServerRoot. A vhost without one uses the "
        "main server's.", usage="The filename of the error log",
    ),  # fmt: skip
    Declaration(
        "LogLevel", VHOST, ITERATE, cv.log_levels, st.log_level,
        syntax="LogLevel [module:]level [module:level] ...", default="warn",
        doc="Error log verbosity: emerg, alert, crit, error, warn, notice, info, debug, "
        "trace1 ... trace8; `module:level` sets one module (`ssl`, `mod_ssl.c` and "
        "`ssl_module` are the same).",
        compat="In a `<VirtualHost>` it is checked, then ignored with a warning: the "
        "server-wide level applies. A level for a module proxympm does not have is ignored "
        "with a warning.",
        usage="The level of error log messages",
    ),  # fmt: skip
    Declaration(
        "LogFormat", VHOST, TAKE12, cv.log_format, st.log_format, module="mod_log_config",
        syntax="LogFormat format [nickname]", default=None,
        doc="With a nickname, names a format for CustomLog; without, sets the format of "
        "TransferLog. `common` and `combined` are predefined. A vhost sees the main "
        "server's nicknames.",
        usage="a log format string (see docs) and an optional format name",
    ),  # fmt: skip
    Declaration(
        "CustomLog", VHOST, TAKE23, cv.custom_log, st.custom_log, module="mod_log_config",
        syntax='CustomLog file-path|"|command" format|nickname', default=None,
        doc="An access log: a file (relative to ServerRoot) or a piped command, with a "
        "format string or a LogFormat nickname. A vhost with no access log of its own uses "
        "the main server's.",
        compat="`env=` and `expr=` conditions are not supported.",
        usage='a file name, a custom log format string or format name, and an optional '
        '"env=" or "expr=" clause (see docs)',
    ),  # fmt: skip
    Declaration(
        "TransferLog", VHOST, TAKE1, cv.transfer_log, st.transfer_log,
        module="mod_log_config", syntax='TransferLog file-path|"|command"', default=None,
        doc="An access log in the format of the last LogFormat without nickname, else the "
        "Common Log Format.", usage="the filename of the access log",
    ),  # fmt: skip
    # -- mod_ssl -----------------------------------------------------------
    Declaration(
        "SSLEngine", VHOST, TAKE1, cv.ssl_engine, st.tls("engine"), module="mod_ssl",
        syntax="SSLEngine on|off", default="off",
        doc="TLS on the client side of this (virtual) server. Needs SSLCertificateFile.",
        compat="`optional` (RFC 2817 upgrade) is not supported.",
        usage="SSL switch for the protocol engine ('on', 'off')",
    ),
    Declaration(
        "SSLCertificateFile", VHOST, TAKE1, cv.existing_file,
        st.certificate("certificate_file"), module="mod_ssl",
        syntax="SSLCertificateFile file-path", default=None,
        doc="PEM certificate, optionally followed by its chain (and the key). Relative to "
        "ServerRoot; must exist and not be empty.",
        compat="One certificate per host (httpd allows an RSA and an ECDSA pair); no PKCS#11.",
        usage="SSL Server Certificate file ('/path/to/file' - PEM or DER encoded)",
    ),  # fmt: skip
    Declaration(
        "SSLCertificateKeyFile", VHOST, TAKE1, cv.existing_file,
        st.certificate("certificate_key_file"), module="mod_ssl",
        syntax="SSLCertificateKeyFile file-path", default=None,
        doc="PEM private key of the certificate, if not in SSLCertificateFile.",
        usage="SSL Server Private Key file ('/path/to/file' - PEM or DER encoded)",
    ),
    Declaration(
        "SSLProtocol", VHOST, ITERATE, cv.ssl_protocols, st.tls("protocols"),
        module="mod_ssl", syntax="SSLProtocol [+|-]protocol ...", default="all -SSLv3",
        doc="Protocols offered to clients: `TLSv1.2`, `TLSv1.3` or `all` (both), each "
        "optionally prefixed with `+` (add) or `-` (remove); a word without a prefix "
        "replaces what came before.",
        compat="Asking for SSLv3, TLSv1 or TLSv1.1 (bare or with `+`) is an error: "
        "Python's OpenSSL refuses them. `all` means TLSv1.2 and TLSv1.3.",
        usage="Enable or disable various SSL protocols ('[+-][TLSv1[.n]] ...' - see manual)",
    ),  # fmt: skip
    Declaration(
        "SSLCipherSuite", VHOST, TAKE12, cv.cipher_suite, st.tls("cipher_suite"),
        module="mod_ssl", syntax="SSLCipherSuite [SSL] cipher-spec", default=None,
        doc="OpenSSL cipher string for TLSv1.2 and below; unset, the TLSv1.2 suites of "
        "Mozilla's intermediate profile (ECDHE with AES-GCM or ChaCha20-Poly1305).",
        compat="The `TLSv1.3` form is refused: Python cannot choose TLSv1.3 suites. httpd's "
        "default is OpenSSL's, which also enables CBC suites.",
        usage="Colon-delimited list of permitted SSL Ciphers ('XXX:...:XXX' - see manual)",
    ),  # fmt: skip
    Declaration(
        "SSLHonorCipherOrder", VHOST, FLAG, cv.on_off, st.tls("honor_cipher_order"),
        module="mod_ssl", syntax="SSLHonorCipherOrder on|off", default="off",
        doc="Prefer the server's cipher order to the client's.",
        usage="Use the server's cipher ordering preference",
    ),
    Declaration(
        "SSLSessionTickets", VHOST, FLAG, cv.on_off, st.tls("session_tickets"),
        module="mod_ssl", syntax="SSLSessionTickets on|off", default="on",
        doc="Offer TLS session tickets (RFC 5077) to clients.",
        usage="Enable or disable TLS session tickets",
    ),
    # -- mod_ssl, proxy side (TLS to https:// backends) --------------------
    Declaration(
        "SSLProxyEngine", VHOST, FLAG, cv.on_off, st.proxy_tls("engine"), module="mod_ssl",
        syntax="SSLProxyEngine on|off", default="off",
        doc="TLS to `https://` backends of this (virtual) server. A vhost that does not set "
        "it takes the main server's value, as every SSLProxy* directive.",
        compat="A `ProxyPass` to an `https://` URL in a host where this is off is a "
        "configuration error at that ProxyPass line (httpd starts, then answers 500 with "
        "AH00961 at request time).",
        usage="SSL switch for the proxy protocol engine ('on', 'off')",
    ),  # fmt: skip
    Declaration(
        "SSLProxyVerify", VHOST, TAKE1, cv.ssl_proxy_verify, st.proxy_tls("verify"),
        module="mod_ssl", syntax="SSLProxyVerify none|require", default="require",
        doc="Whether the backend's certificate must be valid: `require` checks its chain "
        "against SSLProxyCACertificateFile (else the system's trust store) and, with "
        "SSLProxyCheckPeerName on, its name; `none` accepts any certificate and checks no "
        "name.",
        compat="**The default is `require`, where httpd's is `none`**: an unverified "
        "backend connection is open to interception, so proxympm makes skipping the check "
        "an explicit choice. `optional` and `optional_no_ca` are refused (httpd's docs say "
        "they make no sense for backends). With `none`, SSLProxyCheckPeerName is not "
        "applied (httpd still compares the name of the unverified certificate).",
        usage="SSL Proxy: whether to verify the remote certificate ('on' or 'off')",
    ),  # fmt: skip
    Declaration(
        "SSLProxyCACertificateFile", VHOST, TAKE1, cv.existing_file,
        st.proxy_tls("ca_certificate_file"), module="mod_ssl",
        syntax="SSLProxyCACertificateFile file-path", default=None,
        doc="PEM file of the certificate authorities that backend certificates are verified "
        "against (relative to ServerRoot; must exist and not be empty). Unset, the "
        "system's default trust store is used.",
        usage="SSL Proxy: file containing server certificates ('/path/to/file' - PEM "
        "encoded)",
    ),  # fmt: skip
    Declaration(
        "SSLProxyCheckPeerName", VHOST, FLAG, cv.on_off, st.proxy_tls("check_peer_name"),
        module="mod_ssl", syntax="SSLProxyCheckPeerName on|off", default="on",
        doc="Check that the backend certificate's subjectAltName (DNS or IP) matches the "
        "host of the ProxyPass URL (the client's Host with ProxyPreserveHost on); a "
        "wildcard covers one label. Applies only with SSLProxyVerify require.",
        compat="No fallback to the certificate's CN (SSLProxyCheckPeerCN is not "
        "supported); OpenSSL ignores the CN when a subjectAltName is present.",
        usage="SSL Proxy: check the peer certificate's subject alternative names or CN",
    ),  # fmt: skip
    Declaration(
        "SSLProxyMachineCertificateFile", VHOST, TAKE1, cv.existing_file,
        st.proxy_tls("machine_certificate_file"), module="mod_ssl",
        syntax="SSLProxyMachineCertificateFile file-path", default=None,
        doc="Client certificate (mutual TLS) presented to backends that ask for one: a PEM "
        "file holding the certificate, optionally its chain, and its unencrypted private "
        "key (relative to ServerRoot).",
        compat="One certificate and key per host (httpd picks among several by the "
        "backend's CA list); encrypted keys are refused; no SSLProxyMachineCertificatePath.",
        usage="SSL Proxy: file containing client certificates ('/path/to/file' - PEM "
        "encoded)",
    ),  # fmt: skip
    Declaration(
        "SSLProxyProtocol", VHOST, ITERATE, cv.ssl_protocols, st.proxy_tls("protocols"),
        module="mod_ssl", syntax="SSLProxyProtocol [+|-]protocol ...", default="all -SSLv3",
        doc="Protocols offered to backends, with SSLProtocol's syntax: `TLSv1.2`, "
        "`TLSv1.3` or `all` (both), each optionally prefixed with `+` or `-`.",
        compat="As SSLProtocol: SSLv3, TLSv1 and TLSv1.1 cannot be enabled.",
        usage="SSL Proxy: enable or disable SSL protocol flavors ('[+-][TLSv1[.n]] ...' - "
        "see manual)",
    ),  # fmt: skip
    Declaration(
        "SSLProxyCipherSuite", VHOST, TAKE12, cv.cipher_suite, st.proxy_tls("cipher_suite"),
        module="mod_ssl", syntax="SSLProxyCipherSuite [SSL] cipher-spec", default=None,
        doc="OpenSSL cipher string for TLSv1.2 connections to backends; unset, OpenSSL's "
        "default.",
        compat="The `TLSv1.3` form is refused: Python cannot choose TLSv1.3 suites.",
        usage="SSL Proxy: colon-delimited list of permitted SSL ciphers ('XXX:...:XXX' - "
        "see manual)",
    ),  # fmt: skip
)  # fmt: skip

_BY_NAME: dict[str, tuple[Declaration, str]] = {}
for _declaration in DECLARATIONS:
    for _spelling in (_declaration.name, *_declaration.aliases):
        key = ("<" if _declaration.section else "") + _spelling.lower()
        assert key not in _BY_NAME, f"{_spelling} declared twice"
        _BY_NAME[key] = (_declaration, _spelling)


def lookup(name: str) -> Declaration | None:
    """The declaration for a directive name (``<Name`` for a section), any case."""
    found = _BY_NAME.get(name.lower())
    return found[0] if found else None


def spelling(name: str) -> str:
    """The canonical spelling of ``name``; a deprecated alias keeps its own."""
    found = _BY_NAME.get(name.lower())
    return found[1] if found else name
