"""AcceptBalance's choice of the peer to leave new connections to (balance.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from proxympm.mpm.balance import NUDGE, SLACK, AcceptBalance
from proxympm.mpm.scoreboard import Scoreboard


@pytest.fixture
def made() -> Iterator[list[AcceptBalance]]:
    balances: list[AcceptBalance] = []
    yield balances
    for balance in balances:
        balance.close()


def _balance(made: list[AcceptBalance], slots: int = 4, mine: int = 0) -> AcceptBalance:
    balance = AcceptBalance(Scoreboard(slots))
    made.append(balance)
    balance.attach(mine)
    return balance


def _publish(balance: AcceptBalance, slot: int, held: int, taking: bool = True) -> None:
    mine = balance.slot
    balance._mine = slot  # as the child in ``slot`` would publish
    balance.publish(held, taking)
    balance._mine = mine


def test_alone_or_within_the_share_no_peer_is_named(made: list[AcceptBalance]) -> None:
    balance = _balance(made)
    assert balance.least_loaded(1000) == -1  # no peer takes connections
    _publish(balance, 2, 20)
    assert balance.least_loaded(20 + SLACK) == -1
    assert balance.least_loaded(20 + SLACK + 1) == 2


def test_the_least_loaded_peer_that_takes_connections_is_named(made: list[AcceptBalance]) -> None:
    balance = _balance(made, slots=6, mine=1)
    _publish(balance, 0, 9)
    _publish(balance, 3, 4)
    _publish(balance, 4, 0, taking=False)  # paused (admission) or stopping
    _publish(balance, 5, 6)
    assert balance.least_loaded(30) == 3
    balance.publish(0, True)  # its own share is never a peer's
    assert balance.least_loaded(30) == 3


def test_a_slot_given_back_by_the_arbiter_takes_nothing(made: list[AcceptBalance]) -> None:
    balance = _balance(made)
    _publish(balance, 1, 0)
    assert balance.least_loaded(10) == 1
    balance.board.release(1)
    assert balance.least_loaded(10) == -1


def test_a_nudge_reaches_the_slot_named_and_is_drained(made: list[AcceptBalance]) -> None:
    balance = AcceptBalance(Scoreboard(2))  # as the arbiter made it, before any fork
    made.append(balance)
    balance.nudge(1)
    assert os.read(balance.reads[1], 10) == NUDGE
    balance.nudge(1)
    balance.nudge(1)
    balance.attach(1)  # in the child of slot 1
    balance.drain()
    try:
        os.read(balance.fd, 10)
        raise AssertionError("nudges left after drain")
    except BlockingIOError:
        pass


def test_churn_is_many_more_accepts_in_a_second_than_connections_held(
        made: list[AcceptBalance]) -> None:
    balance = _balance(made)
    balance.roll(0.0)
    balance.accepted += 50  # a burst of keep-alive connections, all still held
    assert not balance.churning(50)
    balance.accepted += 1000  # Connection: close traffic: accepted, gone again
    assert balance.churning(50)
    balance.roll(1.0)  # the busy window is still the last one
    assert balance.churning(50)
    balance.roll(2.0)  # a quiet second since
    assert not balance.churning(50)
