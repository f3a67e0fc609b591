"""Fuzzing the request path: listener + worker pipeline of one real child.

One proxympm (one child, ThreadsPerChild 4) in front of the recording ``backend``.
For a bounded time and count, mutations of the request corpus
(``tests/corpus/requests.py``) and of the kept seeds in
``tests/corpus/fuzz_seeds/*.http`` (byte flips, insertions, deletions, truncations,
duplicated header lines, splices of two inputs) are sent over fresh TCP connections
in random chunkings with tiny delays, then the client half-closes. For each input,
the proxy must answer a well-formed HTTP/1.1 response head or close the connection,
within a few seconds. Afterwards: the same child pid is still serving (no crash, no
respawn), no "Traceback" in the error log or stderr, a normal GET gets 200 promptly
and the child has the same number of threads.

The run's random seed is in every assertion message; ``PROXYMPM_FUZZ_SEED=N``
replays it (inputs are drawn in the same order; the time bound may cut it earlier).
"""

from __future__ import annotations

import os
import random
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.corpus.requests import CASES
from tests.support import procs
from tests.support.backend import Backend
from tests.support.servers import Proxy

SEED_DIR = Path(__file__).resolve().parents[1] / "corpus" / "fuzz_seeds"
SEEDS: list[bytes] = [raw for _, raw, _ in CASES] + [
    p.read_bytes() for p in sorted(SEED_DIR.glob("*.http"))
]

CONF = """\
ThreadsPerChild 4
StartServers 1
ServerLimit 1
MaxRequestWorkers 4
MinSpareThreads 1
MaxSpareThreads 4
RequestReadTimeout header=5 body=5
ProxyPass "/" "http://127.0.0.1:{b}/"
"""

TIME_BUDGET = 15.0  # seconds of fuzzing
MAX_CASES = 4000
ANSWER_WITHIN = 6.0  # per input: a response head or a close by then
STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5][0-9][0-9] [\t -~\x80-\xff]*\r\n")
HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t -~\x80-\xff]*\r\n")


def mutate(rng: random.Random) -> bytes:
    raw = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randint(0, 5)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(raw))
        if op == 0 and pos < len(raw):  # flip bits of a byte
            raw[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and pos < len(raw):  # replace with an interesting byte
            raw[pos] = rng.choice(b"\x00\r\n \t:;,\"\\\x7f\xff0fF-+")
        elif op == 2:  # insert random bytes or a syntax fragment
            frag = rng.choice([
                bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))),
                b"\r\n", b"\n", b"\r\n\r\n", b" ", b"Transfer-Encoding: chunked\r\n",
                b"Content-Length: 3\r\n", b"Connection: close\r\n", b"0\r\n\r\n",
                b"Expect: 100-continue\r\n", b"Host: h\r\n", b"x" * rng.randint(100, 9000),
            ])
            raw[pos:pos] = frag
        elif op == 3:  # delete a run
            del raw[pos:pos + rng.randint(1, 16)]
        elif op == 4:  # truncate
            del raw[pos:]
        elif op == 5:  # duplicate a header line
            lines = bytes(raw).split(b"\r\n")
            if len(lines) > 2:
                i = rng.randrange(1, len(lines))
                lines.insert(i, lines[i])
                raw = bytearray(b"\r\n".join(lines))
        else:  # splice: this input's head with another seed's tail
            other = rng.choice(SEEDS)
            raw = raw[:pos] + other[rng.randint(0, len(other)):]
    return bytes(raw)


def chunking(rng: random.Random, raw: bytes) -> list[bytes]:
    if len(raw) < 2 or rng.random() < 0.3:
        return [raw]
    cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 12))))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def exchange(port: int, chunks: list[bytes], rng: random.Random) -> tuple[str, bytes]:
    """Send the chunks (tiny random pauses), half-close, read until the proxy closes
    or ANSWER_WITHIN. Returns ("closed"|"timeout", bytes received)."""
    deadline = time.monotonic() + ANSWER_WITHIN
    got = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for chunk in chunks:
                s.sendall(chunk)
                if rng.random() < 0.3:
                    time.sleep(rng.random() * 0.003)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the proxy answered early and stopped reading: not a failure
            pass
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", bytes(got)
            s.settimeout(left)
            try:
                data = s.recv(65536)
            except TimeoutError:
                return "timeout", bytes(got)
            except ConnectionResetError:
                return "closed", bytes(got)
            if not data:
                return "closed", bytes(got)
            got += data


