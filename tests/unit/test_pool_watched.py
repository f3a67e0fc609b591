"""The listener's idle upstream connections (pool.py: ``watched``): taken without an
EOF check, dropped when an event on one is confirmed, and never given to a worker."""

from __future__ import annotations

import socket

from proxympm.proxy.pool import Pool, Upstream
from proxympm.proxy.routing import parse_target


def _pair(pool: Pool, watched: bool) -> tuple[Upstream, socket.socket, object]:
    ours, theirs = socket.socketpair()
    target = parse_target("http://127.0.0.1:8080/")
    state = pool.backend(target)
    up = Upstream(ours, target, addr=("127.0.0.1", 8080), watched=watched)
    pool.release(state, up)
    return up, theirs, state


def test_each_stack_is_taken_from_by_its_own_side_only() -> None:
    """A watched connection waits for the listener, never for a worker; one a worker
    released waits for whoever takes it (the listener too, with an EOF check)."""
    for watched in (True, False):
        pool = Pool()
        up, theirs, state = _pair(pool, watched=watched)
        mine, other = ((pool.take_watched, pool.take_idle) if watched
                       else (pool.take_idle, pool.take_watched))
        assert other(state, None) is None
        assert (up.sock.fileno() in pool.watched_fds) is watched
        assert mine(state, None, ("127.0.0.1", 8080)) is up
        assert pool.watched_fds == {}
        assert mine(state, None) is None
        theirs.close()
        up.sock.close()


def test_an_event_without_eof_or_bytes_keeps_the_connection() -> None:
    """The event may be the tail of the last response, already read: poll decides."""
    pool = Pool()
    up, theirs, state = _pair(pool, watched=True)
    fd = up.sock.fileno()
    assert pool.drop_watched(fd)
    assert up.sock.fileno() == fd and pool.watched_fds[fd] == (state, up)
    assert pool.take_watched(state, None) is up
    theirs.close()
    up.sock.close()


def test_eof_or_stray_bytes_while_idle_close_it() -> None:
    for spoil in (lambda s: s.close(), lambda s: s.sendall(b"HTTP/1.1 200 OK\r\n")):
        pool = Pool()
        up, theirs, state = _pair(pool, watched=True)
        fd = up.sock.fileno()
        spoil(theirs)
        assert pool.drop_watched(fd)
        assert up.sock.fileno() == -1  # closed
        assert pool.take_watched(state, None) is None
        assert fd not in pool.watched_fds
        theirs.close()


def test_an_entry_whose_socket_was_closed_meanwhile_is_not_ours() -> None:
    """``drop_addresses`` (DNS thread) closed it: its fd number may be another
    socket's by now, so the event is left to whoever owns that."""
    pool = Pool()
    up, theirs, state = _pair(pool, watched=True)
    fd = up.sock.fileno()
    pool.drop_addresses("127.0.0.1", 8080, [("127.0.0.1", 8080)])
    assert up.sock.fileno() == -1
    assert pool.take_watched(state, None) is None
    assert not pool.drop_watched(fd)
    assert fd not in pool.watched_fds
    theirs.close()


def test_the_idle_cap_counts_both_stacks() -> None:
    from proxympm.proxy import pool as pool_mod

    pool = Pool()
    others = []
    for i in range(pool_mod.MAX_IDLE_PER_BACKEND):
        up, theirs, state = _pair(pool, watched=bool(i % 2))
        others += [up.sock, theirs]
    extra, theirs, state = _pair(pool, watched=True)
    assert extra.sock.fileno() == -1  # no room: closed, not kept
    assert pool.idle_counts() == {"http://127.0.0.1:8080": pool_mod.MAX_IDLE_PER_BACKEND}
    pool.close_all()
    assert pool.idle_counts() == {"http://127.0.0.1:8080": 0}
    for s in others + [theirs]:
        s.close()
