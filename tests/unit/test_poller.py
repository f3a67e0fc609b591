"""The listener's pollers: one-shot delivery and re-arming from another thread."""

from __future__ import annotations

import socket
import threading

import pytest

from proxympm.mpm.poller import READ, WRITE, EpollPoller, SelectorPoller, make_poller

POLLERS = [EpollPoller, SelectorPoller]


@pytest.mark.parametrize("cls", POLLERS, ids=lambda c: c.name)
def test_one_shot_then_rearm_from_another_thread(cls: type) -> None:
    poller = cls()
    if isinstance(poller, SelectorPoller):
        poller.bind_thread()
    a, b = socket.socketpair()
    try:
        poller.add(a.fileno(), READ)
        b.send(b"x")
        assert poller.poll(1.0) == [(a.fileno(), READ)]
        # Still readable, but disarmed: no second report.
        assert poller.poll(0.05) == []
        t = threading.Thread(target=poller.arm, args=(a.fileno(), READ))
        t.start()
        t.join()
        assert poller.poll(1.0) == [(a.fileno(), READ)]
        poller.arm(a.fileno(), WRITE)
        assert poller.poll(1.0) == [(a.fileno(), WRITE)]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("cls", POLLERS, ids=lambda c: c.name)
def test_persistent_fds_stay_armed(cls: type) -> None:
    poller = cls()
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    try:
        poller.add_persistent(server.fileno(), exclusive=True)
        clients = [socket.create_connection(server.getsockname()) for _ in range(2)]
        assert (server.fileno(), READ) in poller.poll(1.0)
        server.accept()[0].close()
        assert (server.fileno(), READ) in poller.poll(1.0)  # level-triggered, not one-shot
        poller.remove_persistent(server.fileno())
        assert poller.poll(0.05) == []
        for c in clients:
            c.close()
    finally:
        server.close()


@pytest.mark.parametrize("cls", POLLERS, ids=lambda c: c.name)
def test_forgotten_fd_is_silent_and_can_be_added_again(cls: type) -> None:
    """An upstream socket leaves the listener for the pool (forget) and may come back
    later, still open, as another stream's upstream (add)."""
    poller = cls()
    if isinstance(poller, SelectorPoller):
        poller.bind_thread()
    a, b = socket.socketpair()
    try:
        poller.add(a.fileno(), READ)
        poller.forget(a.fileno())
        b.send(b"x")
        assert poller.poll(0.05) == []
        poller.add(a.fileno(), READ)
        assert poller.poll(1.0) == [(a.fileno(), READ)]
    finally:
        a.close()
        b.close()


def test_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_poller().name == "epoll"
    monkeypatch.setenv("PROXYMPM_POLLER", "selectors")
    assert make_poller().name == "selectors"
