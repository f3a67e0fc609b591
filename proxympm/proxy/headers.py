"""Rebuilding heads across the proxy: the upstream request and the client response.

The upstream request is rebuilt, never copied: our own request line and framing,
hop-by-hop and Connection-listed fields removed, Host per ProxyPreserveHost,
X-Forwarded-* per ProxyAddHeaders, Via per ProxyVia. The client response gets the
same hop-by-hop treatment plus ProxyPassReverse on Location-type fields.
Fields copied from a parsed head were validated by llhttp (strict) already; every
value proxympm makes or rewrites passes through ``check_value``, which refuses
CR/LF/NUL (tests/unit/http/test_response.py pins the parser side).
"""

from __future__ import annotations

from proxympm import __version__
from proxympm.config.model import HostConfig, ReverseRule
from proxympm.http.grammar import FORBIDDEN_IN_VALUE
from proxympm.http.request import Headers, Request
from proxympm.http.response import Response
from proxympm.http.serialize import HeaderInjection, check_value
from proxympm.proxy.client_address import ClientAddress, forwarded_value

# RFC 9110 7.6.1 plus what mod_proxy strips (ap_proxy_create_hdrbrgd); the framing
# fields are ours to set, Expect is answered by proxympm itself.
_REQUEST_DROP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"content-length", b"expect", b"host",
    }
)
_RESPONSE_DROP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"trailer",
        b"transfer-encoding", b"upgrade", b"content-length",
    }
)
_REQUEST_SPECIAL = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"via", b"forwarded"})
_LOCATION_FIELDS = frozenset({b"location", b"content-location", b"uri"})
SERVER_VERSION = b"proxympm/" + __version__.encode("ascii")


def upstream_request_head(
    req: Request,
    host_cfg: HostConfig,
    upstream_path: bytes,
    upstream_host: bytes,
    client_ip: str,
    tls: bool,
    server_name: bytes,
    body_length: int | None,
    client: ClientAddress | None = None,
    keep_proto: bool = False,
) -> bytes:
    """The bytes of the request head sent upstream.

    ``client``: for ProxyAddForwarded (who the peer was and whether it is trusted).
    ``keep_proto``: an X-Forwarded-Proto in ``req`` was set by a RequestHeader rule,
    so it is the operator's word and is sent instead of ours.

    ``body_length`` None with a body means chunked; 0 or a count means
    Content-Length (sent whenever the request has a body, and for methods that
    expect one, so the upstream never guesses).
    """
    drop = _REQUEST_DROP | req.connection_tokens if req.connection_tokens else _REQUEST_DROP
    # Client fields, method and Host were validated by llhttp and our grammar; the
    # values made from configuration and the mapped path are checked here.
    if FORBIDDEN_IN_VALUE.search(upstream_path):
        raise HeaderInjection(f"invalid upstream request target {upstream_path[:40]!r}")
    host = req.host if host_cfg.preserve_host and req.host else _config_value(upstream_host)
    out: list[bytes] = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (req.method, upstream_path, host)]
    xff: bytes | None = None
    forwarded: bytes | None = None
    add_forwarded = host_cfg.add_forwarded
    via = host_cfg.via
    add_headers = host_cfg.add_headers
    headers = req.headers
    lnames = req.lnames
    if len(lnames) != len(headers):  # a Request not built by RequestReader
        lnames = [name.lower() for name, _ in headers]
    for i, lname in enumerate(lnames):
        if lname in drop:
            continue
        name, value = headers[i]
        if lname in _REQUEST_SPECIAL:
            if lname == b"x-forwarded-for" and add_headers:
                xff = value if xff is None else xff + b", " + value
                continue
            if lname == b"via" and via == "block":
                continue
            if lname == b"x-forwarded-proto" and add_headers and not keep_proto:
                continue  # only we know the scheme the client used; never pass a claim on
            if lname == b"forwarded" and add_forwarded:
                forwarded = value if forwarded is None else forwarded + b", " + value
                continue
        out.append(b"%s: %s\r\n" % (name, value))
    if add_headers:
        ip = client_ip.encode("ascii")
        out.append(b"X-Forwarded-For: %s\r\n" % (ip if xff is None else xff + b", " + ip))
        if req.host:  # validated by the HOST grammar
            out.append(b"X-Forwarded-Host: %s\r\n" % req.host)
        out.append(_forwarded_tail(server_name, tls, keep_proto))
    if add_forwarded:
        if client is None:
            client = ClientAddress(client_ip, 0, (client_ip, 0), False)
        out.append(b"Forwarded: %s\r\n" % check_value(
            forwarded_value(client, req.host, tls, forwarded)))
    if via in ("on", "full"):
        out.append(b"Via: %s\r\n" % _config_value(_via_value(req.version, server_name, via)))
    if req.has_body:
        if body_length is None:
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:
            out.append(b"Content-Length: %d\r\n" % body_length)
    elif req.method in (b"POST", b"PUT", b"PATCH"):
        out.append(b"Content-Length: 0\r\n")
    out.append(b"\r\n")
    return b"".join(out)


