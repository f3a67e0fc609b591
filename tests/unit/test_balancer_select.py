"""Balancer selection, queueing and config (no sockets): proxympm.proxy.balancer."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from proxympm.config.describe import describe
from proxympm.config.errors import ConfigError
from proxympm.config.loader import load_config
from proxympm.config.model import Balancer as BalancerConfig
from proxympm.config.model import BalancerMember, BalancerSettings, WorkerParams
from proxympm.http.errors import ClientGone
from proxympm.proxy.balancer import Balancer, Balancers, Member, Verdict
from proxympm.proxy.routing import Router


def make(members: list[dict[str, object]], seed: int = 7, **settings: object) -> Balancer:
    config = BalancerConfig(
        "balancer://t",
        tuple(BalancerMember(f"http://127.0.0.1:{9000 + i}", WorkerParams(**m))  # type: ignore[arg-type]
              for i, m in enumerate(members)),
        BalancerSettings(**settings),  # type: ignore[arg-type]
    )
    return Balancer(config, rng=random.Random(seed))


def port(m: Member) -> int:
    return m.target.port - 9000


def run(b: Balancer, n: int, hold: int = 0) -> Counter[int]:
    """n sequential picks; with ``hold``, keep that many in flight (oldest released)."""
    seen: Counter[int] = Counter()
    inflight: list[Member] = []
    for _ in range(n):
        m = b.acquire()
        assert isinstance(m, Member)
        seen[port(m)] += 1
        inflight.append(m)
        if len(inflight) > hold:
            b.release(inflight.pop(0))
    for m in inflight:
        b.release(m)
    return seen


# -- distribution ---------------------------------------------------------------------


def test_byrequests_is_smooth_weighted_round_robin() -> None:
    b = make([{"loadfactor": 70.0}, {"loadfactor": 30.0}])
    order = [port(b.acquire()) for _ in range(10)]  # type: ignore[arg-type]
    assert Counter(order) == {0: 7, 1: 3}
    assert order[:4] != [0, 0, 0, 0] or order[4:7] != [0, 0, 0]  # interleaved, not bursts
    b = make([{"loadfactor": 5.0}, {"loadfactor": 3.0}, {"loadfactor": 2.0}])
    assert run(b, 5000) == {0: 2500, 1: 1500, 2: 1000}  # exact, deterministic


def test_bybusyness_picks_fewest_in_flight_and_ties_by_weight() -> None:
    b = make([{"loadfactor": 3.0}, {"loadfactor": 1.0}], lbmethod="bybusyness")
    assert run(b, 4000) == {0: 3000, 1: 1000}  # always idle: weighted round robin
    b = make([{}, {}, {}], lbmethod="bybusyness")
    held = [b.acquire() for _ in range(3)]
    assert sorted(port(m) for m in held) == [0, 1, 2]  # type: ignore[arg-type]
    b.release(held[1])  # type: ignore[arg-type]
    again = b.acquire()
    assert again is held[1]  # the only one with nothing in flight


def test_p2c_follows_loadfactor_and_avoids_the_busy_member() -> None:
    b = make([{"loadfactor": 2.0}, {"loadfactor": 1.0}, {"loadfactor": 1.0}],
             lbmethod="p2c", seed=1)
    seen = run(b, 8000)
    assert abs(seen[0] / 8000 - 0.5) < 0.03
    assert abs(seen[1] / 8000 - 0.25) < 0.03
    # with requests held open, the load stays even
    b = make([{}, {}, {}, {}], lbmethod="p2c", seed=2)
    held = [b.acquire() for _ in range(400)]
    busy = sorted(m.busy for m in b.members)
    assert busy[-1] - busy[0] <= 2, busy
    for m in held:
        b.release(m)  # type: ignore[arg-type]
    assert all(m.busy == 0 for m in b.members)


def test_lbset_and_hot_standby_order() -> None:
    b = make([{"lbset": 1}, {}, {"status": "H"}, {"lbset": 1, "status": "H"}],
             forcerecovery=False)
    assert set(run(b, 20)) == {1}  # lbset 0, no standby
    b.mark_failed(b.members[1])
    assert set(run(b, 20)) == {2}  # lbset 0's hot standby
    b.mark_failed(b.members[2])
    assert set(run(b, 20)) == {0}  # then lbset 1
    b.mark_failed(b.members[0])
    assert set(run(b, 20)) == {3}
    b.mark_failed(b.members[3])
    verdict = b.acquire()
    assert isinstance(verdict, Verdict) and verdict.reason == "down"
    assert 59 <= verdict.retry_after <= 60


def test_error_state_expires_and_flags() -> None:
    b = make([{"retry": 1.0}, {"status": "I"}, {"status": "D"}, {"status": "S"}])
    assert set(run(b, 10)) == {0, 1}
    assert b.mark_failed(b.members[0], now=time.monotonic() - 0.5)
    assert not b.mark_failed(b.members[1])  # +I: errors ignored
    assert set(run(b, 10)) == {1}
    time.sleep(0.6)
    assert set(run(b, 10)) == {0, 1}
    zero = make([{"retry": 0.0}])
    assert not zero.mark_failed(zero.members[0])  # retry=0: always retried


def test_excluded_members_and_maxattempts() -> None:
    b = make([{}, {}, {}])
    first = b.acquire()
    assert isinstance(first, Member)
    b.release(first)
    other = b.acquire({first})
    assert isinstance(other, Member) and other is not first
    b.release(other)
    assert isinstance(b.acquire(set(b.members)), Verdict)
    assert b.maxattempts == 2
    assert make([{}]).maxattempts == 1
    assert make([{}, {}], nofailover=True).maxattempts == 0
    assert make([{}, {}], maxattempts=5).maxattempts == 5
    empty = Balancers(()).get("balancer://nobody/x")
    assert isinstance(empty.acquire(), Verdict)


# -- max and the queue -----------------------------------------------------------------


def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_max_queue_is_fifo_and_hands_slots_over() -> None:
    b = make([{"max": 1}, {"max": 1}])
    a, c = b.acquire(), b.acquire()
    assert isinstance(a, Member) and isinstance(c, Member) and a is not c
    assert isinstance(b.acquire(deadline=None), Verdict)  # no timeout: 503 at once
    order: list[int] = []
    got: dict[int, Member] = {}

    def waiter(i: int) -> None:
        m = b.acquire(deadline=time.monotonic() + 5)
        assert isinstance(m, Member)
        order.append(i)
        got[i] = m

    threads = []
    for i in range(4):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        wait_for(lambda n=i + 1: len(b.waiters) == n)  # arrival order
    for held in (a, c):
        b.release(held)  # type: ignore[arg-type]
    wait_for(lambda: len(got) == 2)
    assert sorted(got) == [0, 1]  # the first two in line, not the later ones
    b.release(got[0])
    wait_for(lambda: len(got) == 3)
    assert sorted(got) == [0, 1, 2]
    b.release(got[1])
    for t in threads:
        t.join(5)
    assert sorted(got) == [0, 1, 2, 3]
    b.release(got[2])
    b.release(got[3])
    assert [m.busy for m in b.members] == [0, 0] and not b.waiters


def test_queue_timeout_and_client_gone() -> None:
    b = make([{"max": 1}], timeout=1.0)
    held = b.acquire()
    assert isinstance(held, Member)
    t0 = time.monotonic()
    verdict = b.acquire(deadline=t0 + 0.4)
    assert isinstance(verdict, Verdict) and verdict.reason == "busy"
    assert verdict.retry_after == 1
    assert 0.35 < time.monotonic() - t0 < 1.0
    assert not b.waiters
    calls = []

    def gone() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(ClientGone):
        b.acquire(deadline=time.monotonic() + 5, gone=gone)
    assert not b.waiters
    b.release(held)
    assert b.members[0].busy == 0


def test_waiters_learn_when_their_members_go_down() -> None:
    b = make([{"max": 1}])
    held = b.acquire()
    assert isinstance(held, Member)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(b.acquire(deadline=time.monotonic() + 5)))
    t.start()
    wait_for(lambda: len(b.waiters) == 1)
    b.mark_failed(held)
    t.join(2)
    assert isinstance(result[0], Verdict) and result[0].reason == "down"
    b.release(held)


# -- config ------------------------------------------------------------------------------


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    conf = tmp_path / "b.conf"
    conf.write_text("Listen 8080\n" + text)
    return load_config(str(conf))


def test_config_sections_members_and_settings(tmp_path: Path) -> None:
    config = load(tmp_path, """
