"""Requests waiting for a ``max`` slot hold no worker thread: they wait in the
listener (QUEUED), so the queue is longer than the server has threads, other
backends are served meanwhile, a client that leaves is dropped, and a child killed
with queued requests does not stall the others."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import time
from collections.abc import Callable

import requests

from tests.support import procs
from tests.support.backend import Backend
from tests.support.interval_app import peak_overlap
from tests.support.servers import Gunicorn, Proxy

# Four worker threads in the whole server.
FEW_THREADS = """
Timeout 30
StartServers 2
ServerLimit 2
ThreadsPerChild 2
MaxRequestWorkers 4
MinSpareThreads 1
MaxSpareThreads 8
ProxyPass /metrics !
<Location "/metrics">
    SetHandler metrics
</Location>
"""


def _wait_queued(proxy: Proxy, balancer: str, want: Callable[[int], bool],
                 timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = proxy.queued(balancer)
        if want(n):
            return n
        assert time.monotonic() < deadline, f"{balancer}: {n} queued"
        time.sleep(0.02)


def test_more_waiters_than_threads_are_all_served_and_hold_no_thread(
    proxympm: Callable[..., Proxy], gunicorn_server: Callable[..., Gunicorn],
    backend_factory: Callable[..., Backend],
) -> None:
    """32 clients behind max=2 with 4 worker threads in the server: all get 200,
    gunicorn never has more than 2 at once, and while the queue is long, a POST to
    another backend (a worker's job) and the metrics page are answered."""
    gun = gunicorn_server(app="tests.support.interval_app:app", workers=2)
    other = backend_factory("other")
    proxy = proxympm(FEW_THREADS + """
<Proxy balancer://gun>
    BalancerMember http://127.0.0.1:{g} max=2
    ProxySet timeout=60
</Proxy>
ProxyPass /app/ balancer://gun/
ProxyPass /other/ http://127.0.0.1:{o}/
""", g=gun.port, o=other.port, wait_children=2)
    n = 32
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(requests.get, f"{proxy.url}/app/slow/0.15?i={i}", timeout=60)
                   for i in range(n)]
        before = _wait_queued(proxy, "balancer://gun", lambda q: q >= 12)
        r = requests.post(f"{proxy.url}/other/form", data=b"x" * 100, timeout=10)
        assert r.status_code == 200 and r.json()["body_length"] == 100
        after = proxy.queued("balancer://gun")
        assert after > 0, "the queue drained before the other backend answered"
        responses = [f.result() for f in futures]
    assert before > 4, "no more waiters than threads"
    assert [r.status_code for r in responses] == [200] * n
    intervals = [(float(r.headers["X-App-Start"]), float(r.headers["X-App-End"]))
                 for r in responses]
    assert peak_overlap(intervals) <= 2
    assert proxy.queued("balancer://gun") == 0


