"""The shared backend table and the selection rules built on it (no sockets, except
the wake-up pipes between two real processes)."""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from proxympm.config.model import Balancer as BalancerConfig
from proxympm.config.model import BalancerMember, BalancerSettings, WorkerParams
from proxympm.proxy import backend_table as bt
from proxympm.proxy.backend_table import BackendTable, make_wake_pipes
from proxympm.proxy.balancer import (
    Balancer,
    Member,
    Verdict,
    plain_specs,
    session_route,
    specs_for,
)
from proxympm.proxy.health import default_check, parse_hc_expr


def config(members: list[dict[str, object]], **settings: object) -> BalancerConfig:
    return BalancerConfig(
        "balancer://t",
        tuple(BalancerMember(f"http://127.0.0.1:{9000 + i}", WorkerParams(**m))  # type: ignore[arg-type]
              for i, m in enumerate(members)),
        BalancerSettings(**settings),  # type: ignore[arg-type]
    )


def make(members: list[dict[str, object]], seed: int = 3, **settings: object) -> Balancer:
    return Balancer(config(members, **settings), rng=random.Random(seed))


def port(m: object) -> int:
    assert isinstance(m, Member), m
    return m.target.port - 9000


def picks(b: Balancer, n: int, **release: object) -> Counter[int]:
    seen: Counter[int] = Counter()
    for _ in range(n):
        m = b.acquire()
        seen[port(m)] += 1
        b.release(m, **release)  # type: ignore[arg-type]
    return seen


def test_bytraffic_balances_bytes_per_weight() -> None:
    b = make([{"loadfactor": 3.0}, {"loadfactor": 1.0}], lbmethod="bytraffic")
    assert picks(b, 4000, sent=300, read=700) == {0: 3000, 1: 1000}
    snap = {s["member"]: s for s in b.table.snapshot()}
    assert snap["http://127.0.0.1:9000"]["sent"] == 3000 * 300
    assert snap["http://127.0.0.1:9001"]["read"] == 1000 * 700


def test_peakewma_prefers_the_fast_member_and_forgets_a_slow_past() -> None:
    b = make([{}, {}, {}], lbmethod="peakewma")
    latency = {0: 0.010, 1: 0.010, 2: 0.300}
    seen: Counter[int] = Counter()
    for _ in range(3000):
        m = b.acquire()
        seen[port(m)] += 1
        b.release(m, latency=latency[port(m)])  # type: ignore[arg-type]
    assert seen[2] < 0.05 * 3000, seen  # 30x slower: hardly used, still probed
    assert seen[2] >= 1
    assert abs(seen[0] - seen[1]) < 0.1 * 3000
    slow = b.members[2]
    assert b.table.snapshot()[2]["latency_ms"] == pytest.approx(300, rel=0.01)
    # a peak counts at once; then the average decays with time
    b.release(b.acquire({b.members[1], b.members[2]}), latency=0.5)  # type: ignore[arg-type]
    assert b.table.get(b.members[0].index, bt.EWMA) == 500_000
    b.table.set(slow.index, bt.EWMA_AT, bt.now_us() - 60_000_000)  # a minute ago
    assert b._cost(slow, bt.now_us()) < b._cost(b.members[1], bt.now_us())


def test_hot_spares_stand_in_for_unusable_members_and_standbys_come_last() -> None:
    b = make([{}, {}, {"status": "R"}, {"status": "H"}], forcerecovery=False)
    assert set(picks(b, 20)) == {0, 1}
    b.mark_failed(b.members[0])
    assert set(picks(b, 20)) == {1, 2}  # the spare takes the failed member's place
    b.mark_failed(b.members[1])
    assert set(picks(b, 20)) == {2}  # one spare left for two missing members
    b.mark_failed(b.members[2])
    assert set(picks(b, 20)) == {3}


def test_draining_member_takes_only_its_sticky_sessions() -> None:
    b = make([{"route": "a"}, {"route": "b", "status": "N"}])
    assert set(picks(b, 10)) == {0}
    mask, refused = b.sticky("b")
    assert refused is None
    assert port(b.acquire(mask)) == 1


def test_sticky_route_member_in_error_fails_over_unless_nofailover() -> None:
    b = make([{"route": "a"}, {"route": "b"}])
    assert b.sticky("zz") == (0, None)  # unknown route: the lbmethod decides
    b.mark_failed(b.members[1])
    mask, refused = b.sticky("b")
    assert refused is None and port(b.acquire(mask)) == 0
    strict = make([{"route": "a"}, {"route": "b"}], nofailover=True)
    strict.mark_failed(strict.members[1])
    mask, refused = strict.sticky("b")
    assert isinstance(refused, Verdict) and refused.reason == "down"


