"""The arbiter's spawn rate (httpd's perform_idle_server_maintenance): 1, 2, 4 ...
children per second while idle threads stay short, held from doubling for 10
spawning rounds after a graceful restart (hold_off_on_exponential_spawning)."""

from __future__ import annotations

import os
from pathlib import Path

from proxympm.config import load_config
from proxympm.mpm.arbiter import GRACEFUL_HOLD_OFF, Arbiter

CONF = """
Listen 127.0.0.1:1
PidFile {dir}/pid
ErrorLog {dir}/error_log
StartServers 1
ServerLimit 64
ThreadsPerChild 1
MaxRequestWorkers 64
MinSpareThreads 64
MaxSpareThreads 128
"""


def _rates(tmp_path: Path, graceful: bool, rounds: int) -> list[int]:
    path = tmp_path / "proxympm.conf"
    path.write_text(CONF.format(dir=tmp_path))
    arbiter = Arbiter(load_config(str(path)), str(path), [], None)
    asked: list[int] = []

    def spawn_some(n: int) -> int:  # records instead of forking
        asked.append(n)
        return n

    arbiter._spawn_some = spawn_some  # type: ignore[method-assign]
    if graceful:
        arbiter.hold_off = GRACEFUL_HOLD_OFF  # what the USR1 path sets
    for _ in range(rounds):
        arbiter.next_maintenance = 0.0
        arbiter._maintain()  # no children: idle 0 < MinSpareThreads every round
    arbiter.balance.close()  # 2 x ServerLimit descriptors each: not for the whole suite
    for fd in arbiter.wake_reads + arbiter.wake_writes:
        os.close(fd)
    return asked


def test_spawn_rate_doubles_while_short(tmp_path: Path) -> None:
    assert _rates(tmp_path, graceful=False, rounds=7) == [1, 2, 4, 8, 16, 32, 32]


def test_spawn_rate_held_after_graceful_restart(tmp_path: Path) -> None:
    assert _rates(tmp_path, graceful=True, rounds=13) == [1] * 11 + [2, 4]