def well_formed_head(data: bytes) -> str | None:
    """None if ``data`` is empty or starts with a complete, well-formed response head."""
    if not data:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return "no complete response head"
    head = data[: end + 2]
    m = STATUS_LINE.match(head)
    if not m:
        return "status line does not parse"
    pos = m.end()
    while pos < len(head):
        h = HEADER_LINE.match(head, pos)
        if not h:
            return f"bad header line at {pos}"
        pos = h.end()
    return None


def get_ok(port: int, within: float = 3.0) -> tuple[str, bytes]:
    start = time.monotonic()
    state, data = exchange(port, [b"GET /ping HTTP/1.1\r\nHost: example.test\r\n\r\n"],
                           random.Random(0))
    took = time.monotonic() - start
    ok = data.startswith(b"HTTP/1.1 200 ") and took < within
    return ("ok" if ok else f"{state} after {took:.2f}s"), data[:300]


def test_pipeline_survives_mutated_requests(
    proxympm: Callable[..., Proxy], backend: Backend
) -> None:
    seed = int(os.environ.get("PROXYMPM_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
    tag = f"[PROXYMPM_FUZZ_SEED={seed}]"
    proxy = proxympm(CONF, b=backend.port)
    verdict, data = get_ok(proxy.port, within=10)
    assert verdict == "ok", f"{tag} warm-up GET: {verdict} {data!r}\n{proxy.diagnostics()}"
    child = proxy.serving_child()
    start_child = procs.stat(child)
    threads = len(procs.thread_ids(child))

    rng = random.Random(seed)
    stop = time.monotonic() + TIME_BUDGET
    n = 0
    while n < MAX_CASES and time.monotonic() < stop:
        case_seed = rng.getrandbits(32)
        crng = random.Random(case_seed)
        raw = mutate(crng)
        chunks = chunking(crng, raw)
        where = f"{tag} case {n} (case seed {case_seed}), input {raw[:600]!r}" + (
            f"... ({len(raw)} bytes)" if len(raw) > 600 else "")
        state, got = exchange(proxy.port, chunks, crng)
        assert state == "closed" or well_formed_head(got) is None and got, (
            f"{where}: no answer and no close within {ANSWER_WITHIN}s; got {got[:300]!r}")
        problem = well_formed_head(got)
        assert problem is None, f"{where}: {problem}; got {got[:300]!r}"
        n += 1

    diag = f"{tag} after {n} inputs"
    assert n >= 50, f"{diag}: too few inputs in {TIME_BUDGET}s"
    assert proxy.running(), f"{diag}: arbiter exited\n{proxy.diagnostics()}"
    assert procs.alive(child, start_child.starttime if start_child else None), (
        f"{diag}: serving child {child} is gone\n{proxy.diagnostics()}")
    assert proxy.children() == [child] or proxy.serving_child() == child, (
        f"{diag}: children now {proxy.children()}, was {child}\n{proxy.diagnostics()}")
    verdict, data = get_ok(proxy.port)
    assert verdict == "ok", f"{diag}: normal GET: {verdict} {data!r}\n{proxy.diagnostics()}"
    deadline = time.monotonic() + 5
    while len(procs.thread_ids(child)) != threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(procs.thread_ids(child)) == threads, (
        f"{diag}: child {child} has {len(procs.thread_ids(child))} threads, had {threads}")
    for name, text in (("error log", proxy.error_log()), ("stderr", proxy.stderr())):
        assert "Traceback" not in text, f"{diag}: Traceback in the {name}:\n{text[-4000:]}"
