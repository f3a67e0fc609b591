"""Accept balance (proxympm/mpm/balance.py): the children share long-lived
connections evenly, however the kernel hands them out, and a child that holds back
for a peer never leaves clients waiting on a peer that does not take them."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.support import procs
from tests.support.backend import Backend
from tests.support.rawhttp import RawClient
from tests.support.servers import Proxy

CONFIG = """
StartServers 2
ServerLimit 2
ThreadsPerChild 8
MaxRequestWorkers 16
KeepAliveTimeout 60
ProxyPass "/" "{backend}/"
"""


def _get(sock: socket.socket, port: int) -> int:
    """One keep-alive GET on ``sock``: its status."""
    client = RawClient.over(sock, port)
    return client.request("GET", "/x").status


@contextmanager
def _connections() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for s in held:
            s.close()


def _until_stopped(pid: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        states = set()
        for tid in procs.thread_ids(pid):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.add(f.read().rsplit(")", 1)[1].split()[0])
        if states == {"T"}:
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.01)


def _owners(proxy: Proxy, held: list[socket.socket], kids: list[int]) -> Counter[int | None]:
    return Counter(procs.tcp_owner(proxy.port, s.getsockname()[1], kids) for s in held)


def test_connections_opened_one_by_one_are_shared_by_the_children(
    proxympm: Callable[..., Proxy], backend: Backend,
) -> None:
    """Without balance an idle server's first child in the kernel's wait queue is
    woken for every connect, and takes all of a pool opened one at a time."""
    proxy = proxympm(CONFIG, backend=backend.url, wait_children=2)
    kids = proxy.children()
    assert len(kids) == 2
    with _connections() as held:
        for _ in range(24):
            s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
            held.append(s)
            assert _get(s, proxy.port) == 200
            time.sleep(0.02)  # every child is waiting again before the next one
        owners = _owners(proxy, held, kids)
    assert set(owners) == set(kids), owners
    assert min(owners.values()) >= 10, owners  # even, within SLACK


def test_a_burst_of_connections_is_shared_by_the_children(
    proxympm: Callable[..., Proxy], backend: Backend,
) -> None:
    """50 connects at once (a load balancer's pool, wrk's start): the first child
    woken used to accept everything queued, other children's wake-ups included."""
    proxy = proxympm(CONFIG, backend=backend.url, wait_children=2)
    kids = proxy.children()
    with _connections() as held:
        for _ in range(50):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", proxy.port))
            held.append(s)
        for s in held:
            assert _get(s, proxy.port) == 200
        owners = _owners(proxy, held, kids)
    assert set(owners) == set(kids), owners
    assert min(owners.values()) >= 20, owners


def test_a_child_that_holds_back_takes_its_clients_when_the_peer_does_not(
    proxympm: Callable[..., Proxy], backend: Backend,
) -> None:
    """The less loaded child is stopped (SIGSTOP: its scoreboard still says it
    takes connections). The other child holds back for it, gets no help, and
    accepts every client itself after the hold: no client is left in the backlog."""
    proxy = proxympm(CONFIG, backend=backend.url, wait_children=2)
    stuck, alive = proxy.children()[:2]
    os.kill(stuck, signal.SIGSTOP)
    try:
        _until_stopped(stuck)  # every thread: the listener may not accept on its way
        with _connections() as held:
            t0 = time.monotonic()
            for _ in range(12):
                s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
                held.append(s)
                assert _get(s, proxy.port) == 200
            took = time.monotonic() - t0
            owners = _owners(proxy, held, [stuck, alive])
        assert owners == {alive: 12}, owners
        assert took < 3, f"12 connections took {took:.2f} s"
    finally:
        os.kill(stuck, signal.SIGCONT)
    assert "holding" not in proxy.error_log()
