"""mod_remoteip's walk and mod_headers' actions, on plain data (no sockets)."""

from __future__ import annotations

import ipaddress

import pytest

from proxympm.config.model import HeaderRule, HostConfig
from proxympm.http.request import Request
from proxympm.proxy import header_rules as hr
from proxympm.proxy.client_address import believe, forwarded_value, node

NET = ipaddress.ip_network


def _request(*fields: tuple[bytes, bytes]) -> Request:
    req = Request()
    req.headers = list(fields)
    req.lnames = [n.lower() for n, _ in fields]
    return req


HOST = HostConfig(remote_ip_header="X-Forwarded-For", remote_ip_proxies=(
    (NET("10.0.0.0/8"), True), (NET("198.51.100.0/24"), False)))


@pytest.mark.parametrize(("peer", "xff", "ip", "left"), [
    ("10.0.0.1", b"203.0.113.1", "203.0.113.1", None),
    ("10.0.0.1", b"192.168.1.1", "192.168.1.1", None),  # internal may present private
    ("198.51.100.1", b"192.168.1.1", "198.51.100.1", b"192.168.1.1"),  # trusted may not
    ("198.51.100.1", b"fd00::1", "198.51.100.1", b"fd00::1"),  # nor non-global IPv6
    ("198.51.100.1", b"10.0.0.5", "198.51.100.1", b"10.0.0.5"),
    # an internal proxy presented by an external one is treated as external
    ("198.51.100.1", b"192.168.0.9, 10.0.0.5", "198.51.100.1", b"192.168.0.9, 10.0.0.5"),
    ("203.0.113.50", b"203.0.113.1", "203.0.113.50", b"203.0.113.1"),  # untrusted peer
    ("10.0.0.1", b"::ffff:203.0.113.1", "203.0.113.1", None),  # mapped IPv4
    ("10.0.0.1", b"a, , 203.0.113.1", "203.0.113.1", b"a,"),  # empty entry stops
])
def test_remoteip_walk(peer: str, xff: bytes, ip: str, left: bytes | None) -> None:
    req = _request((b"X-Forwarded-For", xff), (b"Other", b"1"))
    found = believe(HOST, (peer, 4000), req)
    assert found.ip == ip
    assert found.port == (4000 if ip == peer else 0)
    assert req.header(b"x-forwarded-for") == (left if ip != peer else xff)


def test_repeated_header_fields_are_one_list() -> None:
    req = _request((b"X-Forwarded-For", b"203.0.113.1"), (b"x-forwarded-for", b"198.51.100.9"))
    assert believe(HOST, ("10.0.0.1", 1), req).ip == "203.0.113.1"
    assert req.header(b"x-forwarded-for") is None


def test_forwarded_quoting() -> None:
    assert node("203.0.113.1", 0) == b"203.0.113.1"
    assert node("2001:db8::1", 0) == b'"[2001:db8::1]"'
    assert node("203.0.113.1", 8080) == b'"203.0.113.1:8080"'
    assert node("2001:db8::1", 443) == b'"[2001:db8::1]:443"'
    req = _request()
    untrusted = believe(HOST, ("203.0.113.50", 5), req)
    assert forwarded_value(untrusted, b"example.com:8443", True, b"for=evil") == (
        b'for="203.0.113.50:5";host="example.com:8443";proto=https')
    trusted = believe(HOST, ("10.0.0.1", 5), _request())
    assert forwarded_value(trusted, None, False, b"for=203.0.113.1") == (
        b'for=203.0.113.1, for="10.0.0.1:5";proto=http')


def _rule(action: str, name: bytes = b"X-A", value: bytes = b"", **kw: object) -> HeaderRule:
    return HeaderRule(False, action, name, name.lower(), value=(value,) if value else (),
                      **kw)  # type: ignore[arg-type]


ENV = hr.RuleEnv(False, "203.0.113.1", 0.0)


