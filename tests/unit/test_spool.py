"""The response spool: memory, then an unlinked temp file, drained in order."""

from __future__ import annotations

import os
import socket

import pytest

from proxympm.proxy import spool as spool_mod
from proxympm.proxy.spool import Spool


def drain(sp: Spool, reader: socket.socket, writer: socket.socket) -> bytes:
    got = bytearray()
    while True:
        done = sp.send_to(writer)
        try:
            while chunk := reader.recv(1 << 20):
                got += chunk
        except BlockingIOError:
            pass
        if done:
            return bytes(got)


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_spills_to_a_file_and_keeps_order(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "MEMORY_LIMIT", 1000)
    sp = Spool()
    parts = [bytes([i]) * 700 for i in range(10)]
    for p in parts:
        sp.append(p)
    assert sp._file is not None and len(sp) == 7000
    assert drain(sp, pair[1], pair[0]) == b"".join(parts)
    assert len(sp) == 0 and sp.sent == 7000
    fd = sp._file
    sp.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # the temp file is gone with the spool


def test_unwritable_temp_dir_falls_back_to_memory_and_backpressure(
        pair, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(spool_mod, "MEMORY_LIMIT", 1000)
    monkeypatch.setattr(spool_mod.tempfile, "tempdir", str(tmp_path / "missing"))
    sp = Spool()
    sp.append(b"x" * 800)
    assert not sp.full
    sp.append(b"y" * 800)
    assert sp.spill_error and "temp file" in sp.spill_error
    assert sp.full  # the writer must now wait for the client
    assert drain(sp, pair[1], pair[0]) == b"x" * 800 + b"y" * 800


def test_full_at_the_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "MEMORY_LIMIT", 10)
    monkeypatch.setattr(spool_mod, "FILE_LIMIT", 100)
    sp = Spool()
    sp.append(b"a" * 50)
    assert not sp.full
    sp.append(b"b" * 60)
    assert sp.full
    sp.close()
