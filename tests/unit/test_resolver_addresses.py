"""AddressSet: how one upstream name's addresses are chosen (sans-I/O)."""

from __future__ import annotations

import socket
from collections import Counter

from proxympm.proxy.resolver import AddressSet, Endpoint, Resolver

V4 = socket.AF_INET


def ep(last: int, port: int = 80, priority: int = 0, weight: int = 1) -> Endpoint:
    return Endpoint(V4, (f"10.0.0.{last}", port), priority, weight)


def firsts(aset: AddressSet, n: int) -> list[int]:
    return [int(aset.order()[0].sockaddr[0].rsplit(".", 1)[1]) for _ in range(n)]


def test_round_robin_over_a_records_and_every_address_offered_as_fallback() -> None:
    aset = AddressSet("app:80", [ep(1), ep(2), ep(3)])
    assert firsts(aset, 6) == [1, 2, 3, 1, 2, 3]
    assert sorted(e.sockaddr[0] for e in aset.order()) == ["10.0.0.1", "10.0.0.2",
                                                              "10.0.0.3"]


def test_srv_weights_are_smooth_and_lower_priority_wins() -> None:
    aset = AddressSet("_http._tcp.app", [ep(1, weight=3), ep(2, weight=1),
                                         ep(3, priority=1, weight=100)])
    picks = firsts(aset, 8)
    assert Counter(picks) == {1: 6, 2: 2}
    assert picks[:4].count(2) == 1  # spread out, not 1,1,1,2 bursts...
    order = aset.order()
    assert order[-1].sockaddr[0] == "10.0.0.3"  # ...and the backup priority is last


def test_zero_weights_count_only_when_the_whole_priority_has_them() -> None:
    assert set(firsts(AddressSet("s", [ep(1, weight=0), ep(2, weight=0)]), 4)) == {1, 2}
    assert set(firsts(AddressSet("s", [ep(1, weight=0), ep(2, weight=5)]), 4)) == {2}


def test_an_address_marked_down_is_offered_last() -> None:
    aset = AddressSet("app:80", [ep(1), ep(2), ep(3, priority=1)])
    down = frozenset({("10.0.0.1", 80)})
    assert [aset.order(down=down)[0].sockaddr[0] for _ in range(3)] == ["10.0.0.2"] * 3
    assert aset.order(down=down)[-1].sockaddr[0] == "10.0.0.1"  # still tried, last
    down |= {("10.0.0.2", 80)}
    assert aset.order(down=down)[0].sockaddr[0] == "10.0.0.3"  # priority 1 once 0 is down
    assert set(firsts(aset, 4)) == {1, 2}


def test_replace_reports_removed_addresses_and_forgets_their_state() -> None:
    aset = AddressSet("app:80", [ep(1), ep(2)])
    removed = aset.replace([ep(2), ep(3)])
    assert removed == [("10.0.0.1", 80)]
    assert not aset.listed(("10.0.0.1", 80)) and aset.listed(("10.0.0.3", 80))
    aset.replace([ep(1), ep(2), ep(3)])
    assert 1 in firsts(aset, 3)


def test_literals_never_touch_dns() -> None:
    r = Resolver()
    aset = r.address_set("::1", 8080)
    assert [(e.family, e.sockaddr) for e in aset.order()] == [(socket.AF_INET6,
                                                              ("::1", 8080, 0, 0))]
    r.start(wait=0.1)  # nothing to resolve: no thread
    assert r._thread is None


def test_addresses_taken_out_by_health_checks_are_never_offered_unless_all_are() -> None:
    aset = AddressSet("_http._tcp.app", [ep(1), ep(2), ep(3)])
    skip = frozenset({("10.0.0.2", 80)})
    for _ in range(6):
        assert "10.0.0.2" not in [e.sockaddr[0] for e in aset.order(skip=skip)]
    assert len(aset.order(skip=frozenset({("10.0.0.1", 80), ("10.0.0.3", 80)}))) == 1
    every = frozenset(e.sockaddr for e in aset.endpoints)
    assert len(aset.order(skip=every)) == 3  # all out: try them all anyway
