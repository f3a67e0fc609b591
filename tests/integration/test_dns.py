"""Upstream names through a real DNS server (dnsmasq on a loopback port): every
address of a name is used, changes are followed within the TTL, SRV records give
hosts and ports, an outage keeps the last good answer, the TTL floor and ceiling
hold, and the server starts while the DNS server is down.

Backends listen on distinct loopback addresses (127.0.0.2, 127.0.0.3, ...) so that
each answer can be told apart; all TTLs are 1 s and ceilings a few seconds."""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Callable

import requests

from tests.support.backend import Backend
from tests.support.dns import Dnsmasq
from tests.support.net import free_port
from tests.support.servers import Proxy

NAME_CONF = """
ProxyDNSServers {dns}
{extra}
ProxyPass "/" "http://app.test:{p}/"
"""


def _backends(factory: Callable[..., Backend], *ips: str, port: int | None = None
              ) -> list[Backend]:
    port = port or free_port()
    return [factory(f"b{ip.rsplit('.', 1)[1]}", host=ip, port=port) for ip in ips]


def _who(session: requests.Session, url: str, n: int = 1) -> list[str]:
    out = []
    for i in range(n):
        r = session.get(f"{url}/n{i}", timeout=10)
        assert r.status_code == 200, r.text
        out.append(r.json()["backend"])
    return out


def _until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def test_requests_balance_over_every_a_record_with_a_pool_per_address(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    b2, b3, b4 = _backends(backend_factory, "127.0.0.2", "127.0.0.3", "127.0.0.4")
    dns = dnsmasq({"app.test": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]})
    proxy = proxympm(NAME_CONF, dns=dns.server, p=b2.port, extra="")
    with requests.Session() as s:
        seen = Counter(_who(s, proxy.url, 30))
    assert seen == {"b2": 10, "b3": 10, "b4": 10}  # round robin per request
    # keep-alive works per address: one upstream connection each, reused
    assert [b.connections_accepted for b in (b2, b3, b4)] == [1, 1, 1]
    assert b2.requests[0].header("Host") == f"app.test:{b2.port}"


