"""mod_headers at request time: ``Header`` and ``RequestHeader`` rules applied.

Which rules: the host's (the main server's, then the vhost's), then those of every
``<Location>`` whose path matches the request path (``alias_match``: on a whole
segment), in configuration order: httpd's per-directory merge. ``select`` works that
out once per (host, set of matching Locations) and caches it.

Two tables, as httpd keeps them for a response: the default condition
(``onsuccess``) edits the response's own fields (``headers_out``: the backend's for
a proxied response, whatever its status); ``always`` rules edit a second table
(``err_headers_out``) that starts empty and is sent after the first. proxympm's own
error responses have no first table, so only ``always`` rules reach them.

Every value a rule makes is built from configuration text that was checked for
CR/LF/NUL at load time and from fields that were validated when parsed, and it
passes ``check_value`` once more here; framing fields cannot be named by a rule.

Thread model: pure functions over per-request data, run by the worker that owns the
request (the listener, for the errors it answers itself). The cache is a dict filled
with immutable values; a lost race builds the same value twice.
"""

from __future__ import annotations

import re
import time
from typing import Any

from proxympm.config.model import HeaderRule, HostConfig
from proxympm.http.serialize import check_value
from proxympm.proxy.routing import alias_match

Headers = list[tuple[bytes, bytes]]

# Echoing these would contradict the framing proxympm writes.
_NO_ECHO = frozenset({
    b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
    b"proxy-connection", b"te", b"trailer", b"upgrade", b"host",
})  # fmt: skip


class Applied:
    """The rules that apply to one request, split by table, each in merge order."""

    __slots__ = ("request", "response", "always")

    def __init__(self, rules: tuple[HeaderRule, ...]) -> None:
        ordered = [r for r in rules if r.early] + [r for r in rules if not r.early]
        self.request = tuple(r for r in ordered if r.request)
        self.response = tuple(r for r in ordered if not r.request and not r.always)
        self.always = tuple(r for r in ordered if not r.request and r.always)


_CACHE: dict[tuple[int, tuple[int, ...]], Applied | None] = {}


def select(host: HostConfig, path: bytes) -> Applied | None:
    """The rules for a request to ``path`` on ``host``; None when there are none."""
    locations = host.location_header_rules
    if not locations:
        if not host.header_rules:
            return None
        key: tuple[int, tuple[int, ...]] = (id(host), ())
    else:
        key = (id(host), tuple(i for i, (prefix, _) in enumerate(locations)
                               if alias_match(path, prefix) >= 0))
    found = _CACHE.get(key, False)
    if found is False:
        rules = host.header_rules + tuple(r for i in key[1] for r in locations[i][1])
        found = Applied(rules) if rules else None
        if len(_CACHE) < 4096:
            _CACHE[key] = found
    return found  # type: ignore[return-value]


class RuleEnv:
    """What formats and ``env=`` see: mod_ssl's HTTPS, the believed REMOTE_ADDR,
    and the request's start (``%t``, ``%D``)."""

    __slots__ = ("tls", "client_ip", "start")

    def __init__(self, tls: bool, client_ip: str, start: float) -> None:
        self.tls = tls
        self.client_ip = client_ip
        self.start = start

    def get(self, name: str) -> bytes | None:
        if name == "HTTPS":
            return b"on" if self.tls else None
        if name == "REMOTE_ADDR":
            return self.client_ip.encode("ascii")
        return None


# -- applying -----------------------------------------------------------------------


def apply_request(rules: tuple[HeaderRule, ...], req: Any, env: RuleEnv,
                  given: Headers) -> tuple[Headers, frozenset[bytes]]:
    """RequestHeader rules over the request's fields; returns the new fields and the
    lowercase names whose value a rule made from configuration alone (set, add, and
    setifempty where the field was absent): only those are the operator's word."""
    table = list(given)
    named: set[bytes] = set()
    for rule in rules:
        if _applies(rule, env):
            absent = rule.action == "setifempty" and all(
                n.lower() != rule.lname for n, _ in table)
            _apply(rule, table, env, None)
            if rule.action in ("set", "add") or absent:
                named.add(rule.lname)
            elif rule.action == "unset":
                named.discard(rule.lname)
    return table, frozenset(named)


def apply_response(applied: Applied, out: Headers, request_headers: Headers,
                   env: RuleEnv) -> Headers:
    """A proxied response: onsuccess rules on its fields, then the always table."""
    for rule in applied.response:
        if _applies(rule, env):
            _apply(rule, out, env, request_headers)
    if applied.always:
        out.extend(_always(applied.always, env, request_headers))
    return out


