"""Argument converters: directive words in, typed values out.

Each converter takes an ``Invocation`` (the directive's words and where it
stands) and returns a value, or raises ``DirectiveError`` with httpd's wording
where httpd has one. Where httpd silently accepts nonsense (``atoi("5ms")`` is 5),
proxympm refuses it; each such place says so in its directive's compat note.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from proxympm.config.errors import DirectiveError
from proxympm.config.model import (
    Access,
    BalancerMember,
    Listen,
    ProxyRoute,
    ReverseRule,
    WorkerParams,
)
from proxympm.config.modules import KNOWN_SHORT_NAMES, short_name


@dataclass(frozen=True, slots=True)
class Invocation:
    """One use of a directive: canonical name, words, place, surroundings."""

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    server_root: str
    location: str | None = None  # the enclosing <Location> path
    warnings: list[str] = field(default_factory=list)  # the loader's sink

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def warn(self, message: str) -> None:
        self.warnings.append(f"{message} ({self.where})")


# ---------------------------------------------------------------------------
# Scalars

_INTEGER = re.compile(r"[+-]?[0-9]+")
_DURATION = re.compile(r"([0-9]+)(ms|s|mi|min|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "mi": 60.0, "min": 60.0, "h": 3600.0}


def flag(word: str) -> bool:
    """On/Off, case-insensitive (the FLAG arity check has vetted the word)."""
    return word.lower() == "on"


def integer(name: str, word: str) -> int:
    if not _INTEGER.fullmatch(word):
        raise DirectiveError(f"Invalid value for directive {name}, expected integer")
    return int(word)


def duration(word: str, default_unit: str = "s") -> float | None:
    """``ap_timeout_parameter_parse``: an integer with an optional ms|s|mi|h unit."""
    m = _DURATION.fullmatch(word)
    if m is None:
        return None
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2) or default_unit]


def server_path(root: str, word: str) -> str:
    """A file name made absolute against ServerRoot (``ap_server_root_relative``)."""
    return os.path.normpath(os.path.join(root, word))


def log_target(root: str, word: str) -> str:
    """A log destination: ``|command`` and ``syslog[:...]`` stay as written."""
    if word.startswith("|") or word == "syslog" or word.startswith("syslog:"):
        return word
    return server_path(root, word)


def existing_file(inv: Invocation) -> str:
    """mod_ssl's ``ssl_cmd_check_file``: the file must exist and not be empty."""
    word = inv.args[0]
    if word.lower().startswith("pkcs11:"):
        raise DirectiveError(f"{inv.name}: PKCS#11 URIs are not supported by proxympm")
    path = server_path(inv.server_root, word)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise DirectiveError(f"{inv.name}: file '{path}' does not exist or is empty")
    return path


# ---------------------------------------------------------------------------
# Addresses