@pytest.mark.parametrize(("sticky", "target", "cookies", "route"), [
    ("JSESSIONID", b"/x", [b"a=1; JSESSIONID=abc.r1; b=2"], "r1"),
    ("JSESSIONID|jsessionid", b"/x;jsessionid=abc.r2?q=1", [], "r2"),
    ("JSESSIONID|jsessionid", b"/x;jsessionid=abc.r2", [b"JSESSIONID=z.r1"], "r2"),
    ("JSESSIONID|jsessionid", b"/x?a=1&jsessionid=s.r3&b=2", [], "r3"),
    ("JSESSIONID", b"/x", [b"JSESSIONID=noroute"], None),
    ("JSESSIONID", b"/x", [], None),
    ("ROUTEID", b"/x", [b'ROUTEID=".r9"'], "r9"),
])
def test_session_route(sticky: str, target: bytes, cookies: list[bytes],
                       route: str | None) -> None:
    settings = BalancerSettings(stickysession=sticky)
    assert session_route(settings, target, cookies) == route


def test_session_route_separators() -> None:
    semi = BalancerSettings(stickysession="S|s", scolonpathdelim=True)
    assert session_route(semi, b"/p?s=id.r1;other=2", []) == "r1"
    plain = BalancerSettings(stickysession="S|s")
    assert session_route(plain, b"/p?s=id.r1;other=2", []) == "r1;other=2"
    whole = BalancerSettings(stickysession="S", stickysessionsep="")
    assert session_route(whole, b"/", [b"S=node7"]) == "node7"


def test_forcerecovery_clears_error_state_when_every_member_is_in_error() -> None:
    b = make([{}, {}])
    for m in b.members:
        b.mark_failed(m)
    got = b.acquire()
    assert isinstance(got, Member)  # httpd's default: try them again
    b.release(got)
    assert sum(s["recoveries"] for s in b.table.snapshot()) == 2
    off = make([{}, {}], forcerecovery=False)
    for m in off.members:
        off.mark_failed(m)
    assert isinstance(off.acquire(), Verdict)
    # health-check failures are not cleared by forcerecovery
    hc = make([{}, {}])
    for m in hc.members:
        hc.table.set(m.index, bt.HC_FAILED, 1)
    assert isinstance(hc.acquire(), Verdict)


def test_hc_expressions() -> None:
    ok234 = parse_hc_expr("{%{REQUEST_STATUS} =~ /^[234]/}")
    assert [ok234(s) for s in (200, 302, 404, 500)] == [True, True, True, False]
    either = parse_hc_expr("%{REQUEST_STATUS} -eq 200 || %{REQUEST_STATUS} == 204")
    assert [either(s) for s in (200, 204, 201)] == [True, True, False]
    both = parse_hc_expr("%{REQUEST_STATUS} >= 200 && ! %{REQUEST_STATUS} =~ /^3/")
    assert [both(s) for s in (200, 301, 404)] == [True, False, True]
    assert parse_hc_expr("%{REQUEST_STATUS} !~ /^5|^4/")(200)
    assert default_check(399) and not default_check(400) and not default_check(199)
    for bad in ("", "{}", "%{REQUEST_URI} == 1", "%{REQUEST_STATUS} =~ 200",
                "%{REQUEST_STATUS} == /x/", "(%{REQUEST_STATUS} == 200)"):
        with pytest.raises(ValueError):
            parse_hc_expr(bad)


def test_addresses_taken_out_by_health_checks_reach_members_of_another_process() -> None:
    b = make([{"hcmethod": "GET"}, {}])
    member = b.members[0]
    assert member.hc and not b.members[1].hc
    assert member.marks.skipped() == frozenset()
    pid = os.fork()
    if pid == 0:  # the watchdog's side: publish, then exit
        ok = b.table.set_hc_addresses(member.index, [("10.0.0.2", 80), ("fd00::1", 8080)])
        os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert member.marks.skipped() == {("10.0.0.2", 80), ("fd00::1", 8080)}
    assert member.marks.skipped() is member.marks.skipped()  # decoded once per change
    assert b.table.hc_addresses(b.members[1].index)[1] == frozenset()
    # a list that does not fit is cut, and says so (the rest stay in use)
    many = [(f"10.0.{i // 250}.{i % 250}", 80) for i in range(200)]
    assert not b.table.set_hc_addresses(member.index, many)
    assert 0 < len(member.marks.skipped()) < 200
    # a restart with a new table keeps what the checks took out
    again = BackendTable(b.table.specs, 1, 4, shared_lock=False)
    again.carry_over(b.table)
    assert again.hc_addresses(member.index)[1] == member.marks.skipped()
    b.table.set_hc_addresses(member.index, [])
    assert member.marks.skipped() == frozenset()