_CHECKED: set[bytes] = set()  # configuration-made values that passed check_value
_TAILS: dict[tuple[bytes, bool, bool], bytes] = {}


def _forwarded_tail(server_name: bytes, tls: bool, keep_proto: bool = False) -> bytes:
    """X-Forwarded-Server and X-Forwarded-Proto, built and checked once per name."""
    key = (server_name, tls, keep_proto)
    tail = _TAILS.get(key)
    if tail is None:
        tail = b"X-Forwarded-Server: %s\r\n" % check_value(server_name)
        if not keep_proto:
            tail += b"X-Forwarded-Proto: %s\r\n" % (b"https" if tls else b"http")
        if len(_TAILS) < 1024:
            _TAILS[key] = tail
    return tail


def _config_value(value: bytes) -> bytes:
    """check_value for values from the configuration, remembered (a handful)."""
    if value not in _CHECKED:
        check_value(value)
        if len(_CHECKED) < 1024:
            _CHECKED.add(value)
    return value


def _via_value(version: bytes, server_name: bytes, mode: str) -> bytes:
    value = version + b" " + server_name
    if mode == "full":
        value += b" (" + SERVER_VERSION + b")"
    return value


def client_response_headers(
    resp: Response,
    host_cfg: HostConfig,
    rules: tuple[ReverseRule, ...],
    client_base: bytes,
    server_name: bytes,
) -> Headers:
    """Response fields for the client, without framing fields (the caller adds them).

    ``client_base`` is ``scheme://host`` as the client addressed us, used by
    ProxyPassReverse like Apache with UseCanonicalName Off.

    Fields copied verbatim were validated by llhttp (strict: token names, no CTL but
    HTAB in values, CR only in CRLF) when ``read_response_head`` parsed them; every
    value made or rewritten here goes through ``check_value`` (HeaderInjection).
    """
    drop = _RESPONSE_DROP | resp.connection_tokens if resp.connection_tokens else _RESPONSE_DROP
    headers = resp.headers
    lnames = resp.lnames
    if len(lnames) != len(headers):  # a Response not built by read_response_head
        lnames = [name.lower() for name, _ in headers]
    out: Headers = []
    for i, lname in enumerate(lnames):
        if lname in drop:
            continue
        if rules and lname in _LOCATION_FIELDS:
            name, value = headers[i]
            out.append((name, check_value(reverse_map(value, rules, client_base))))
        else:
            out.append(headers[i])
    if host_cfg.via in ("on", "full"):
        out.append((b"Via", check_value(_via_value(resp.version, server_name, host_cfg.via))))
    return out


def reverse_map(value: bytes, rules: tuple[ReverseRule, ...], client_base: bytes) -> bytes:
    """ProxyPassReverse: a backend URL prefix becomes this server's path."""
    for rule in rules:
        url = rule.url.encode("ascii")
        if value.startswith(url):
            rest = value[len(url) :]
            path = rule.path.encode("ascii")
            if path.endswith(b"/") and rest.startswith(b"/"):
                rest = rest[1:]
            return client_base + path + rest
    return value