def test_queue_timeout_is_503_and_a_client_that_leaves_is_dropped(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    backend = backend_factory("only")
    proxy = proxympm(FEW_THREADS + """
<Proxy balancer://long>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=30
</Proxy>
ProxyPass /long/ balancer://long/
ProxyPass /capped/ http://127.0.0.1:{b}/ max=1 acquire=800ms
""", b=backend.port, wait_children=2)
    # more clients leave the queue than the server has threads
    slow = concurrent.futures.ThreadPoolExecutor(1).submit(
        requests.get, f"{proxy.url}/long/slow/2", timeout=10)
    backend.wait_for_requests(1)
    gone = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(6)]
    for i, sock in enumerate(gone):
        sock.sendall(b"GET /long/gone%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
    _wait_queued(proxy, "balancer://long", lambda q: q == 6)
    for sock in gone:
        sock.close()
    _wait_queued(proxy, "balancer://long", lambda q: q == 0, timeout=2)  # well before 30 s
    assert slow.result().status_code == 200
    assert requests.get(f"{proxy.url}/long/after", timeout=10).status_code == 200
    assert [q.path for q in backend.requests] == ["/slow/2", "/after"]

    # a capped plain worker: the wait is `acquire`, then 503 with Retry-After, for
    # more waiters than there are threads
    with concurrent.futures.ThreadPoolExecutor(7) as pool:
        held = pool.submit(requests.get, f"{proxy.url}/capped/slow/2.5", timeout=10)
        backend.wait_for_requests(3)
        t0 = time.monotonic()
        others = list(pool.map(
            lambda i: (requests.get(f"{proxy.url}/capped/c{i}", timeout=10),
                       time.monotonic() - t0), range(6)))
        assert held.result().status_code == 200
    assert [r.status_code for r, _ in others] == [503] * 6
    assert all(r.headers["Retry-After"] == "1" for r, _ in others)
    assert min(t for _, t in others) >= 0.7, "answered before the acquire time"
    assert not [q.path for q in backend.requests if q.path.startswith("/c")]
    assert re.search(r"AH00940: http://127\.0\.0\.1:\d+: no free slot \(max=1\) within 0\.8s",
                     proxy.error_log())


def _response(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    except OSError:
        pass
    return data


def test_a_child_killed_with_queued_requests_stalls_no_one(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    """Requests queued in both children, in arrival order interleaved; one child is
    SIGKILLed: the arbiter drops its records, and the other child's queued
    requests are served (they were behind dead ones in the queue)."""
    backend = backend_factory("only")
    proxy = proxympm(FEW_THREADS + """
<Proxy balancer://one>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=30
</Proxy>
ProxyPass /one/ balancer://one/
""", b=backend.port, wait_children=2)
    pids = proxy.children()
    # the child that holds the only slot (for longer than the test) is the victim
    holder = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    holder.sendall(b"GET /one/slow/30 HTTP/1.1\r\nHost: x\r\n\r\n")
    backend.wait_for_requests(1)
    victim = procs.tcp_owner(proxy.port, holder.getsockname()[1], pids)
    assert victim in pids, victim
    survivor = next(p for p in pids if p != victim)
    owners: dict[int, list[socket.socket]] = {pid: [] for pid in pids}
    # The kernel hands a new connection to the child that registered the listening
    # socket first, for as long as it accepts; a child stops accepting (and goes
    # last) while its ThreadsPerChild workers are busy, which a burst of requests
    # does for a moment before they park. Bursts until both children hold some.
    sent = 0
    for _ in range(10):
        burst = []
        for _ in range(6):
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
            sock.sendall(b"GET /one/q%d HTTP/1.1\r\nHost: x\r\n\r\n" % sent)
            sent += 1
            burst.append(sock)
        _wait_queued(proxy, "balancer://one", lambda q, n=sent: q == n)
        for sock in burst:
            owner = procs.tcp_owner(proxy.port, sock.getsockname()[1], pids)
            assert owner in owners, owner
            owners[owner].append(sock)
        if all(len(s) >= 2 for s in owners.values()):
            break
    assert all(len(s) >= 2 for s in owners.values()), {p: len(s) for p, s in owners.items()}
    os.kill(victim, signal.SIGKILL)  # holding the slot, with queued requests
    proxy.wait_children(2, exclude=(victim,))
    for sock in owners[victim]:
        assert not _response(sock).startswith(b"HTTP/1.1 200")
    answers = [_response(sock) for sock in owners[survivor]]
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers
    served = {q.path for q in backend.requests if q.path.startswith("/q")}
    assert len(served) == len(owners[survivor])
    assert proxy.queued("balancer://one") == 0
    assert re.search(r"left 1 backend requests in flight", proxy.error_log())
    for sock in [holder, *owners[victim], *owners[survivor]]:
        sock.close()



def test_graceful_stop_serves_queued_requests_or_times_them_out(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
) -> None:
    """WINCH with requests queued: those whose slot frees in time are served, the
    others get their 503 at the queue timeout, and then the server exits."""
    backend = backend_factory("only")
    proxy = proxympm(FEW_THREADS + """
<Proxy balancer://serve>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=30
</Proxy>
<Proxy balancer://short>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=1
</Proxy>
ProxyPass /serve/ balancer://serve/
ProxyPass /short/ balancer://short/
""", b=backend.port, wait_children=2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        held = [pool.submit(requests.get, f"{proxy.url}/{b}/slow/2", timeout=20)
                for b in ("serve", "short")]
        backend.wait_for_requests(2)
        served = [pool.submit(requests.get, f"{proxy.url}/serve/s{i}", timeout=20)
                  for i in range(3)]
        _wait_queued(proxy, "balancer://serve", lambda q: q == 3)
        refused = [pool.submit(requests.get, f"{proxy.url}/short/t{i}", timeout=20)
                   for i in range(3)]
        _wait_queued(proxy, "balancer://short", lambda q: q == 3)
        os.kill(proxy.pid, signal.SIGWINCH)
        assert [f.result().status_code for f in held] == [200, 200]
        assert [f.result().status_code for f in served] == [200] * 3
        answers = [f.result() for f in refused]
    assert [(r.status_code, r.headers["Retry-After"]) for r in answers] == [(503, "1")] * 3
    assert proxy.proc is not None
    assert proxy.proc.wait(10) == 0
    assert sorted(q.path for q in backend.requests) == [
        "/s0", "/s1", "/s2", "/slow/2", "/slow/2"]


def test_a_failover_waits_in_the_queue_without_a_thread_too(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    free_port: Callable[[], int],
) -> None:
    """Requests that fail on a dead member (retry=0: never put in error state) fail
    over to a member at its max: they queue (parked, with the dead member excluded),
    more of them than the server has threads, and are all served there."""
    backend = backend_factory("only")
    proxy = proxympm(FEW_THREADS + """
<Proxy balancer://two>
    BalancerMember http://127.0.0.1:{dead} retry=0
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=30
</Proxy>
ProxyPass /two/ balancer://two/
""", b=backend.port, dead=free_port(), wait_children=2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        first = pool.submit(requests.get, f"{proxy.url}/two/slow/1.5", timeout=20)
        backend.wait_for_requests(1)
        rest = [pool.submit(requests.get, f"{proxy.url}/two/r{i}", timeout=20)
                for i in range(7)]
        _wait_queued(proxy, "balancer://two", lambda q: q == 7)
        assert first.result().status_code == 200
        assert [f.result().status_code for f in rest] == [200] * 7
    assert backend.max_concurrent == 1
    assert sorted(q.path for q in backend.requests) == sorted(
        ["/slow/1.5"] + [f"/r{i}" for i in range(7)])
    assert len(re.findall(r"failed; trying another member", proxy.error_log())) >= 7


def test_queued_tls_clients_keep_their_pipelined_requests_and_may_leave(
    proxympm: Callable[..., Proxy], backend_factory: Callable[..., Backend],
    free_port: Callable[[], int], certs: object,
) -> None:
    """Over TLS: a queued client's pipelined second request (already decrypted and
    buffered) is served after the first; a client that closes while queued leaves."""
    import ssl

    backend = backend_factory("only")
    tls_port = free_port()
    proxy = proxympm(FEW_THREADS + """
Listen 127.0.0.1:{port}
Listen 127.0.0.1:{tls} https
<Proxy balancer://one>
    BalancerMember http://127.0.0.1:{b} max=1
    ProxySet timeout=30
</Proxy>
ProxyPass /one/ balancer://one/
<VirtualHost 127.0.0.1:{tls}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile {cert}
    SSLCertificateKeyFile {key}
    ProxyPass /one/ balancer://one/
</VirtualHost>
""", b=backend.port, tls=tls_port, cert=certs.cert_pem, key=certs.key_pem,  # type: ignore[attr-defined]
        wait_children=2)
    ctx = ssl.create_default_context(cafile=str(certs.ca_pem))  # type: ignore[attr-defined]

    def tls_client() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", tls_port), timeout=20)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    holder = concurrent.futures.ThreadPoolExecutor(1).submit(
        requests.get, f"{proxy.url}/one/slow/1.5", timeout=20)
    backend.wait_for_requests(1)
    stays, leaves = tls_client(), tls_client()
    stays.sendall(b"GET /one/a1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"GET /one/a2 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    _wait_queued(proxy, "balancer://one", lambda q: q == 1)
    leaves.sendall(b"GET /one/gone HTTP/1.1\r\nHost: localhost\r\n\r\n")
    _wait_queued(proxy, "balancer://one", lambda q: q == 2)
    leaves.close()
    _wait_queued(proxy, "balancer://one", lambda q: q == 1, timeout=2)
    assert holder.result().status_code == 200
    reader = stays.makefile("rb")
    for path in ("/a1", "/a2"):  # both responses through one buffer (pipelined)
        status = reader.readline()
        assert status.startswith(b"HTTP/1.1 200"), status
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        assert path.encode() in reader.read(length)
    stays.close()
    assert [q.path for q in backend.requests] == ["/slow/1.5", "/a1", "/a2"]