@pytest.mark.parametrize(("rule", "before", "after"), [
    (_rule("set", value=b"n"), [(b"x-a", b"1"), (b"B", b"2"), (b"X-A", b"3")],
     [(b"X-A", b"n"), (b"B", b"2")]),
    (_rule("setifempty", value=b"n"), [(b"X-A", b"1")], [(b"X-A", b"1")]),
    (_rule("setifempty", value=b"n"), [], [(b"X-A", b"n")]),
    (_rule("append", value=b"n"), [(b"X-A", b"1"), (b"X-A", b"2")],
     [(b"X-A", b"1, n"), (b"X-A", b"2")]),
    (_rule("merge", value=b"n"), [(b"X-A", b'"a, n", b')], [(b"X-A", b'"a, n", b, n')]),
    (_rule("merge", value=b"n"), [(b"X-A", b"a, n")], [(b"X-A", b"a, n")]),
    (_rule("add", value=b"n"), [(b"X-A", b"1")], [(b"X-A", b"1"), (b"X-A", b"n")]),
    (_rule("unset"), [(b"X-A", b"1"), (b"B", b"2"), (b"x-a", b"3")], [(b"B", b"2")]),
    (_rule("edit", pattern=__import__("re").compile(rb"(\w)(\w)"), replacement=b"$2$1[&]\\&"),
     [(b"X-A", b"abcd")], [(b"X-A", b"ba[ab]&cd")]),
    (_rule("edit*", pattern=__import__("re").compile(rb"(\w)(\w)"), replacement=b"$2$1"),
     [(b"X-A", b"abcd"), (b"X-A", b"xy")], [(b"X-A", b"badc"), (b"X-A", b"yx")]),
    (_rule("set", value=b"n", env="HTTPS"), [], []),
    (_rule("set", value=b"n", env="HTTPS", env_negate=True), [], [(b"X-A", b"n")]),
])
def test_actions(rule: HeaderRule, before: list, after: list) -> None:  # type: ignore[type-arg]
    applied = hr.Applied((rule,))
    assert hr.apply_response(applied, list(before), [], ENV) == after


def test_echo_and_always_table() -> None:
    echo = HeaderRule(False, "echo", b"", b"", pattern=__import__("re").compile(rb"^X-Req"),
                      always=True)
    setter = _rule("set", value=b"n", always=True)
    applied = hr.Applied((setter, echo))
    got = hr.apply_response(applied, [(b"X-A", b"backend")], [
        (b"X-Req-Id", b"7"), (b"Content-Length", b"3"), (b"Other", b"x")], ENV)
    assert got == [(b"X-A", b"backend"), (b"X-A", b"n"), (b"X-Req-Id", b"7")]
    assert hr.error_headers(applied.always, ENV, []) == [(b"X-A", b"n")]


def test_only_values_made_by_rules_count_as_the_operators() -> None:
    given = [(b"X-Forwarded-Proto", b"gopher")]

    def named(action: str) -> frozenset[bytes]:
        rule = HeaderRule(True, action, b"X-Forwarded-Proto", b"x-forwarded-proto",
                          value=(b"https",))
        return hr.apply_request((rule,), None, ENV, given)[1]

    assert named("set") == named("add") == {b"x-forwarded-proto"}
    assert named("setifempty") == named("append") == named("merge") == frozenset()
    rule = HeaderRule(True, "setifempty", b"X-Forwarded-Proto", b"x-forwarded-proto",
                      value=(b"https",))
    assert hr.apply_request((rule,), None, ENV, [])[1] == {b"x-forwarded-proto"}


def test_proxies_header_lists_the_trusted_hops() -> None:
    host = HostConfig(remote_ip_header="X-Forwarded-For",
                      remote_ip_proxies_header="X-Forwarded-By",
                      remote_ip_proxies=HOST.remote_ip_proxies)
    req = _request((b"X-Forwarded-For", b"203.0.113.1, 198.51.100.2"),
                   (b"X-Forwarded-By", b"forged"))
    assert believe(host, ("198.51.100.1", 1), req).ip == "203.0.113.1"
    assert req.header(b"x-forwarded-by") == b"198.51.100.1, 198.51.100.2"
    req = _request((b"X-Forwarded-For", b"203.0.113.1"), (b"X-Forwarded-By", b"forged"))
    believe(host, ("10.0.0.1", 1), req)  # through an internal proxy only: untouched
    assert req.header(b"x-forwarded-by") == b"forged"