def test_an_address_that_refused_in_one_process_is_down_in_another_until_retry() -> None:
    b = make([{}, {}])
    marks, other = b.members[0].marks, b.members[1].marks
    assert marks.down() is None
    pid = os.fork()
    if pid == 0:  # another child found two addresses refusing
        marks.mark_down(("10.0.0.2", 80), 0.3)
        marks.mark_down(("fd00::2", 80, 0, 0), 30)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert marks.down() == {("10.0.0.2", 80), ("fd00::2", 80)}
    assert other.down() is None
    deadline = time.monotonic() + 5
    while marks.down() != {("fd00::2", 80)}:  # its retry is over
        assert time.monotonic() < deadline
        time.sleep(0.05)
    marks.mark_down(("10.0.0.3", 80), 30)  # the next mark prunes what is over
    assert b.table.down_addresses(b.members[0].index)[1].keys() == {("fd00::2", 80),
                                                                    ("10.0.0.3", 80)}
    again = BackendTable(b.table.specs, 1, 4, shared_lock=False)  # a restart's new table
    again.carry_over(b.table)
    assert bt.AddressMarks(again, b.members[0].index).down() == {("fd00::2", 80),
                                                                 ("10.0.0.3", 80)}


def test_every_plain_backend_has_one_error_state_record() -> None:
    routes = [("http://a:1/x", WorkerParams()), ("http://a:1/y", WorkerParams(max=3)),
              ("http://b:2/", WorkerParams()), ("balancer://c/", WorkerParams()), (None,
                                                                                  WorkerParams())]
    specs = plain_specs(routes)
    assert [(s.url, s.max, s.error_only) for s in specs] == [
        ("http://a:1", 3, False), ("http://b:2", None, True)]
    table = BackendTable(specs, 2, 4, shared_lock=False)
    errors = bt.ErrorState(table, table.index("http://b:2", "http://b:2"))
    errors.fail(5)
    assert 4 < errors.until() - time.monotonic() <= 5
    assert [s["member"] for s in table.snapshot()] == ["http://a:1"]  # b: error state only
    again = BackendTable(specs, 2, 4, shared_lock=False)
    again.carry_over(table)
    assert again.get(1, bt.ERROR_UNTIL) == table.get(1, bt.ERROR_UNTIL)