<Proxy "balancer://App">
    BalancerMember "http://127.0.0.1:9001/" loadfactor=2.5 max=2 retry=5
    BalancerMember http://127.0.0.1:9002 lbset=1 status=+H-D route=b timeout=3
    ProxySet lbmethod=bybusyness timeout=4
</Proxy>
BalancerMember balancer://other http://127.0.0.1:9003
ProxySet balancer://other lbmethod=p2c
ProxyPass /a balancer://app/x maxattempts=3 nofailover=off failonstatus=500,503 \\
    failontimeout=on responsebuffering=off
ProxyPassReverse /a balancer://app/x
ProxyPass /o balancer://other/
""")
    app, other = config.balancers
    assert app.name == "balancer://app"
    assert [m.url for m in app.members] == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    p1, p2 = app.members[0].params, app.members[1].params
    assert (p1.loadfactor, p1.max, p1.retry) == (2.5, 2, 5.0)
    assert (p2.lbset, p2.status, p2.route, p2.timeout) == (1, "H", "b", 3.0)
    assert app.settings == BalancerSettings(
        lbmethod="bybusyness", timeout=4.0, maxattempts=3, failonstatus=(500, 503),
        failontimeout=True)
    assert other.settings.lbmethod == "p2c"
    assert config.main.routes[0].params.response_buffering is False
    assert [r.url for r in config.main.reverse_rules] == [
        "http://127.0.0.1:9001/x", "http://127.0.0.1:9002/x"]
    router = Router(config.main.routes, Balancers(config.balancers))
    route, path = router.match(b"/a/b?q=1")  # type: ignore[misc]
    assert route.target is not None and route.target.balancer is not None
    assert path == b"/x/b?q=1"
    assert {t.port for t in router.backends()} == {9001, 9002, 9003}
    member = route.target.balancer.members[0]
    assert member.upstream_path(path) == b"/x/b?q=1"
    shown = describe(config)  # proxympm -S
    assert "Balancer balancer://app: lbmethod=bybusyness timeout=4 maxattempts=3" in shown
    assert "BalancerMember http://127.0.0.1:9002 timeout=3 lbset=1 status=H route=b" in shown


@pytest.mark.parametrize(("text", "message"), [
    ("<Proxy http://x/>\n</Proxy>\n", "only <Proxy balancer://name>"),
    ("BalancerMember http://127.0.0.1:1\n", "must define balancer name"),
    ("<Proxy balancer://a>\nBalancerMember http://h loadfactor=0\n</Proxy>\n",
     "LoadFactor must be a number between 1..100"),
    ("<Proxy balancer://a>\nBalancerMember http://h lbset=100\n</Proxy>\n", "LB Set"),
    ("<Proxy balancer://a>\nBalancerMember http://h status=+E\n</Proxy>\n", "'E' is not"),
    ("<Proxy balancer://a>\nBalancerMember http://h status=+Q\n</Proxy>\n",
     "Unknown status parameter"),
    ("<Proxy balancer://a>\nBalancerMember http://h\nBalancerMember http://h/\n</Proxy>\n",
     "already a member"),
    ("<Proxy balancer://a>\nBalancerMember http://h requestbuffering=off\n</Proxy>\n",
     "belongs on the balancer's ProxyPass"),
    ("<Proxy balancer://a>\nProxySet lbmethod=heartbeat\n</Proxy>\n", "unknown lbmethod"),
    ("<Proxy balancer://a>\nProxySet nonce=x\n</Proxy>\n", "'nonce' is not supported"),
    ("<Proxy balancer://a>\nProxySet stickysession=a|b|c\n</Proxy>\n",
     "stickysession must be"),
    ("<Proxy balancer://a>\nBalancerMember http://h hcmethod=PUT\n</Proxy>\n",
     "hcmethod must be"),
    ("<Proxy balancer://a>\nBalancerMember http://h hcmethod=GET hcexpr=nope\n</Proxy>\n",
     "hcexpr 'nope' is not defined"),
    ("ProxyHCExpr bad {hc('body') =~ /x/}\n", "subset"),
    ("ProxyPass / http://h/ hcmethod=GET\n", "only valid on a BalancerMember"),
    ("<Proxy balancer://a>\nProxySet failonstatus=5xx\n</Proxy>\n", "failonstatus must be"),
    ("<Proxy balancer://a>\nProxySet timeout=0\n</Proxy>\n", "at least one second"),
    ("ProxyPass / balancer://a/ ttl=5\n", "unknown Balancer parameter 'ttl'"),
    ("ProxyPass / http://h/ loadfactor=2\n", "only valid on a BalancerMember"),
    ("<Proxy balancer://a>\nProxyPass / http://h/\n</Proxy>\n", "not allowed here"),
    ("<Proxy balancer://a>\nBalancerMember https://h\n</Proxy>\nProxyPass / balancer://a/\n",
     "needs SSLProxyEngine on"),
])
def test_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert message in str(info.value)