def test_added_and_removed_records_are_followed_within_the_ttl(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    b2, b3 = _backends(backend_factory, "127.0.0.2", "127.0.0.3")
    dns = dnsmasq({"app.test": ["127.0.0.2"]}, ttl=1)
    proxy = proxympm(NAME_CONF, dns=dns.server, p=b2.port, extra="")
    with requests.Session() as s:
        assert set(_who(s, proxy.url, 4)) == {"b2"}
        dns.set_hosts({"app.test": ["127.0.0.2", "127.0.0.3"]})  # added
        took = _until(lambda: "b3" in _who(s, proxy.url, 2), 5, "the added address used")
        assert took < 4  # TTL 1 s + floor 1 s, with slack for a loaded machine
        assert b2.open_connections == 1  # its pooled connection is still there
        dns.set_hosts({"app.test": ["127.0.0.3"]})  # removed
        _until(lambda: b2.open_connections == 0, 5,
               "the pooled connection to the removed address closed")
        assert set(_who(s, proxy.url, 6)) == {"b3"}
    assert "DNS: app.test now resolves to 127.0.0.3" in proxy.error_log()


def test_srv_records_give_hosts_ports_priorities_and_weights(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    t1 = backend_factory("t1", host="127.0.0.2", port=free_port())
    t2 = backend_factory("t2", host="127.0.0.3", port=free_port())
    t3 = backend_factory("t3", host="127.0.0.4", port=free_port())  # priority 1: backup
    srv = "_http._tcp.svc.test"
    dns = dnsmasq({"t1.test": ["127.0.0.2"], "t2.test": ["127.0.0.3"],
                   "t3.test": ["127.0.0.4"]},
                  srv=(f"{srv},t1.test,{t1.port},0,3", f"{srv},t2.test,{t2.port},0,1",
                       f"{srv},t3.test,{t3.port},1,1"))
    proxy = proxympm("""
ProxyDNSServers {dns}
<Proxy "balancer://k8s">
    BalancerMember "http://_http._tcp.svc.test" srv=on
</Proxy>
ProxyPass "/" "balancer://k8s/"
""", dns=dns.server)
    with requests.Session() as s:
        seen = Counter(_who(s, proxy.url, 40))
        assert seen == {"t1": 30, "t2": 10}  # weights 3:1; priority 1 unused
        assert t1.requests[0].header("Host") == "svc.test"  # the SRV name's domain
        t1.stop()
        t2.stop()
        # the lowest priority is unreachable: the next one serves, without errors
        assert set(_who(s, proxy.url, 5)) == {"t3"}


def test_dns_outage_keeps_traffic_on_the_last_good_answer(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    b2, b3 = _backends(backend_factory, "127.0.0.2", "127.0.0.3")
    dns = dnsmasq({"app.test": ["127.0.0.2"]}, ttl=1)
    proxy = proxympm(NAME_CONF, dns=dns.server, p=b2.port, extra="ProxyDNSTTLCeiling 2")
    with requests.Session() as s:
        assert _who(s, proxy.url) == ["b2"]
        dns.stop()
        proxy.wait_for_log("error", r"DNS lookup failure for: app\.test .*keeping the last "
                           r"good answer \(127\.0\.0\.2:\d+\)", timeout=5)
        # several failed refreshes later (floor 1 s, ceiling 2 s), still served
        end = time.monotonic() + 3
        while time.monotonic() < end:
            assert _who(s, proxy.url, 3) == ["b2"] * 3
        assert proxy.error_log().count("DNS lookup failure for: app.test") == 1  # once
        dns.set_hosts({"app.test": ["127.0.0.3"]})
        dns.start(ttl=1)
        _until(lambda: _who(s, proxy.url) == ["b3"], 5, "the new answer used after the outage")
    proxy.wait_for_log("error", r"DNS lookup for app\.test works again")


def test_nxdomain_drops_the_addresses_after_the_ceiling(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    (b2,) = _backends(backend_factory, "127.0.0.2")
    dns = dnsmasq({"app.test": ["127.0.0.2"]}, ttl=1)
    proxy = proxympm(NAME_CONF, dns=dns.server, p=b2.port, extra="ProxyDNSTTLCeiling 2")
    with requests.Session() as s:
        assert _who(s, proxy.url) == ["b2"]
        dns.set_hosts({})  # authoritative NXDOMAIN from now on
        _until(lambda: s.get(f"{proxy.url}/x", timeout=10).status_code == 503, 6,
               "503 once the name is gone for longer than the ceiling")
    assert "dropping its addresses" in proxy.error_log()


def test_ttl_ceiling_bounds_a_long_ttl(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    b2, b3 = _backends(backend_factory, "127.0.0.2", "127.0.0.3")
    dns = dnsmasq({"app.test": ["127.0.0.2"]}, ttl=3600)
    proxy = proxympm(NAME_CONF, dns=dns.server, p=b2.port, extra="ProxyDNSTTLCeiling 2")
    with requests.Session() as s:
        assert _who(s, proxy.url) == ["b2"]
        dns.set_hosts({"app.test": ["127.0.0.3"]})
        _until(lambda: _who(s, proxy.url) == ["b3"], 6,
               "a TTL 3600 answer asked again after the 2 s ceiling")


def test_ttl_floor_holds_a_short_ttl(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    b2, b3 = _backends(backend_factory, "127.0.0.2", "127.0.0.3")
    dns = dnsmasq({"app.test": ["127.0.0.2"]}, ttl=1)
    proxy = proxympm(NAME_CONF, dns=dns.server, p=b2.port, extra="ProxyDNSTTLFloor 5")
    with requests.Session() as s:
        assert _who(s, proxy.url) == ["b2"]
        asked = dns.queries("app.test")
        assert asked >= 1
        dns.set_hosts({"app.test": ["127.0.0.3"]})
        # TTL 1 s, but no new question before the 5 s floor: the old answer stays
        end = time.monotonic() + 2
        while time.monotonic() < end:
            assert _who(s, proxy.url, 2) == ["b2", "b2"]
        assert dns.queries("app.test") == asked
        _until(lambda: _who(s, proxy.url) == ["b3"], 8, "asked again once the floor passed")


def test_server_starts_with_the_dns_server_down_and_recovers(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    (b2,) = _backends(backend_factory, "127.0.0.2")
    dns = dnsmasq({"app.test": ["127.0.0.2"]}, start=False)
    proxy = proxympm(NAME_CONF, dns=dns.server, p=b2.port, extra="ProxyDNSTTLCeiling 2")
    proxy.wait_for_log("error", r"DNS lookup failure for: app\.test .*requests for it get "
                       r"503 until it resolves")
    with requests.Session() as s:
        r = s.get(f"{proxy.url}/x", timeout=10)
        assert r.status_code == 503
        dns.start(ttl=1)
        _until(lambda: s.get(f"{proxy.url}/x", timeout=10).status_code == 200, 6,
               "served once the DNS server is up")
    assert proxy.running()


def test_a_member_without_addresses_fails_over_and_is_not_put_in_error(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    (b2,) = _backends(backend_factory, "127.0.0.2")
    b3 = backend_factory("b3", host="127.0.0.3", port=b2.port)
    dns = dnsmasq({"good.test": ["127.0.0.2"]}, ttl=1)  # gone.test: NXDOMAIN
    proxy = proxympm("""
ProxyDNSServers {dns}
ProxyDNSTTLCeiling 2
<Proxy "balancer://mixed">
    BalancerMember "http://gone.test:{p}"
    BalancerMember "http://good.test:{p}"
</Proxy>
ProxyPass "/" "balancer://mixed/"
""", dns=dns.server, p=b2.port)
    with requests.Session() as s:
        assert set(_who(s, proxy.url, 6)) == {"b2"}  # every request failed over
        # the member was not put in error for retry=60 s: once its name resolves,
        # it takes its share at once
        dns.set_hosts({"good.test": ["127.0.0.2"], "gone.test": ["127.0.0.3"]})
        _until(lambda: "b3" in _who(s, proxy.url, 2), 5, "the member used once it resolves")
    assert b3.requests


def test_a_streamed_body_from_a_removed_address_is_not_pooled_after_it(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    """A body the listener relays (flushpackets=on) from an address that leaves the
    name meanwhile: its upstream connection is closed at the end, as one relayed by a
    worker is, not kept in the pool where no request would ever take it again."""
    import socket

    (b2,) = _backends(backend_factory, "127.0.0.2")
    dns = dnsmasq({"app.test": ["127.0.0.2"]}, ttl=1)
    size = 16_000_000  # more than the socket buffers hold: the stream waits for us
    proxy = proxympm("""
ProxyDNSServers {dns}
ProxyPass "/" "http://app.test:{p}/" flushpackets=on
""", dns=dns.server, p=b2.port)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        got = b""
        while b"\r\n\r\n" not in got:
            data = s.recv(65536)
            assert data, got
            got += data
        # the client reads no more: the listener holds the stream, reading nothing
        dns.set_hosts({"app.test": ["127.0.0.3"]})
        proxy.wait_for_log("error", r"DNS: app\.test now resolves to 127\.0\.0\.3")
        head, body = got.split(b"\r\n\r\n", 1)
        assert b"content-length: %d" % size in head.lower()
        received = len(body)
        while received < size:
            data = s.recv(1 << 20)
            assert data, received
            received += len(data)
    _until(lambda: b2.open_connections == 0, 5,
           "the connection to the removed address closed after its stream")


def test_health_checks_take_out_one_srv_target_and_bring_it_back(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    """The watchdog resolves the SRV name as the children do and checks each target:
    one that fails its checks gets no client request from any child until it has
    passed ``hcpasses`` checks again; the member stays in (its other target is fine)."""
    t1 = backend_factory("t1", host="127.0.0.2", port=free_port())
    t2 = backend_factory("t2", host="127.0.0.3", port=free_port())
    t2.health_status = 503
    srv = "_http._tcp.hc.test"
    dns = dnsmasq({"t1.test": ["127.0.0.2"], "t2.test": ["127.0.0.3"]},
                  srv=(f"{srv},t1.test,{t1.port},0,1", f"{srv},t2.test,{t2.port},0,1"))
    proxy = proxympm("""
StartServers 2
ServerLimit 2
ThreadsPerChild 4
MaxRequestWorkers 8
ProxyDNSServers {dns}
<Proxy "balancer://k8s">
    BalancerMember "http://_http._tcp.hc.test" srv=on hcmethod=GET hcuri=/health \\
        hcinterval=200ms hcfails=1 hcpasses=2
</Proxy>
ProxyPass "/" "balancer://k8s/"
""", dns=dns.server, wait_children=3)
    proxy.wait_for_log("error", rf"DISABLING 127.0.0.3:{t2.port} of "
                       rf"http://_http._tcp.hc.test after 1 failed checks \(last result 503\)")
    seen = Counter(requests.get(f"{proxy.url}/n{i}", timeout=10).json()["backend"]
                   for i in range(20))
    assert seen == {"t1": 20}
    assert not [q for q in t2.requests if q.path != "/health"], "t2 served a client"
    assert "DISABLING http://_http._tcp.hc.test" not in proxy.error_log()
    t2.health_status = 200
    proxy.wait_for_log("error", rf"ENABLING 127.0.0.3:{t2.port} of "
                       r"http://_http._tcp.hc.test after 2 good checks")
    seen = Counter(requests.get(f"{proxy.url}/m{i}", timeout=10).json()["backend"]
                   for i in range(20))
    assert seen["t2"] >= 5, seen


def test_an_address_that_refused_in_one_child_is_avoided_by_the_other(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    """A name with two addresses, one refusing: once one child has found it so, the
    other child does not try it either (a listener started there meanwhile sees no
    connection) until ``retry`` is over."""
    port = free_port()
    (b2,) = _backends(backend_factory, "127.0.0.2", port=port)
    dns = dnsmasq({"app.test": ["127.0.0.2", "127.0.0.3"]}, ttl=60)
    proxy = proxympm("""
StartServers 2
ServerLimit 2
ThreadsPerChild 8
MaxRequestWorkers 16
LogFormat "%P %>s %U" pids
CustomLog {access_log} pids
ProxyDNSServers {dns}
ProxyPass "/" "http://app.test:{p}/" retry=4
""", dns=dns.server, p=port, wait_children=2)
    t0 = time.monotonic()
    with requests.Session() as s:  # one connection, one child: its rotation tries both
        assert _who(s, proxy.url, 2) == ["b2", "b2"]
    (b3,) = _backends(backend_factory, "127.0.0.3", port=port)  # a connect would be seen
    served: Counter[str] = Counter()
    # Rounds of new connections until the other child served 2. Which child accepts
    # is the kernel's choice: it wakes one waiting child, and a child that keeps up
    # is waiting again by the next connect, so a round must be wider than one child
    # takes in at once.
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for i in range(10):
            got = list(pool.map(lambda k: requests.get(f"{proxy.url}/r{k}", timeout=10),
                                range(i * 32, i * 32 + 32)))
            assert {r.json()["backend"] for r in got} == {"b2"}
            served = Counter(line.split()[0] for line in proxy.access_log().splitlines())
            if len(served) == 2 and min(served.values()) >= 2:
                break
    assert len(served) == 2 and min(served.values()) >= 2, f"a child served too few: {served}"
    assert time.monotonic() - t0 < 3.5, "test too slow to check the retry window"
    assert b3.connections_accepted == 0, "a child tried the address another found refusing"
    time.sleep(max(0.0, t0 + 4.3 - time.monotonic()))
    with requests.Session() as s:
        assert "b3" in _who(s, proxy.url, 4)


def test_a_failing_name_is_logged_by_the_children_not_also_by_the_watchdog(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    """The watchdog resolves health-checked members itself, but only the children
    say that a name does not resolve: one line per child, not one more."""
    (b2,) = _backends(backend_factory, "127.0.0.2")
    dns = dnsmasq({"good.test": ["127.0.0.2"]}, ttl=1)  # gone.test: NXDOMAIN
    proxy = proxympm("""
LogLevel info
StartServers 1
ServerLimit 1
ProxyDNSServers {dns}
<Proxy "balancer://hc">
    BalancerMember "http://good.test:{p}" hcmethod=GET hcuri=/health hcinterval=200ms
    BalancerMember "http://gone.test:{p}" hcmethod=GET hcuri=/health hcinterval=200ms
</Proxy>
ProxyPass "/" "balancer://hc/"
""", dns=dns.server, p=b2.port)
    proxy.wait_for_log("error", r"watchdog \d+ running 2 health checks")
    proxy.wait_for_log("error", r"DNS lookup failure for: gone\.test")
    _until(lambda: dns.queries("gone.test") >= 2, 6, "both processes asked for gone.test")
    time.sleep(0.5)  # a line from the watchdog would be written by now
    assert proxy.error_log().count("DNS lookup failure for: gone.test") == 1