def test_queue_is_server_wide_between_two_processes() -> None:
    """A real second process takes the only slot; this one queues and is handed
    the slot, through its wake-up pipe, the moment the other process releases it.
    Then the other process dies holding a slot, and the reaper gives it back."""
    cfg = config([{"max": 1}], timeout=5.0)
    table = BackendTable(specs_for(cfg), 2, 8)
    reads, writes = make_wake_pipes(2)
    table.wake_fds, table.wake_reads = writes, reads
    go_r, go_w = os.pipe()
    held_r, held_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other "child", slot 1
        code = 1
        try:
            os.close(go_w)
            os.close(held_r)
            table.attach(1, writes, reads[1])
            other = Balancer(cfg, table=table)
            m = other.acquire()
            os.write(held_w, b"1")
            os.read(go_r, 1)  # hold it until told
            other.release(m)  # type: ignore[arg-type]
            os.read(go_r, 1)  # the other process is done with it
            got = other.acquire()  # take it again, then die holding it
            os.write(held_w, b"2" if isinstance(got, Member) else b"x")
            os.read(go_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(held_w)
    try:
        table.attach(0, writes, reads[0])
        mine = Balancer(cfg, table=table)
        assert os.read(held_r, 1) == b"1"
        assert isinstance(mine.acquire(), Verdict)  # no wait allowed: busy at once
        t0 = time.monotonic()
        os.write(go_w, b"g")
        got = mine.acquire(deadline=time.monotonic() + 5)
        assert isinstance(got, Member)
        assert time.monotonic() - t0 < 0.2, "woken by the release, not by polling"
        assert table.inflight_of(0, got.index) == 1 and got.busy == 1
        mine.release(got)
        os.write(go_w, b"g")
        assert os.read(held_r, 1) == b"2"
        os.write(go_w, b"g")
        os.waitpid(pid, 0)
        assert got.busy == 1  # the dead process's slot is still counted...
        assert table.reap_child(1) == 1  # ...until the arbiter reaps it
        assert got.busy == 0
        again = mine.acquire()
        assert isinstance(again, Member)
        mine.release(again)
    finally:
        for fd in (go_w, held_r, *reads, *writes):
            os.close(fd)
        table.close()


def test_config_summary_shows_the_balancer_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from proxympm.config.describe import describe
    from proxympm.config.loader import load_config

    conf = tmp_path / "s.conf"
    conf.write_text("""Listen 8080
ProxyHCExpr ok {%{REQUEST_STATUS} =~ /^2/}
<Proxy balancer://a>
BalancerMember http://127.0.0.1:1 max=2 hcmethod=GET hcuri=/h hcinterval=500ms hcfails=3 \\
    hcexpr=ok route=r1 status=+R
BalancerMember http://127.0.0.1:2 loadfactor=3 status=+N
ProxySet lbmethod=peakewma stickysession=JSESSIONID|jsessionid forcerecovery=off timeout=5
</Proxy>
ProxyPass /a balancer://a/
ProxyPass /b http://127.0.0.1:3/ max=4 acquire=250
""")
    config = load_config(str(conf))
    shown = describe(config)
    assert ("Balancer balancer://a: lbmethod=peakewma timeout=5 forcerecovery=Off "
            "stickysession=JSESSIONID|jsessionid") in shown
    assert "BalancerMember http://127.0.0.1:1 max=2 status=R route=r1 hcmethod=GET" in shown
    assert ("health check: GET /h every 0.5s, out after 3 failed, back after 1 good, "
            "passes if ok") in shown
    assert "status=N" in shown
    assert "/b -> http://127.0.0.1:3/ max=4 acquire=0.25" in shown
    assert "ProxyHCExpr ok {%{REQUEST_STATUS} =~ /^2/}" in shown


def _closed_loop(b: Balancer, n: int, window: int) -> dict[int, float]:
    """``n`` picks with ``window`` requests in flight (the oldest finishes first, all
    members equally fast): each member's share of the picks."""
    from collections import deque

    seen: Counter[int] = Counter()
    in_flight: deque[Member] = deque()
    for _ in range(n):
        m = b.acquire()
        seen[port(m)] += 1
        in_flight.append(m)  # type: ignore[arg-type]
        if len(in_flight) >= window:
            b.release(in_flight.popleft(), sent=200, read=800, latency=0.01)
    while in_flight:
        b.release(in_flight.popleft(), sent=200, read=800, latency=0.01)
    return {k: v / n for k, v in seen.items()}


@pytest.mark.parametrize(("method", "tolerance"), [
    ("byrequests", 0.005), ("bytraffic", 0.01), ("p2c", 0.03), ("peakewma", 0.05)])
def test_every_lbmethod_follows_loadfactor_over_thousands_of_requests(
        method: str, tolerance: float) -> None:
    """6,000 requests, 12 in flight, loadfactors 3:2:1, equally fast members."""
    b = make([{"loadfactor": 3.0}, {"loadfactor": 2.0}, {"loadfactor": 1.0}],
             lbmethod=method)
    share = _closed_loop(b, 6000, 12)
    for member, weight in ((0, 3), (1, 2), (2, 1)):
        assert abs(share[member] - weight / 6) <= tolerance, (method, share)


def test_bybusyness_weighs_only_ties_as_httpd_does() -> None:
    """httpd's bybusyness compares requests in flight alone; loadfactor breaks ties.
    So with requests overlapping, equally fast members get equal shares, and with
    none overlapping it is weighted round robin."""
    members = [{"loadfactor": 3.0}, {"loadfactor": 2.0}, {"loadfactor": 1.0}]
    overlapping = _closed_loop(make(members, lbmethod="bybusyness"), 6000, 12)
    assert all(abs(s - 1 / 3) <= 0.01 for s in overlapping.values()), overlapping
    one_at_a_time = _closed_loop(make(members, lbmethod="bybusyness"), 6000, 1)
    assert one_at_a_time == {0: 0.5, 1: 2 / 6, 2: 1 / 6}, one_at_a_time
