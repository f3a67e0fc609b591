"""Active health checks (mod_proxy_hcheck), run by the watchdog process only.

One asyncio task per checked member (``hcmethod`` set): every ``hcinterval`` it
connects to each address of the member (``TCP``: that is the check) or sends one
``GET``/``HEAD``/``OPTIONS`` for the member's path + ``hcuri`` and reads the status
line. A check passes on 2xx/3xx, or, with ``hcexpr=NAME``, when the
``ProxyHCExpr NAME`` expression holds. After ``hcfails`` failed checks in a row the
member is taken out (the ``HC_FAILED`` word every child reads before choosing a
member); after ``hcpasses`` good ones in a row it is back. The first check runs as
soon as the watchdog starts, so a dead member is out before the first interval.

Because only the watchdog checks, a member gets one check per interval however
many children serve (httpd's mod_watchdog has one such thread per server).

``ProxyHCExpr`` subset (the only variable is ``%{REQUEST_STATUS}``)::

    expr  := and ('||' and)*
    and   := term ('&&' term)*
    term  := ['!'] '%{REQUEST_STATUS}' op value
    op    := '=~' | '!~'                       value: /regex/
           | '==' | '!=' | '<' | '<=' | '>' | '>='
           | '-eq' | '-ne' | '-lt' | '-le' | '-gt' | '-ge'   value: integer

e.g. ``ProxyHCExpr ok234 {%{REQUEST_STATUS} =~ /^[234]/}``.
"""

from __future__ import annotations

import asyncio
import operator
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxympm.proxy import backend_table as bt
from proxympm.proxy.backend_table import BackendTable

StatusCheck = Callable[[int], bool]

_COMPARE = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge, "-eq": operator.eq, "-ne": operator.ne,
    "-lt": operator.lt, "-le": operator.le, "-gt": operator.gt, "-ge": operator.ge,
}
_TERM = re.compile(
    r"\s*(!\s*)?%\{REQUEST_STATUS\}\s*(=~|!~|==|!=|<=|>=|<|>|-eq|-ne|-lt|-le|-gt|-ge)\s*"
    r"(/(?:[^/\\]|\\.)*/|-?\d+)\s*")


def parse_hc_expr(text: str) -> StatusCheck:
    """A ``ProxyHCExpr`` body (with or without its braces) -> status predicate.
    Raises ValueError naming what is not in the subset."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    if not body.strip():
        raise ValueError("empty expression")
    alternatives = []
    for alt in _split(body, "||"):
        terms = []
        for part in _split(alt, "&&"):
            m = _TERM.fullmatch(part)
            if m is None:
                raise ValueError(f"'{part.strip()}' is not in proxympm's ProxyHCExpr subset "
                                 "(%{REQUEST_STATUS} compared with a number or matched "
                                 "with /regex/, joined by && and ||)")
            terms.append(_term(bool(m.group(1)), m.group(2), m.group(3)))
        alternatives.append(terms)
    return lambda status: any(all(t(status) for t in terms) for terms in alternatives)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside /regex/ literals."""
    parts, start, in_re, i = [], 0, False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and in_re:
            i += 2
            continue
        if c == "/":
            in_re = not in_re
        elif not in_re and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _term(negate: bool, op: str, value: str) -> StatusCheck:
    if op in ("=~", "!~"):
        if not value.startswith("/"):
            raise ValueError(f"{op} needs a /regex/")
        try:
            rx = re.compile(value[1:-1])
        except re.error as exc:
            raise ValueError(f"bad regex {value}: {exc}") from None
        want = op == "=~"

        def check(status: int) -> bool:
            return (rx.search(str(status)) is not None) == want
    else:
        if value.startswith("/"):
            raise ValueError(f"{op} needs a number")
        cmp, number = _COMPARE[op], int(value)

        def check(status: int) -> bool:
            return cmp(status, number)
    return (lambda s: not check(s)) if negate else check


def default_check(status: int) -> bool:
    """Without hcexpr: 2xx and 3xx pass (mod_proxy_hcheck)."""
    return 200 <= status < 400


@dataclass(frozen=True, slots=True)
class Check:
    """One member's checks, resolved from the config."""

    index: int  # the member's record in the table
    name: str  # for logs
    scheme: str
    host: str  # a host name, an IP literal, or an SRV name (``srv``)
    port: int  # 0 for an SRV name: each target has its own
    method: str  # TCP | GET | HEAD | OPTIONS
    path: bytes
    host_header: bytes
    interval: float
    passes: int
    fails: int
    timeout: float
    passes_if: StatusCheck
    # https: the client context the member's proxied requests use (SSLProxyVerify,
    # SSLProxyCACertificateFile, SSLProxyCheckPeerName ...), and the name they send
    tls: ssl.SSLContext | None = None
    sni: str = ""
    srv: bool = False


Target = tuple[int, tuple]  # (address family, socket address)