def _split_host_port(word: str) -> tuple[str, str | None]:
    """``apr_parse_addr_port`` shape: ``[v6]:port``, ``host:port``, ``host`` or ``port``."""
    if word.startswith("["):
        end = word.find("]")
        if end < 0:
            raise DirectiveError("Invalid address or port")
        host, tail = word[1:end], word[end + 1 :]
        if tail and not tail.startswith(":"):
            raise DirectiveError("Invalid address or port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise DirectiveError("Invalid address or port") from None
        return host, tail[1:] if tail else None
    if word.count(":") > 1:  # a bare IPv6 address without brackets
        raise DirectiveError("Invalid address or port")
    host, sep, port = word.rpartition(":")
    if not sep:
        return ("", word) if word.isdigit() else (word, None)
    return host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DirectiveError("Invalid address or port")
    return int(text)


def listen(inv: Invocation) -> Listen:
    if not 1 <= len(inv.args) <= 2:
        raise DirectiveError("Listen requires 1 or 2 arguments.")
    host, port = _split_host_port(inv.args[0])
    if host == "*":
        host = ""
    if "%" in host:
        raise DirectiveError("Scope id is not supported")
    if not port:
        raise DirectiveError("Port must be specified")
    number = _port(port)
    protocol = inv.args[1].lower() if len(inv.args) == 2 else ("https" if number == 443 else "http")
    if protocol not in ("http", "https"):
        raise DirectiveError(
            f"Listen protocol '{inv.args[1]}' is not supported (proxympm speaks http and https)"
        )
    return Listen(host=host, port=number, protocol=protocol, where=inv.where)


def vhost_addresses(inv: Invocation) -> tuple[tuple[str, int], ...]:
    """``<VirtualHost addr[:port] ...>``: ``*`` / ``_default_`` / IP / name; port 0 = any."""
    addresses: list[tuple[str, int]] = []
    for word in inv.args:
        if word.startswith("[") or word.count(":") <= 1:
            try:
                host, port = _split_host_port(word)
            except DirectiveError:
                raise DirectiveError(f"Invalid address or port in <VirtualHost {word}>") from None
        else:
            host, port = word, None
        if not host:
            raise DirectiveError("Missing address for VirtualHost")
        if port in (None, "*"):
            number = 0
        else:
            try:
                number = _port(port)
            except DirectiveError:
                raise DirectiveError(f"Invalid address or port in <VirtualHost {word}>") from None
        addresses.append((host, number))
    return tuple(addresses)


# ---------------------------------------------------------------------------
# mod_proxy

_URL_SCHEMES = ("http", "https", "ws", "wss", "balancer")
# Keys httpd knows that proxympm does not implement: refused by name, not as typos.
_APACHE_ONLY_KEYS = frozenset(
    {
        "min", "smax", "ping", "redirect", "flushwait", "iobuffersize",
        "receivebuffersize",
        "responsefieldsize", "mapping", "addressttl", "secret", "flusher",
        "hctemplate",
    }
)  # fmt: skip


def _whole_seconds(value: str, label: str) -> int:
    if not _INTEGER.fullmatch(value) or int(value) < 1:
        raise DirectiveError(f"ProxyPass {label} must be at least one second (integer seconds)")
    return int(value)


def _on_off(value: str, label: str, directive: str = "ProxyPass") -> bool:
    if value.lower() not in ("on", "off"):
        raise DirectiveError(f"{directive} {label} must be On|Off")
    return value.lower() == "on"


_HC_KEYS = frozenset({"hcmethod", "hcuri", "hcinterval", "hcpasses", "hcfails", "hcexpr"})
_MEMBER_KEYS = frozenset({"loadfactor", "lbset", "status", "route"}) | _HC_KEYS
_ROUTE_KEYS = frozenset({"requestbuffering", "responsebuffering", "flushpackets", "upgrade"})
# RFC 9110 token characters (an Upgrade protocol name, without its "/version")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# status flags proxympm implements, and httpd's that it refuses by name
_STATUS_FLAGS = "DSIHRN"
_APACHE_ONLY_FLAGS = "EC"
_HC_METHODS = ("TCP", "GET", "HEAD", "OPTIONS")


def _member_param(k: str, key: str, value: str, values: dict[str, object]) -> None:
    """The BalancerMember-only keys (mod_proxy's ``set_worker_param``)."""
    if k == "loadfactor":
        try:
            factor = float(value)
        except ValueError:
            factor = 0.0
        if not 1 <= factor <= 100:
            raise DirectiveError("BalancerMember LoadFactor must be a number between 1..100")
        values["loadfactor"] = factor
    elif k == "lbset":
        if not _INTEGER.fullmatch(value) or not 0 <= int(value) <= 99:
            raise DirectiveError("BalancerMember LB Set must be an integer between 0..99")
        values["lbset"] = int(value)
    elif k == "route":
        if len(value) > 63:
            raise DirectiveError("BalancerMember Route length must be < 64 characters")
        values["route"] = value
    elif k == "hcmethod":
        if value.upper() not in _HC_METHODS and value.upper() != "NONE":
            raise DirectiveError(f"BalancerMember hcmethod must be one of "
                                 f"{', '.join(_HC_METHODS)} (or None)")
        values["hcmethod"] = "" if value.upper() == "NONE" else value.upper()
    elif k == "hcuri":
        if any(c in value for c in " \t\r\n\0"):
            raise DirectiveError("BalancerMember hcuri must be a URL path")
        values["hcuri"] = value
    elif k == "hcinterval":
        seconds = duration(value)
        if seconds is None or seconds < 0.05:
            raise DirectiveError("BalancerMember hcinterval must be a duration of at "
                                 "least 50ms (seconds, or with a unit such as 500ms)")
        values["hcinterval"] = seconds
    elif k in ("hcpasses", "hcfails"):
        if not _INTEGER.fullmatch(value) or not 1 <= int(value) <= 1000:
            raise DirectiveError(f"BalancerMember {k} must be an integer between 1..1000")
        values[k] = int(value)
    elif k == "hcexpr":
        if not value:
            raise DirectiveError("BalancerMember hcexpr needs a ProxyHCExpr name")
        values["hcexpr"] = value
    else:  # status: [+|-]FLAG..., '+' by default (set_worker_param's loop)
        flags = set(str(values.get("status", "")))
        mode = True
        for ch in value.upper():
            if ch in "+-":
                mode = ch == "+"
                continue
            if ch in _APACHE_ONLY_FLAGS:
                raise DirectiveError(f"BalancerMember status flag '{ch}' is not supported by "
                                     "proxympm (D, S, I and H are)")
            if ch not in _STATUS_FLAGS:
                raise DirectiveError("BalancerMember Unknown status parameter option")
            if mode:
                flags.add(ch)
            else:
                flags.discard(ch)
        values["status"] = "".join(sorted(flags))


def worker_params(pairs: Sequence[tuple[str, str]], member: bool = False) -> WorkerParams:
    """mod_proxy's ``set_worker_param`` for the keys proxympm implements.

    ``member``: the keys of a BalancerMember (loadfactor, lbset, status, route are
    allowed; the per-route buffering switches belong on the balancer's ProxyPass)."""
    values: dict[str, object] = {}
    for key, value in pairs:
        k = key.lower()
        if k in _MEMBER_KEYS:
            if not member:
                raise DirectiveError(f"ProxyPass Worker parameter '{key}' is only valid on a "
                                     "BalancerMember")
            _member_param(k, key, value, values)
            continue
        if member and k in _ROUTE_KEYS:
            raise DirectiveError(f"BalancerMember parameter '{key}' belongs on the balancer's "
                                 "ProxyPass line (it is a per-route switch in proxympm)")
        if k == "timeout":
            values["timeout"] = float(_whole_seconds(value, "Timeout"))
        elif k == "connectiontimeout":
            seconds = duration(value)
            if seconds is None:
                raise DirectiveError("ProxyPass Connectiontimeout has wrong format")
            if seconds < 0.001:
                raise DirectiveError(
                    "ProxyPass Connectiontimeout must be at least one millisecond."
                )
            values["connectiontimeout"] = seconds
        elif k == "ttl":
            values["ttl"] = float(_whole_seconds(value, "TTL"))
        elif k == "max":
            if not _INTEGER.fullmatch(value) or int(value) < 0:
                raise DirectiveError("ProxyPass Max must be a positive number")
            values["max"] = int(value) or None  # 0: no cap, as httpd's default
        elif k == "acquire":
            seconds = duration(value, "ms")
            if seconds is None or seconds <= 0:
                raise DirectiveError("ProxyPass Acquire must be a positive duration "
                                     "(milliseconds, or with a unit)")
            values["acquire"] = seconds
        elif k == "retry":
            if not _INTEGER.fullmatch(value) or int(value) < 0:
                raise DirectiveError("ProxyPass Retry must be a positive value")
            values["retry"] = float(int(value))
        elif k == "keepalive":
            values["keepalive"] = _on_off(value, "KeepAlive")
        elif k == "proxyprotocol":
            if value.lower() not in ("v1", "v2", "off"):
                raise DirectiveError("ProxyPass proxyprotocol must be v1|v2|off")
            values["proxyprotocol"] = "" if value.lower() == "off" else value.lower()
        elif k == "disablereuse":
            values["disablereuse"] = _on_off(value, "DisableReuse")
        elif k == "enablereuse":
            values["disablereuse"] = not _on_off(value, "EnableReuse")
        elif k == "requestbuffering":
            values["request_buffering"] = _on_off(value, "RequestBuffering")
        elif k == "responsebuffering":
            values["response_buffering"] = _on_off(value, "ResponseBuffering")
        elif k == "flushpackets":
            # httpd's flushpackets=on|auto: pass each piece on at once, no spooling.
            if value.lower() not in ("on", "off", "auto"):
                raise DirectiveError("ProxyPass flushpackets must be on|off|auto")
            values["response_buffering"] = value.lower() == "off"
        elif k == "upgrade":
            values["upgrade"] = _upgrade(value)
        elif k in _APACHE_ONLY_KEYS:
            raise DirectiveError(f"ProxyPass Worker parameter '{key}' is not supported by proxympm")
        else:
            raise DirectiveError(f"ProxyPass unknown Worker parameter '{key}'")
    return WorkerParams(**values)  # type: ignore[arg-type]


def _upgrade(value: str) -> str:
    """``upgrade=proto[,proto...]`` or ``upgrade=ANY`` (httpd 2.4.47+ stores ``*``):
    the protocols a client may switch to on this route, lower-cased."""
    if value.lower() == "any" or value == "*":
        return "*"
    if value.lower() == "none":
        raise DirectiveError("ProxyPass upgrade=NONE (mod_proxy_wstunnel's forced upgrade) "
                             "is not supported by proxympm: name the protocol, or ANY")
    names = [v.strip() for v in value.split(",")]
    if not all(_TOKEN.fullmatch(n) for n in names):
        raise DirectiveError(f"ProxyPass upgrade '{value}' must be a protocol name (e.g. "
                             "websocket), a comma-separated list of them, or ANY")
    return ",".join(n.lower() for n in names)


_LBMETHODS = ("byrequests", "bytraffic", "bybusyness", "p2c", "peakewma")
_APACHE_ONLY_BALANCER_KEYS = frozenset({"growth", "nonce"})
# On|Off balancer keys -> the name their error message uses (httpd's wording)
_BALANCER_SWITCHES = {"nofailover": "failover", "failontimeout": "failontimeout",
                      "forcerecovery": "forcerecovery", "scolonpathdelim": "scolonpathdelim"}


def balancer_params(
    pairs: Sequence[tuple[str, str]], directive: str
) -> tuple[tuple[str, object], ...]:
    """mod_proxy's ``set_balancer_param``: (BalancerSettings field, value) in order."""
    out: list[tuple[str, object]] = []
    for key, value in pairs:
        k = key.lower()
        if k == "lbmethod":
            if value.lower() not in _LBMETHODS:
                raise DirectiveError(f"{directive} unknown lbmethod '{value}' (proxympm has "
                                     f"{', '.join(_LBMETHODS)})")
            out.append(("lbmethod", value.lower()))
        elif k == "timeout":
            if not _INTEGER.fullmatch(value) or int(value) < 1:
                raise DirectiveError(f"{directive} Timeout must be at least one second")
            out.append(("timeout", float(int(value))))
        elif k == "maxattempts":
            if not _INTEGER.fullmatch(value) or int(value) < 0:
                raise DirectiveError(
                    f"{directive} maximum number of attempts must be a positive number")
            out.append(("maxattempts", int(value)))
        elif k in _BALANCER_SWITCHES:
            out.append((k, _on_off(value, _BALANCER_SWITCHES[k], directive)))
        elif k == "failonstatus":
            codes = []
            for word in value.split(","):
                word = word.strip()
                if not word.isdigit() or not 100 <= int(word) <= 599:
                    raise DirectiveError(f"{directive} failonstatus must be one or more HTTP "
                                         "response codes")
                codes.append(int(word))
            out.append(("failonstatus", tuple(codes)))
        elif k == "stickysession":
            names = value.split("|")
            if len(names) > 2 or not all(names) or len(value) > 63:
                raise DirectiveError(f"{directive} stickysession must be COOKIE or "
                                     "COOKIE|urlparameter (< 64 characters)")
            out.append(("stickysession", value))
        elif k == "stickysessionsep":
            if value.lower() == "off":
                out.append(("stickysessionsep", ""))
            elif len(value) != 1:
                raise DirectiveError(f"{directive} stickysessionsep must be a single "
                                     "character or Off")
            else:
                out.append(("stickysessionsep", value))
        elif k in _APACHE_ONLY_BALANCER_KEYS:
            raise DirectiveError(
                f"{directive} balancer parameter '{key}' is not supported by proxympm")
        else:
            raise DirectiveError(f"{directive} unknown Balancer parameter '{key}'")
    return tuple(out)


def balancer_name(directive: str, url: str) -> str:
    """``balancer://name[/path]`` -> ``balancer://name`` (the name lower-cased)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "balancer" or not parts.netloc:
        raise DirectiveError(f"{directive} '{url}' is not a balancer:// URL")
    return f"balancer://{parts.netloc.lower()}"


def _pairs(directive: str, words: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise DirectiveError(f"Invalid {directive} parameter. Parameter must be in the "
                                 "form 'key=value'.")
        pairs.append((key, value))
    return pairs


def proxy_section(inv: Invocation) -> str:
    """``<Proxy balancer://name>``: only balancers are supported."""
    url = inv.args[0]
    if not url.lower().startswith("balancer://"):
        raise DirectiveError(f"<Proxy {url}> is not supported by proxympm: only "
                             "<Proxy balancer://name> (balancer members and ProxySet)")
    return balancer_name("<Proxy>", url)


def balancer_member(inv: Invocation) -> tuple[str | None, BalancerMember]:
    """``BalancerMember [balancer://name] url [key=value ...]``: (balancer or None, member)."""
    words = list(inv.args)
    name = None
    if words and words[0].lower().startswith("balancer://"):
        name = balancer_name("BalancerMember", words.pop(0))
    if not words or "=" in words[0] and "://" not in words[0]:
        raise DirectiveError("BalancerMember must define balancer name when outside <Proxy> "
                             "section" if name is None else "BalancerMember needs a URL")
    url = backend_url("BalancerMember", words[0])
    if url.lower().startswith("balancer://"):
        raise DirectiveError("BalancerMember URL must be http:// or https://")
    pairs = srv_marker("BalancerMember", url, _pairs("BalancerMember", words[1:]))
    params = worker_params(pairs, member=True)
    return name, BalancerMember(url=url.rstrip("/") or url, params=params, where=inv.where)


def proxy_set(inv: Invocation) -> tuple[str | None, tuple[tuple[str, object], ...]]:
    """``ProxySet [balancer://name] key=value ...``: balancer keys only in proxympm."""
    words = list(inv.args)
    name = None
    if words and "=" not in words[0]:
        if not words[0].lower().startswith("balancer://"):
            raise DirectiveError(f"ProxySet {words[0]}: proxympm sets balancer parameters "
                                 "only (use key=value on ProxyPass for a worker)")
        name = balancer_name("ProxySet", words.pop(0))
    if not words:
        raise DirectiveError("ProxySet needs at least one key=value parameter")
    return name, balancer_params(_pairs("ProxySet", words), "ProxySet")


def hc_expr(inv: Invocation) -> tuple[str, str]:
    """``ProxyHCExpr name {expression}``: validated against proxympm's subset."""
    from proxympm.proxy.health import parse_hc_expr

    if len(inv.args) < 2:
        raise DirectiveError("ProxyHCExpr needs a name and an {expression}")
    name, text = inv.args[0], " ".join(inv.args[1:]).strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise DirectiveError("ProxyHCExpr expression must be enclosed in {}")
    try:
        parse_hc_expr(text)
    except ValueError as exc:
        raise DirectiveError(f"ProxyHCExpr {name}: {exc}") from None
    return name, text[1:-1].strip()


def backend_url(directive: str, url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _URL_SCHEMES or not parts.netloc or not url.lower().startswith(f"{scheme}://"):
        raise DirectiveError(
            f"{directive} URL '{url}' is not supported: "
            "proxympm proxies to http://, https://, ws://, wss:// and balancer:// URLs"
        )
    if parts.query or url.endswith("?"):
        raise DirectiveError(f"{directive} URL '{url}' must not contain a query string")
    if parts.fragment or "#" in url:
        raise DirectiveError(f"{directive} URL '{url}' must not contain a fragment")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise DirectiveError(f"{directive} URL '{url}' has an invalid port") from None
    return url


_SRV_NAME = re.compile(r"_[A-Za-z0-9-]+\._(tcp|udp|sctp)\.[A-Za-z0-9._-]*[A-Za-z0-9]", re.I)


def srv_marker(directive: str, url: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``srv=on|off`` key: host and port of the backend come from DNS SRV records.

    The URL then names the SRV record (``http://_http._tcp.app.example``) and has no
    port. The key is required for such a host name and refused for any other, so
    that a typo never silently turns a name into an SRV lookup (or the reverse).
    Returns the other pairs."""
    srv = False
    rest = []
    for key, value in pairs:
        if key.lower() != "srv":
            rest.append((key, value))
            continue
        srv = _on_off(value, "srv", directive)
    parts = urlsplit(url)
    host = parts.hostname or ""
    looks_srv = host.startswith("_")
    if srv:
        if not _SRV_NAME.fullmatch(host):
            raise DirectiveError(f"{directive} srv=on needs a URL host of the form "
                                 f"_service._proto.name (RFC 2782), not '{host}'")
        if parts.port is not None:
            raise DirectiveError(f"{directive} srv=on: the URL must not give a port "
                                 f"({url}): ports come from the SRV records")
    elif looks_srv:
        raise DirectiveError(f"{directive} URL host '{host}' is an SRV name: add srv=on "
                             "to take hosts and ports from its SRV records")
    return rest


def _location_path(inv: Invocation) -> str | None:
    """The enclosing <Location> path, refused if it is a wildcard pattern."""
    location = inv.location
    if location is not None and any(c in location for c in "*?["):
        raise DirectiveError(f"{inv.name} inside a wildcard <Location> is not supported")
    return location


def proxy_pass(inv: Invocation) -> ProxyRoute:
    """``ProxyPass [path] !|url [key=value ...]`` (mod_proxy's ``add_pass``)."""
    path = _location_path(inv)
    url: str | None = None
    pairs: list[tuple[str, str]] = []
    for word in inv.args:
        if path is None:
            if word == "~":
                raise DirectiveError("ProxyPass ~ (regular expressions) is not supported")
            path = word
        elif url is None:
            url = word
        elif word.lower() in ("nocanon", "interpolate", "noquery"):
            raise DirectiveError(f"ProxyPass flag '{word}' is not supported by proxympm")
        elif "=" not in word:
            if inv.location is not None and url.startswith("/"):
                raise DirectiveError(
                    "ProxyPass|ProxyPassMatch can not have a path when defined in a location."
                )
            raise DirectiveError(
                "Invalid ProxyPass|ProxyPassMatch parameter. "
                "Parameter must be in the form 'key=value'."
            )
        else:
            key, _, value = word.partition("=")
            pairs.append((key, value))
    if url is None or path is None:
        raise DirectiveError("ProxyPass|ProxyPassMatch needs a path when not defined in a location")
    if not path.startswith("/"):
        raise DirectiveError(f"ProxyPass path '{path}' must start with '/'")
    if url == "!":
        return ProxyRoute(path=path, url=None, where=inv.where)
    if url.lower().startswith("balancer://"):
        # httpd's add_pass: on a balancer URL the keys are balancer parameters; the
        # per-route buffering switches are proxympm's and stay with the route.
        route_pairs = [(k, v) for k, v in pairs if k.lower() in _ROUTE_KEYS]
        other = [(k, v) for k, v in pairs if k.lower() not in _ROUTE_KEYS]
        return ProxyRoute(
            path=path,
            url=backend_url("ProxyPass", url),
            params=worker_params(route_pairs),
            where=inv.where,
            balancer_settings=balancer_params(other, "ProxyPass"),
        )
    url = backend_url("ProxyPass", url)
    return ProxyRoute(
        path=path,
        url=url,
        params=worker_params(srv_marker("ProxyPass", url, pairs)),
        where=inv.where,
    )


def proxy_pass_reverse(inv: Invocation) -> ReverseRule:
    """``ProxyPassReverse [path] url`` (mod_proxy's ``add_pass_reverse``)."""
    args = inv.args
    if args and args[-1].lower() == "interpolate":
        raise DirectiveError("ProxyPassReverse interpolate is not supported by proxympm")
    location = _location_path(inv)
    if not args or len(args) > 2:
        raise DirectiveError("ProxyPassReverse takes 1-2 arguments, a virtual path and a URL")
    if location is None:
        if len(args) < 2:
            raise DirectiveError("ProxyPassReverse needs a path when not defined in a location")
        path, url = args[0], args[1]
    else:
        if len(args) > 1:
            raise DirectiveError("ProxyPassReverse can not have a path when defined in a location")
        path, url = location, args[0]
    return ReverseRule(path=path, url=backend_url("ProxyPassReverse", url), where=inv.where)


# ---------------------------------------------------------------------------
# mod_ssl

TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
_OLD_PROTOCOLS = ("SSLv3", "TLSv1", "TLSv1.1")
_PROTOCOL_NAMES = {p.lower(): p for p in (*_OLD_PROTOCOLS, *TLS_PROTOCOLS)}


def ssl_protocols(inv: Invocation) -> tuple[str, ...]:
    """``SSLProtocol [+|-]proto ...`` (or SSLProxyProtocol): the protocols to enable.

    ``all`` means every protocol proxympm supports (TLSv1.2, TLSv1.3). Naming
    SSLv3, TLSv1 or TLSv1.1 to *enable* it is an error: Python's OpenSSL refuses
    them, and a silent downgrade of what was asked would hide that.
    """
    chosen: set[str] = set()
    for word in inv.args:
        action = word[0] if word[:1] in ("+", "-") else ""
        name = word[1:] if action else word
        if name.lower() == "all":
            protocols = set(TLS_PROTOCOLS)
        elif name.lower() in _PROTOCOL_NAMES:
            protocols = {_PROTOCOL_NAMES[name.lower()]}
        else:
            raise DirectiveError(f"{inv.name}: Illegal protocol '{name}'")
        if action != "-" and protocols & set(_OLD_PROTOCOLS):
            raise DirectiveError(
                f"{inv.name}: {name} is not supported: proxympm requires TLSv1.2 or later"
            )
        if action == "-":
            chosen -= protocols
        elif action == "+":
            chosen |= protocols
        else:
            if chosen:
                inv.warn(
                    f"{inv.name}: Protocol '{word}' overrides already set parameter(s). "
                    "Check if a +/- prefix is missing."
                )
            chosen = set(protocols)
    if not chosen:
        raise DirectiveError(
            f"{inv.name}: no protocol left enabled (choose TLSv1.2 and/or TLSv1.3)"
        )
    return tuple(p for p in TLS_PROTOCOLS if p in chosen)


def ssl_proxy_verify(inv: Invocation) -> str:
    """``SSLProxyVerify none|require``; httpd's two other levels are refused."""
    word = inv.args[0].lower()
    if word in ("optional", "optional_no_ca"):
        raise DirectiveError(
            f"SSLProxyVerify {inv.args[0]} is not supported by proxympm: "
            "use require (verify the backend) or none"
        )
    if word not in ("none", "require"):
        raise DirectiveError(f"SSLProxyVerify: Invalid argument '{inv.args[0]}'")
    return word


# ---------------------------------------------------------------------------
# Logging

LOG_LEVELS = (
    "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug",
    *(f"trace{n}" for n in range(1, 9)),
)  # fmt: skip


def log_levels(inv: Invocation) -> tuple[str | None, dict[str, str]]:
    """``LogLevel [module:]level ...``: the global level and per-module levels."""
    overall: str | None = None
    modules: dict[str, str] = {}
    for word in inv.args:
        module, sep, level = word.rpartition(":")
        if level.lower() not in LOG_LEVELS:
            raise DirectiveError(
                "LogLevel requires level keyword: one of "
                "emerg/alert/crit/error/warn/notice/info/debug/trace1/.../trace8"
            )
        if not sep:
            overall = level.lower()
            continue
        short = short_name(module)
        if short not in KNOWN_SHORT_NAMES:
            inv.warn(f"LogLevel: module '{module}' is not part of proxympm; level ignored")
            continue
        modules[short] = level.lower()
    return overall, modules


# ---------------------------------------------------------------------------
# Converters the declaration table uses directly


Converter = Callable[[Invocation], Any]


def first(inv: Invocation) -> str:
    return inv.args[0]


def all_words(inv: Invocation) -> tuple[str, ...]:
    return inv.args


def on_off(inv: Invocation) -> bool:
    return flag(inv.args[0])


def path(inv: Invocation) -> str:
    return server_path(inv.server_root, inv.args[0])


def error_log(inv: Invocation) -> str:
    return log_target(inv.server_root, inv.args[0])


def whole_number(minimum: int | None = None, complaint: str = "") -> Converter:
    """An integer word; below ``minimum`` is refused with ``complaint``."""

    def convert(inv: Invocation) -> int:
        value = integer(inv.name, inv.args[0])
        if minimum is not None and value < minimum:
            raise DirectiveError(complaint.format(name=inv.name, arg=inv.args[0]))
        return value

    return convert


def whole_seconds(minimum: int, complaint: str) -> Converter:
    """Integer seconds, as httpd's ``atoi`` directives, as a float."""
    inner = whole_number(minimum, complaint)
    return lambda inv: float(inner(inv))


def one_of(*choices: str, complaint: str) -> Converter:
    def convert(inv: Invocation) -> str:
        word = inv.args[0].lower()
        if word not in choices:
            raise DirectiveError(complaint)
        return word

    return convert


def keepalive_timeout(inv: Invocation) -> float:
    seconds = duration(inv.args[0])
    if seconds is None:
        raise DirectiveError("KeepAliveTimeout has wrong format")
    return seconds


def websocket_idle_timeout(inv: Invocation) -> float:
    """``ProxyWebsocketIdleTimeout num[ms]`` (mod_proxy_wstunnel): seconds, 0 = unset."""
    seconds = duration(inv.args[0])
    if seconds is None:
        raise DirectiveError("ProxyWebsocketIdleTimeout timeout has wrong format")
    return seconds


def worker_factor(inv: Invocation) -> float:
    """event's ``set_worker_factor``: > 0 required, below 1 raised to 1."""
    try:
        value = float(inv.args[0])
    except ValueError:
        raise DirectiveError("error parsing value") from None
    if not 0 < value < float("inf"):
        raise DirectiveError("AsyncRequestWorkerFactor argument must be a positive number")
    if value < 1:
        inv.warn(f"AsyncRequestWorkerFactor {inv.args[0]} is below 1, using 1")
        return 1.0
    return value


def dns_servers(inv: Invocation) -> tuple[str, ...]:
    """``ProxyDNSServers addr[:port] ...``: IP literals only (a name server named by a
    name would need a name server), IPv6 in brackets when a port is given; port 53
    by default. Returned as c-ares wants them: ``ip:port`` / ``[ipv6]:port``."""
    out: list[str] = []
    for word in inv.args:
        try:
            ip = ipaddress.ip_address(word)  # bare IPv4 or IPv6, port 53
            port = 53
        except ValueError:
            try:
                host, port_text = _split_host_port(word)
                ip = ipaddress.ip_address(host)
            except (DirectiveError, ValueError):
                raise DirectiveError(f"ProxyDNSServers: '{word}' is not an IP address with an "
                                     "optional port (e.g. 127.0.0.1:5353 or [::1]:53)") from None
            if port_text is None:
                port = 53
            else:
                try:
                    port = _port(port_text)
                except DirectiveError:
                    raise DirectiveError(f"ProxyDNSServers: '{word}' has an invalid port") from None
        shown = f"[{ip}]" if ip.version == 6 else str(ip)
        out.append(f"{shown}:{port}")
    return tuple(out)


def dns_ttl(inv: Invocation) -> float:
    """``ProxyDNSTTLFloor`` / ``ProxyDNSTTLCeiling``: seconds (or ms|s|mi|h), >= 1 s."""
    seconds = duration(inv.args[0])
    if seconds is None:
        raise DirectiveError(f"{inv.name} has wrong format: '{inv.args[0]}' (seconds, or a "
                             "number with ms, s, mi or h)")
    if seconds < 1:
        raise DirectiveError(f"{inv.name} must be at least one second")
    return seconds


def proxy_requests(inv: Invocation) -> bool:
    if flag(inv.args[0]):
        raise DirectiveError(
            "ProxyRequests On (forward proxying) is not supported: proxympm is a reverse "
            "proxy only; use ProxyPass"
        )
    return False


def log_format(inv: Invocation) -> tuple[str, str | None]:
    """``LogFormat format [nickname]``: (format, nickname or None)."""
    return inv.args[0], inv.args[1] if len(inv.args) > 1 else None


def custom_log(inv: Invocation) -> tuple[str, str]:
    """``CustomLog target format|nickname``: (target, format or nickname)."""
    if len(inv.args) == 3:
        raise DirectiveError(
            f"CustomLog condition '{inv.args[2]}' is not supported by proxympm "
            "(no env= or expr= clauses)"
        )
    return log_target(inv.server_root, inv.args[0]), inv.args[1]


def transfer_log(inv: Invocation) -> str:
    return log_target(inv.server_root, inv.args[0])


def ssl_engine(inv: Invocation) -> bool:
    word = inv.args[0].lower()
    if word == "optional":
        raise DirectiveError("SSLEngine optional (RFC 2817 upgrade) is not supported by proxympm")
    if word not in ("on", "off"):
        raise DirectiveError("Argument must be On, Off, or Optional")
    return word == "on"


def cipher_suite(inv: Invocation) -> str:
    """``SSLCipherSuite [SSL] spec`` (and SSLProxyCipherSuite): the OpenSSL cipher string."""
    if len(inv.args) == 2:
        protocol = inv.args[0]
        if protocol.upper() == "TLSV1.3":
            raise DirectiveError(
                f"{inv.name} TLSv1.3 is not supported: Python's ssl module cannot "
                "choose TLSv1.3 cipher suites"
            )
        if protocol.upper() != "SSL":
            raise DirectiveError(f"{inv.name}: unknown protocol '{protocol}'")
    return inv.args[-1]


def server_name(inv: Invocation) -> str:
    """``ServerName [scheme://]name[:port]``: kept as ``name[:port]``."""
    name = inv.args[0].partition("://")[2] or inv.args[0]
    if not name or "/" in name:
        raise DirectiveError(f"ServerName '{inv.args[0]}' is not a host name")
    return name


def location(inv: Invocation) -> str:
    if inv.args[0] == "~":
        raise DirectiveError("<Location ~> (regular expressions) is not supported by proxympm")
    if len(inv.args) > 1:
        raise DirectiveError("<Location> takes one argument")
    return inv.args[0]


HANDLERS = ("server-status", "metrics")


def set_handler(inv: Invocation) -> str:
    """``SetHandler server-status|metrics`` (mod_status; proxympm's Prometheus text)."""
    name = inv.args[0].lower()
    if name not in HANDLERS:
        raise DirectiveError(f"SetHandler {inv.args[0]}: proxympm has only the handlers "
                             + " and ".join(HANDLERS))
    if inv.location is None:
        raise DirectiveError("SetHandler is only allowed inside <Location>")
    _location_path(inv)
    return name


_AUTHZ_OTHERS = ("user", "group", "valid-user", "host", "env", "expr", "method",
                 "forward-dns", "file-owner", "file-group")


def require(inv: Invocation) -> Access:
    """``Require all granted|denied``, ``Require local``, ``Require ip addr ...``
    (mod_authz_core / mod_authz_host)."""
    args = inv.args
    provider = args[0].lower()
    if provider == "not":
        raise DirectiveError("negative Require directive has no effect in <RequireAny> "
                             "directive")
    if provider == "all":
        if len(args) != 2 or args[1].lower() not in ("granted", "denied"):
            raise DirectiveError("Require all takes 'granted' or 'denied'")
        return Access(all_granted=args[1].lower() == "granted", where=inv.where)
    if provider == "local":
        if len(args) != 1:
            raise DirectiveError("Require local does not take an argument")
        return Access(local=True, where=inv.where)
    if provider == "ip":
        if len(args) < 2:
            raise DirectiveError("Require ip needs at least one address")
        return Access(networks=tuple(_ip_network(w) for w in args[1:]), where=inv.where)
    if provider in _AUTHZ_OTHERS:
        raise DirectiveError(f"Require {args[0]} is not supported by proxympm (only all, "
                             "local and ip)")
    raise DirectiveError(f"Unknown Authz provider: {args[0]}")


def _ip_network(word: str) -> str:
    """mod_authz_host's address forms: a full or partial IPv4 address (``10.1``), an
    address with a CIDR length or a netmask, an IPv6 address with a length."""
    try:
        if "/" not in word and ":" not in word and word.count(".") < 3:
            octets = [o for o in word.split(".") if o != ""]
            if not octets or len(octets) > 3 or not all(o.isdigit() for o in octets):
                raise ValueError
            full = ".".join(octets + ["0"] * (4 - len(octets)))
            return str(ipaddress.ip_network(f"{full}/{8 * len(octets)}", strict=False))
        return str(ipaddress.ip_network(word, strict=False))
    except ValueError:
        raise DirectiveError(f"ip address '{word}' appears to be invalid") from None


_STAGE = re.compile(r"(?i)(handshake|header|body)=(\d+)(?:-(\d+))?(?:,minrate=(\d+))?")


def request_read_timeout(inv: Invocation) -> dict[str, tuple[float, float, int]]:
    """mod_reqtimeout: ``stage=timeout[-maxtimeout][,MinRate=rate]`` words."""
    if not inv.args:
        raise DirectiveError("RequestReadTimeout requires at least one argument")
    stages: dict[str, tuple[float, float, int]] = {}
    for word in inv.args:
        m = _STAGE.fullmatch(word)
        if m is None:
            raise DirectiveError(f"RequestReadTimeout: invalid argument '{word}' (expected "
                                 "handshake|header|body=timeout[-maxtimeout][,MinRate=rate])")
        stage, low, high, rate = m.group(1).lower(), int(m.group(2)), m.group(3), m.group(4)
        top = int(high) if high else 0
        if high and top <= low:
            raise DirectiveError("RequestReadTimeout: maximum timeout must be larger than "
                                 "initial timeout")
        if high and not rate:
            rate = "500"  # mod_reqtimeout: a range without MinRate uses the default rate
        stages[stage] = (float(low), float(top), int(rate or 0))
    return stages