def error_headers(rules: tuple[HeaderRule, ...], env: RuleEnv,
                  request_headers: Headers = ()) -> Headers:  # type: ignore[assignment]
    """The always table for an error proxympm answers itself (``rules`` may hold
    any of a host's rules; only the always ones count)."""
    return _always(tuple(r for r in rules if r.always and not r.request), env,
                   request_headers)


def host_error_headers(host: HostConfig, tls: bool, client_ip: str) -> Headers:
    """An error answered before a request was routed (the listener's 400, 408...):
    the host's always rules, no Location's."""
    if not host.header_rules:
        return []
    return error_headers(host.header_rules, RuleEnv(tls, client_ip, time.time()))


def _always(rules: tuple[HeaderRule, ...], env: RuleEnv, request_headers: Headers) -> Headers:
    table: Headers = []
    for rule in rules:
        if _applies(rule, env):
            _apply(rule, table, env, request_headers)
    return table


def _applies(rule: HeaderRule, env: RuleEnv) -> bool:
    if rule.env is None:
        return True
    return (env.get(rule.env) is None) == rule.env_negate


def _value(rule: HeaderRule, env: RuleEnv) -> bytes:
    parts = rule.value
    if len(parts) == 1 and isinstance(parts[0], bytes):
        return parts[0]  # constant, checked at load time
    out = []
    for part in parts:
        if isinstance(part, bytes):
            out.append(part)
        elif part[0] == "t":
            out.append(b"t=%d" % int(env.start * 1_000_000))
        elif part[0] == "D":
            out.append(b"D=%d" % int((time.time() - env.start) * 1_000_000))
        else:
            out.append(env.get(part[1]) or b"")
    return check_value(b"".join(out))


def _apply(rule: HeaderRule, table: Headers, env: RuleEnv,
           request_headers: Headers | None) -> None:
    action = rule.action
    lname = rule.lname
    if action == "echo":
        assert rule.pattern is not None and request_headers is not None
        for name, value in request_headers:
            if name.lower() not in _NO_ECHO and rule.pattern.search(name):
                table.append((name, value))
        return
    at = [i for i, (name, _) in enumerate(table) if name.lower() == lname]
    if action == "unset":
        for i in reversed(at):
            del table[i]
        return
    if action in ("edit", "edit*"):
        pattern = rule.pattern
        assert pattern is not None
        count = 0 if action == "edit*" else 1
        for i in at:
            name, value = table[i]
            new = pattern.sub(lambda m: _expand(m, rule.replacement), value, count=count)
            table[i] = (name, check_value(new))
        return
    value = _value(rule, env)
    if action == "set":
        if at:
            table[at[0]] = (rule.name, value)
            for i in reversed(at[1:]):
                del table[i]
        else:
            table.append((rule.name, value))
    elif action == "setifempty":
        if not at:
            table.append((rule.name, value))
    elif action == "add":
        table.append((rule.name, value))
    elif action in ("append", "merge"):
        if not at:
            table.append((rule.name, value))
            return
        name, old = table[at[0]]
        if action == "merge" and value in _elements(old):
            return
        table[at[0]] = (name, old + b", " + value if old else value)


_ELEMENT = re.compile(rb'(?:"(?:[^"\\]|\\.)*"|[^,"])+')


def _elements(value: bytes) -> set[bytes]:
    """The comma-separated elements of a field value (quoted strings kept whole)."""
    return {m.group(0).strip(b" \t") for m in _ELEMENT.finditer(value)}


def _expand(m: re.Match[bytes], replacement: bytes) -> bytes:
    """ap_pregsub: ``$0``-``$9`` and ``&`` are the groups; ``\\$`` and ``\\&`` literal."""
    out = bytearray()
    i, n = 0, len(replacement)
    while i < n:
        c = replacement[i]
        if c == 0x5C and i + 1 < n and replacement[i + 1] in b"$&":  # backslash
            out.append(replacement[i + 1])
            i += 2
            continue
        if c == 0x26:  # &
            out += m.group(0)
        elif c == 0x24 and i + 1 < n and 0x30 <= replacement[i + 1] <= 0x39:  # $N
            group = replacement[i + 1] - 0x30
            if group <= (m.re.groups or 0):
                out += m.group(group) or b""
            i += 2
            continue
        else:
            out.append(c)
        i += 1
    return bytes(out)