async def probe(check: Check, family: int, addr: tuple) -> int:
    """One check of one address: the status code, or a negative HC_RESULT_*."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addr[0], addr[1], family=family, ssl=check.tls,
                                    server_hostname=check.sni if check.tls else None),
            check.timeout)
    except TimeoutError:
        return bt.HC_RESULT_TIMEOUT
    except ssl.SSLError:  # an untrusted certificate too: the requests would fail alike
        return bt.HC_RESULT_TLS
    except OSError:
        return bt.HC_RESULT_CONNECT
    try:
        if check.method == "TCP":
            return 200
        writer.write(b"%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: proxympm-hcheck\r\n"
                     b"Connection: close\r\n\r\n"
                     % (check.method.encode(), check.path, check.host_header))
        try:
            line = await asyncio.wait_for(reader.readline(), check.timeout)
        except TimeoutError:
            return bt.HC_RESULT_TIMEOUT
        m = re.match(rb"HTTP/1\.[01] (\d{3})", line)
        return int(m.group(1)) if m else bt.HC_RESULT_INVALID
    except OSError:
        return bt.HC_RESULT_CONNECT
    finally:
        writer.close()


def _shown(addr: tuple) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


class HealthChecker:
    """The watchdog's health-check duty: one task per checked member.

    Every address the member's name stands for (``resolve``: what the children's
    resolver gives, A/AAAA records or SRV targets) is checked each interval, and
    counts its own ``hcfails``/``hcpasses``: an address taken out is published in the
    member's address list of the table, which children leave out of their rotation.
    The member as a whole is taken out when no address passes for ``hcfails``
    checks in a row, and back after ``hcpasses`` rounds in which one did."""

    def __init__(self, table: BackendTable, checks: list[Check],
                 resolve: Callable[[Check], list[Target]] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.table = table
        self.checks = checks
        self.resolve = resolve or (
            lambda c: [(socket.AF_INET, (c.host, c.port))] if c.port else [])
        self.log = log or (lambda message: None)

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(c) for c in self.checks))

    async def _loop(self, check: Check) -> None:
        t = self.table
        i = check.index
        _, failed_before = t.hc_addresses(i)
        # per address: [passes, fails, taken out]; what a previous watchdog took out stays
        # out until it passes
        state: dict[tuple[str, int], list[int]] = {
            a: [0, 0, 1] for a in (failed_before or ())}
        published = frozenset(failed_before or ())
        while True:
            started = time.monotonic()
            targets = self.resolve(check)
            results = await asyncio.gather(*(probe(check, f, a) for f, a in targets))
            several = len(targets) > 1
            best = bt.HC_RESULT_CONNECT
            ok = False
            listed = set()
            for (_, addr), result in zip(targets, results, strict=True):
                key = (addr[0], addr[1])
                listed.add(key)
                good = result > 0 and check.passes_if(result)
                if good and not ok:
                    ok, best = True, result
                elif not ok:
                    best = result
                s = state.setdefault(key, [0, 0, 0])
                if good:
                    s[0], s[1] = s[0] + 1, 0
                    if s[2] and s[0] >= check.passes:
                        s[2] = 0
                        if several:
                            self.log(f"AH03251: Health check ENABLING {_shown(key)} of "
                                     f"{check.name} after {check.passes} good checks")
                else:
                    s[0], s[1] = 0, s[1] + 1
                    if not s[2] and s[1] >= check.fails:
                        s[2] = 1
                        if several:
                            self.log(f"AH03251: Health check DISABLING {_shown(key)} of "
                                     f"{check.name} after {check.fails} failed checks "
                                     f"(last result {result})")
            for key in [k for k in state if k not in listed]:
                del state[key]  # no longer one of the name's addresses
            out = frozenset(k for k, s in state.items() if s[2])
            if out != published:
                if not t.set_hc_addresses(i, out):
                    self.log(f"AH03251: {check.name}: too many addresses taken out to "
                             "publish them all; the rest stay in use")
                published = out
            self._member(check, best, ok)
            await asyncio.sleep(max(0.0, check.interval - (time.monotonic() - started)))

    def _member(self, check: Check, result: int, ok: bool) -> None:
        t = self.table
        i = check.index
        t.set(i, bt.HC_LAST_RESULT, result)
        t.set(i, bt.HC_LAST_WALL_MS, int(time.time() * 1000))
        t.add(i, bt.HC_CHECKS, 1)
        if ok:
            t.set(i, bt.HC_FAILS, 0)
            t.add(i, bt.HC_PASSES, 1)
            if t.get(i, bt.HC_FAILED) and t.get(i, bt.HC_PASSES) >= check.passes:
                t.set(i, bt.HC_FAILED, 0)
                self.log(f"AH03251: Health check ENABLING {check.name} after "
                         f"{check.passes} good checks")
        else:
            t.set(i, bt.HC_PASSES, 0)
            t.add(i, bt.HC_FAILS, 1)
            if not t.get(i, bt.HC_FAILED) and t.get(i, bt.HC_FAILS) >= check.fails:
                t.set(i, bt.HC_FAILED, 1)
                self.log(f"AH03251: Health check DISABLING {check.name} after "
                         f"{check.fails} failed checks (last result {result})")
