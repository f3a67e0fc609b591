"""proxympm.log: access log directives and escaping, sinks, error log levels."""

from __future__ import annotations

import calendar
import os
import re
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxympm.log import (
    LEVELS,
    AccessLog,
    AccessRecord,
    ErrorLog,
    compile_format,
    escape_logitem,
    parse_log_level,
    setup_error_log,
    startup_log,
)

COMMON = '%h %l %u %t "%r" %>s %b'
COMBINED = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'
# 2000-10-10 13:55:36 -0700, the time in the Apache manual's examples.
DOC_TIME = calendar.timegm((2000, 10, 10, 20, 55, 36, 0, 0, 0))
PACIFIC = "PST8PDT,M4.1.0,M10.5.0"  # POSIX rule of 2000: no tzdata needed


@pytest.fixture
def set_tz() -> Iterator[Callable[[str], None]]:
    old = os.environ.get("TZ")

    def set_(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    yield set_
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def doc_record(**kw: object) -> AccessRecord:
    fields: dict[str, object] = dict(
        remote_addr="127.0.0.1", remote_port=51234, local_addr="10.0.0.5", local_port=8080,
        method=b"GET", target=b"/apache_pb.gif", version=b"HTTP/1.0",
        request_line=b"GET /apache_pb.gif HTTP/1.0", status=200, body_bytes=2326,
        bytes_in=310, bytes_out=2540, start=DOC_TIME + 0.25, duration=0.0015,
        request_headers=[
            (b"host", b"www.Example.com:8080"),
            (b"referer", b"http://www.example.com/start.html"),
            (b"user-agent", b"Mozilla/4.08 [en] (Win98; I ;Nav)"),
        ],
        response_headers=[(b"content-type", b"image/gif")],
        server_name="www.example.com", server_port=80, keepalives=3, conn_status="+",
        backend="http://127.0.0.1:9001", env={"REMOTE_USER": "frank"},
    )
    fields.update(kw)
    return AccessRecord(**fields)  # type: ignore[arg-type]


def line(fmt: str, record: AccessRecord | None = None) -> bytes:
    out = compile_format(fmt)(record or doc_record())
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    return out[:-1]


# --- the Apache manual's examples, byte for byte ---------------------------------


def test_common_log_format_matches_apache_example(set_tz: Callable[[str], None]) -> None:
    set_tz(PACIFIC)
    assert compile_format(COMMON)(doc_record()) == (
        b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" '
        b"200 2326\n")


def test_combined_log_format_matches_apache_example(set_tz: Callable[[str], None]) -> None:
    set_tz(PACIFIC)
    assert compile_format(COMBINED)(doc_record()) == (
        b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" '
        b'200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"\n')


@pytest.mark.parametrize(("tz", "expected"), [
    ("UTC0", b"[10/Oct/2000:20:55:36 +0000]"),
    ("XST-5:30", b"[11/Oct/2000:02:25:36 +0530]"),
    ("NST3:30", b"[10/Oct/2000:17:25:36 -0330]"),
    (PACIFIC, b"[10/Oct/2000:13:55:36 -0700]"),
])
def test_t_is_local_time_with_offset(set_tz: Callable[[str], None], tz: str,
                                     expected: bytes) -> None:
    set_tz(tz)
    assert line("%t") == expected


def test_t_cache_follows_the_second(set_tz: Callable[[str], None]) -> None:
    set_tz("UTC0")
    fmt = compile_format("%t")
    assert fmt(doc_record(start=DOC_TIME + 0.999)) == b"[10/Oct/2000:20:55:36 +0000]\n"
    assert fmt(doc_record(start=DOC_TIME + 1.0)) == b"[10/Oct/2000:20:55:37 +0000]\n"
    assert fmt(doc_record(start=DOC_TIME + 0.5)) == b"[10/Oct/2000:20:55:36 +0000]\n"


# --- every directive ---------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "expected"), [
    ("%h", b"127.0.0.1"),
    ("%{c}h", b"127.0.0.1"),
    ("%a", b"127.0.0.1"),
    ("%{c}a", b"127.0.0.1"),
    ("%A", b"10.0.0.5"),
    ("%l", b"-"),
    ("%u", b"frank"),
    ("%r", b"GET /apache_pb.gif HTTP/1.0"),
    ("%m", b"GET"),
    ("%U", b"/apache_pb.gif"),
    ("%q", b""),
    ("%H", b"HTTP/1.0"),
    ("%s", b"200"),
    ("%>s", b"200"),
    ("%<s", b"200"),
    ("%b", b"2326"),
    ("%B", b"2326"),
    ("%D", b"1500"),  # 0.0015 * 1e6 is 1499.99..., httpd counts whole microseconds
    ("%T", b"0"),
    ("%{s}T", b"0"),
    ("%{ms}T", b"1"),
    ("%{us}T", b"1500"),
    ("%{Referer}i", b"http://www.example.com/start.html"),
    ("%{REFERER}i", b"http://www.example.com/start.html"),
    ("%{Content-Type}o", b"image/gif"),
    ("%{REMOTE_USER}e", b"frank"),
    ("%{BALANCER_WORKER_NAME}e", b"http://127.0.0.1:9001"),
    ("%{nope}e", b"-"),
    ("%{proxy-status}n", b"-"),
    ("%v", b"www.example.com"),
    ("%V", b"www.example.com"),
    ("%p", b"80"),
    ("%{canonical}p", b"80"),
    ("%{remote}p", b"51234"),
    ("%{local}p", b"8080"),
    ("%k", b"3"),
    ("%X", b"+"),
    ("%I", b"310"),
    ("%O", b"2540"),
    ("%S", b"2850"),
    ("%%", b"%"),
    ("100%% %s", b"100% 200"),
    ("%{sec}t", b"%d" % DOC_TIME),
    ("%{msec}t", b"%d" % (DOC_TIME * 1000 + 250)),
    ("%{usec}t", b"%d" % (DOC_TIME * 1000000 + 250000)),
    ("%{msec_frac}t", b"250"),
    ("%{usec_frac}t", b"250000"),
    ("%{begin:msec_frac}t", b"250"),
    ("%{end:usec_frac}t", b"251500"),
    ("%{end:sec}t", b"%d" % DOC_TIME),
])
def test_directive(fmt: str, expected: bytes) -> None:
    assert line(fmt) == expected


def test_strftime_time_uses_local_time(set_tz: Callable[[str], None]) -> None:
    set_tz(PACIFIC)
    assert line("%{%Y-%m-%d %H:%M:%S %z}t") == b"2000-10-10 13:55:36 -0700"
    assert line("%{end:%S}t", doc_record(duration=2.0)) == b"38"


def test_durations_truncate_to_whole_units() -> None:
    rec = doc_record(duration=2.9996)
    assert line("%T %{ms}T %{us}T %D", rec) == b"2 2999 2999600 2999600"


def test_b_is_dash_for_empty_body_and_B_is_zero() -> None:
    rec = doc_record(body_bytes=0)
    assert line("%b %B", rec) == b"- 0"


def test_status_zero_is_dash() -> None:
    assert line("%>s", doc_record(status=0)) == b"-"


def test_pid_and_tid() -> None:
    assert line("%P") == b"%d" % os.getpid()
    assert line("%{pid}P") == b"%d" % os.getpid()
    out: list[bytes] = []
    fmt = compile_format("%{tid}P %{hextid}P")
    t = threading.Thread(target=lambda: out.append(fmt(doc_record())))
    t.start()
    t.join()
    assert out == [b"%d %x\n" % (t.ident, t.ident)]
    assert t.ident != threading.get_ident()


def test_pid_is_the_forked_childs(tmp_path: Path) -> None:
    fmt = compile_format("%P")  # compiled in the "arbiter", before fork
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, fmt(doc_record()))
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 100) == b"%d\n" % pid
    os.close(r)
    assert fmt(doc_record()) == b"%d\n" % os.getpid()


def test_query_and_path() -> None:
    rec = doc_record(target=b"/a%20b/c%0d%0aX?x=1&y=%22")
    assert line("%U|%q", rec) == b"/a b/c\\r\\nX|?x=1&y=%22"
    assert line("%U", doc_record(target=b"http://h:1/p%2Fq?z")) == b"/p/q"
    assert line("%U", doc_record(target=b"http://h:1")) == b"/"
    assert line("%U", doc_record(target=b"*")) == b"*"
    assert line("%U", doc_record(target=b"/bad%zz%4")) == b"/bad%zz%4"


def test_missing_empty_and_repeated_headers() -> None:
    rec = doc_record(
        request_headers=[(b"x-empty", b""), (b"accept", b"a/b"), (b"accept", b"c/d")],
        response_headers=[
            (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"x-one", b"first"),
            (b"x-one", b"second"), (b"content-type", b"text/html; charset=utf-8"),
        ])
    assert line('"%{X-Missing}i" "%{X-Empty}i" "%{Accept}i"', rec) == b'"-" "" "a/b, c/d"'
    assert line("%{Set-Cookie}o|%{X-One}o|%{Content-Type}o|%{X-No}o", rec) == (
        b"a=1, b=2|first|text/html|-")


def test_cookie() -> None:
    rec = doc_record(request_headers=[(b"cookie", b"a=1; SID = x\"y ; empty=; b=2")])
    assert line("%{sid}C %{b}C %{empty}C %{none}C", rec) == b'x\\"y 2 - -'


def test_V_uses_host_header_without_port() -> None:
    assert line("%V", doc_record(request_headers=[(b"host", b"[::1]:8443")])) == b"[::1]"
    assert line("%V", doc_record(request_headers=[(b"host", b"Plain")])) == b"plain"
    assert line("%V", doc_record(request_headers=[])) == b"www.example.com"


def test_user_from_env() -> None:
    assert line("%u", doc_record(env=None)) == b"-"
    assert line("%u", doc_record(env={"REMOTE_USER": ""})) == b'""'
    assert line("%u", doc_record(env={"REMOTE_USER": 'a"b'})) == b'a\\"b'


def test_backend_extension() -> None:
    assert line("%{BALANCER_WORKER_NAME}e", doc_record(backend=None, env=None)) == b"-"
    rec = doc_record(env={"BALANCER_WORKER_NAME": "http://b:2"})
    assert line("%{BALANCER_WORKER_NAME}e", rec) == b"http://b:2"


def test_notes() -> None:
    rec = doc_record(notes={"proxy-status": "502", "evil": "a\nb"})
    assert line("%{proxy-status}n %{evil}n", rec) == b"502 a\\nb"


# --- conditional statuses ------------------------------------------------------------


@pytest.mark.parametrize(("status", "listed", "negated"), [
    (400, b"Mozilla/4.08 [en] (Win98; I ;Nav)", b"-"),
    (501, b"Mozilla/4.08 [en] (Win98; I ;Nav)", b"-"),
    (200, b"-", b"Mozilla/4.08 [en] (Win98; I ;Nav)"),
    (404, b"-", b"Mozilla/4.08 [en] (Win98; I ;Nav)"),
])
def test_conditional_status(status: int, listed: bytes, negated: bytes) -> None:
    rec = doc_record(status=status)
    assert line("%400,501{User-agent}i", rec) == listed
    assert line("%!400,501{User-agent}i", rec) == negated


def test_conditional_on_other_directives() -> None:
    assert line("%!200,304,302{Referer}i", doc_record(status=304)) == b"-"
    assert line("%!200,304,302{Referer}i", doc_record(status=500)) == (
        b"http://www.example.com/start.html")
    assert line("%500D", doc_record(status=200)) == b"-"
    assert line("%200>s", doc_record(status=200)) == b"200"


# --- the format string itself --------------------------------------------------------


def test_c_escapes_in_format() -> None:
    out = compile_format(r"a\tb\"c\\d\qe\r\n%s")(doc_record())
    assert out == b'a\tb"c\\d\\qe\r\n200\n'


def test_literal_utf8_in_format() -> None:
    assert line("é %s") == "é 200".encode()


@pytest.mark.parametrize(("fmt", "message"), [
    ("%h %Z", "%Z"),
    ("%{x}j", "%j"),
    ("abc %", "incomplete"),
    ("%{Referer", "unterminated"),
    ("%{foo}p", "%{foo}p"),
    ("%{foo}P", "%{foo}P"),
    ("%{min}T", "%{min}T"),
    ("%i", "%{Name}i"),
    ("%>", "incomplete"),
])
def test_bad_formats_raise(fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_format(fmt)


# --- escaping ----------------------------------------------------------------------


def reference_escape(value: bytes) -> bytes:
    """httpd's ap_escape_logitem, written out the slow way."""
    out = bytearray()
    named = {8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 13: b"\\r", 34: b'\\"', 92: b"\\\\"}
    for c in value:
        if c in named:
            out += named[c]
        elif c < 0x20 or c >= 0x7F:
            out += b"\\x%02x" % c
        else:
            out.append(c)
    return bytes(out)


def test_escape_every_byte() -> None:
    every = bytes(range(256))
    assert escape_logitem(every) == reference_escape(every)
    for c in range(256):
        assert escape_logitem(bytes([c])) == reference_escape(bytes([c])), c


def test_plain_value_is_returned_unchanged() -> None:
    value = b"Mozilla/5.0 (X11; Linux x86_64)"
    assert escape_logitem(value) is value


def test_request_line_and_headers_are_escaped() -> None:
    evil = b'GET /x\r\n127.0.0.1 - - [fake] "GET /admin" 200\x00 \xc3\xa9 \x7f\\ HTTP/1.1'
    rec = doc_record(request_line=evil, request_headers=[
        (b"user-agent", b'a"b\\c\td\x1be\xff'), (b"referer", b"\r\n")])
    out = compile_format(COMBINED)(rec)
    assert out.count(b"\n") == 1 and b"\r" not in out and b"\x00" not in out
    assert max(out) < 0x7F
    assert b'"GET /x\\r\\n127.0.0.1 - - [fake] \\"GET /admin\\" 200\\x00 \\xc3\\xa9 \\x7f\\\\ ' \
        b'HTTP/1.1"' in out
    assert out.endswith(b'"\\r\\n" "a\\"b\\\\c\\td\\x1be\\xff"\n')


def test_method_protocol_env_and_server_name_are_escaped() -> None:
    rec = doc_record(method=b"G\nT", version=b"HTTP/1.1\x00", env={"X": "\u2028"},
                     server_name="a\nb")
    assert line("%m %H %{X}e %v", rec) == b"G\\nT HTTP/1.1\\x00 \\xe2\\x80\\xa8 a\\nb"


# --- AccessLog: files ----------------------------------------------------------------


def numbered_format() -> str:
    # Each line carries who wrote it, a sequence number and a payload whose length
    # and content depend on both, so a torn or interleaved line cannot pass.
    return "%{who}e %{seq}e %{pad}e"


def numbered(who: str, seq: int) -> AccessRecord:
    pad = (who[0] * (50 + (seq * 37) % 900))
    return AccessRecord(env={"who": who, "seq": str(seq), "pad": pad})


def check_numbered(data: bytes, expected: dict[str, int]) -> None:
    seen: dict[str, set[int]] = {who: set() for who in expected}
    assert data.endswith(b"\n")
    for raw in data[:-1].split(b"\n"):
        who, seq, pad = raw.decode().split(" ")
        n = int(seq)
        assert pad == who[0] * (50 + (n * 37) % 900), raw[:80]
        assert n not in seen[who]
        seen[who].add(n)
    assert {who: len(s) for who, s in seen.items()} == expected


def test_file_is_created_0644_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "access_log"
    path.write_bytes(b"old\n")
    old_umask = os.umask(0o022)
    try:
        log = AccessLog(str(path), "%s")
        log.write(doc_record())
        log.close()
        new = tmp_path / "new_log"
        log = AccessLog(str(new), "%s")
        log.open()
        assert new.exists()
        log.close()
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"old\n200\n"
    assert stat.S_IMODE(new.stat().st_mode) == 0o644


def test_write_after_close_raises(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "a"), "%s")
    log.write(doc_record())
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.write(doc_record())


def test_bad_format_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="%Z"):
        AccessLog(str(tmp_path / "a"), "%Z")
    assert not (tmp_path / "a").exists()


def test_threads_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "access_log"
    log = AccessLog(str(path), numbered_format())
    names = [f"{chr(97 + k)}thread" for k in range(8)]

    def run(who: str) -> None:
        for seq in range(1500):
            log.write(numbered(who, seq))

    threads = [threading.Thread(target=run, args=(who,)) for who in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    check_numbered(path.read_bytes(), {who: 1500 for who in names})


@pytest.mark.parametrize("open_before_fork", [True, False])
def test_two_processes_never_interleave_lines(tmp_path: Path, open_before_fork: bool) -> None:
    path = tmp_path / "access_log"
    log = AccessLog(str(path), numbered_format())
    if open_before_fork:
        log.open()

    def run(prefix: str) -> None:
        def one(who: str) -> None:
            for seq in range(1000):
                log.write(numbered(who, seq))
        threads = [threading.Thread(target=one, args=(f"{prefix}{k}",)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            run("c")
            code = 0
        finally:
            os._exit(code)
    run("p")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.close()
    expected = {f"{p}{k}": 1000 for p in "cp" for k in range(4)}
    check_numbered(path.read_bytes(), expected)


def test_reopen_after_rename(tmp_path: Path) -> None:
    path = tmp_path / "access_log"
    log = AccessLog(str(path), "%{n}e")
    log.write(AccessRecord(env={"n": "1"}))
    path.rename(tmp_path / "access_log.1")
    log.write(AccessRecord(env={"n": "2"}))  # still the renamed file, like httpd
    log.reopen()
    log.write(AccessRecord(env={"n": "3"}))
    log.close()
    assert (tmp_path / "access_log.1").read_bytes() == b"1\n2\n"
    assert path.read_bytes() == b"3\n"


def test_reopen_while_threads_write_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "access_log"
    log = AccessLog(str(path), numbered_format())
    names = ["athread", "bthread", "cthread", "dthread"]
    stop = threading.Event()
    written: dict[str, int] = {}

    def run(who: str) -> None:
        seq = 0
        while not stop.is_set() or seq < 200:
            log.write(numbered(who, seq))
            seq += 1
        written[who] = seq

    threads = [threading.Thread(target=run, args=(who,)) for who in names]
    for t in threads:
        t.start()
    for rotation in range(1, 11):  # logrotate: rename, then tell the log
        time.sleep(0.003)
        path.rename(tmp_path / f"access_log.{rotation:02d}")
        log.reopen()
    stop.set()
    for t in threads:
        t.join()
    log.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 11
    assert sum(1 for p in files if p.stat().st_size) >= 3  # lines landed across rotations
    check_numbered(b"".join(p.read_bytes() for p in files), written)


def test_reopen_before_first_write_and_on_pipes_is_harmless(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "a"), "%s")
    log.reopen()
    log.write(doc_record())
    log.close()
    assert (tmp_path / "a").read_bytes() == b"200\n"


# --- AccessLog: piped ----------------------------------------------------------------


def test_piped_log_reaches_cat(tmp_path: Path) -> None:
    out = tmp_path / "piped"
    log = AccessLog(f"|cat > {out}", "%>s %{Referer}i")
    assert not out.exists()  # started lazily by the writing process
    for status in (200, 404, 502):
        log.write(doc_record(status=status))
    log.close()  # closes the pipe and waits for cat to finish
    assert out.read_bytes() == (
        b"200 http://www.example.com/start.html\n"
        b"404 http://www.example.com/start.html\n"
        b"502 http://www.example.com/start.html\n")


def test_piped_log_without_shell(tmp_path: Path) -> None:
    out = tmp_path / "piped"
    log = AccessLog(f"||tee {out}", "%s")  # no shell: '>' would be an argument
    log.write(doc_record())
    log.close()
    assert out.read_bytes() == b"200\n"


def test_piped_log_gets_its_own_process_per_child(tmp_path: Path) -> None:
    out = tmp_path / "piped"
    # Each child has its own logger process, so the command must append.
    log = AccessLog(f"|cat >> {out}", "%{who}e %P")
    log.write(AccessRecord(env={"who": "parent-before"}))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            log.write(AccessRecord(env={"who": "child"}))
            log.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.write(AccessRecord(env={"who": "parent-after"}))
    log.close()
    lines = sorted(out.read_bytes().splitlines())
    me = os.getpid()
    assert lines == sorted([b"parent-before %d" % me, b"child %d" % pid,
                            b"parent-after %d" % me])


def test_piped_logger_restarted_after_it_dies(tmp_path: Path) -> None:
    out = tmp_path / "piped"
    log = AccessLog(f"|exec cat >> {out}", "%{n}e")
    log.write(AccessRecord(env={"n": "1"}))
    proc = log._sink._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.write(AccessRecord(env={"n": "2"}))  # EPIPE -> new logger -> line delivered
    assert log._sink._proc is not proc
    log.close()
    assert b"2\n" in out.read_bytes()


# --- error log -----------------------------------------------------------------------

ERROR_LINE = re.compile(
    rb"^\[(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"\d\d \d\d:\d\d:\d\d\.\d{6} \d{4}\] \[([a-z_0-9]+):([a-z0-9]+)\] "
    rb"\[pid (\d+):tid (\d+)\] (.*)$")


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_error_line_format_exact(tmp_path: Path, set_tz: Callable[[str], None],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    set_tz("UTC0")
    fixed = calendar.timegm((2026, 11, 28, 14, 4, 4, 0, 0, 0)) + 0.123456
    monkeypatch.setattr(time, "time", lambda: fixed)
    path = tmp_path / "error_log"
    log = setup_error_log(str(path), "warn")
    log.error("proxy", "AH01114: HTTP: failed to make connection to backend: 127.0.0.1",
              client=("127.0.0.1", 5678))
    log.warn("mpm_event", "AH00484: server reached MaxRequestWorkers setting")
    log.close()
    me, tid = os.getpid(), threading.get_ident()
    assert read_lines(path) == [
        b"[Sat Nov 28 14:04:04.123456 2026] [proxy:error] [pid %d:tid %d] "
        b"[client 127.0.0.1:5678] AH01114: HTTP: failed to make connection to backend: "
        b"127.0.0.1" % (me, tid),
        b"[Sat Nov 28 14:04:04.123456 2026] [mpm_event:warn] [pid %d:tid %d] "
        b"AH00484: server reached MaxRequestWorkers setting" % (me, tid),
    ]


def test_error_time_is_local_and_zero_padded(tmp_path: Path, set_tz: Callable[[str], None],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    set_tz(PACIFIC)
    monkeypatch.setattr(time, "time", lambda: DOC_TIME + 0.000007)
    path = tmp_path / "error_log"
    log = setup_error_log(str(path), "warn")
    log.notice("core", "x")
    log.close()
    assert read_lines(path)[0].startswith(b"[Tue Oct 10 13:55:36.000007 2000] [core:notice]")


def test_levels_per_module_and_notice_always(tmp_path: Path) -> None:
    path = tmp_path / "error_log"
    log = setup_error_log(str(path), "warn", {"proxy": "debug", "mod_ssl.c": "error",
                                              "balancer_module": "trace3"})
    log.info("core", "core-info")  # dropped: below warn
    log.warn("core", "core-warn")
    log.debug("proxy", "proxy-debug")
    log.log("trace1", "proxy", "proxy-trace1")  # dropped: below debug
    log.warn("ssl", "ssl-warn")  # dropped: ssl is at error
    log.error("ssl", "ssl-error")
    log.log("trace3", "balancer", "bal-trace3")
    log.log("trace4", "balancer", "bal-trace4")  # dropped
    log.notice("ssl", "ssl-notice")  # notice is never suppressed
    log.close()
    got = [(m.group(3), m.group(4), m.group(7)) for m in map(ERROR_LINE.match, read_lines(path))
           if m]
    assert got == [
        (b"core", b"warn", b"core-warn"), (b"proxy", b"debug", b"proxy-debug"),
        (b"ssl", b"error", b"ssl-error"), (b"balancer", b"trace3", b"bal-trace3"),
        (b"ssl", b"notice", b"ssl-notice"),
    ]


def test_enabled() -> None:
    log = ErrorLog("/dev/stderr", "emerg", {"proxy": "trace5"})
    assert log.enabled("emerg", "core")
    assert not log.enabled("alert", "core")
    assert log.enabled("notice", "core")  # always
    assert not log.enabled("info", "core")
    assert log.enabled("trace5", "proxy") and not log.enabled("trace6", "proxy")
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        log.enabled("verbose", "core")


def test_unknown_levels_rejected() -> None:
    with pytest.raises(ValueError, match="'loud'"):
        setup_error_log("/dev/stderr", "loud")
    with pytest.raises(ValueError, match="'trace9'"):
        setup_error_log("/dev/stderr", "warn", {"proxy": "trace9"})


def test_levels_table() -> None:
    assert list(LEVELS) == ["emerg", "alert", "crit", "error", "warn", "notice", "info",
                            "debug", *(f"trace{k}" for k in range(1, 9))]
    assert sorted(LEVELS.values()) == list(LEVELS.values())


def test_parse_log_level() -> None:
    assert parse_log_level("info ssl:warn proxy:debug") == (
        "info", {"ssl": "warn", "proxy": "debug"})
    assert parse_log_level("mod_proxy.c:TRACE2") == ("warn", {"proxy": "trace2"})
    with pytest.raises(ValueError):
        parse_log_level("info proxy:chatty")


def test_injection_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "error_log"
    log = setup_error_log(str(path), "warn")
    fake = "[Sat Nov 28 14:04:04.000000 2026] [core:emerg] [pid 1:tid 1] pwned"
    log.error("proxy", f'AH00898: Error reading from remote server returned by /x\r\n{fake}'
                       f'\x00 "q" \\ é', client=("1.2.3.4\n" + fake, 1))
    log.close()
    data = path.read_bytes()
    assert data.count(b"\n") == 1 and b"\r" not in data and b"\x00" not in data
    assert max(data) < 0x7F
    assert data.endswith(b"returned by /x\\r\\n" + fake.encode() +
                         b'\\x00 "q" \\\\ \\xc3\\xa9\n')
    assert b"[client 1.2.3.4\\n[Sat" in data


def test_error_log_threads_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "error_log"
    log = setup_error_log(str(path), "info")

    def run(k: int) -> None:
        for seq in range(500):
            log.info("proxy", f"t{k} {seq} " + "x" * (seq % 300))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path.rename(tmp_path / "error_log.1")
    log.reopen()
    log.warn("core", "after rotate")
    log.close()
    old = read_lines(tmp_path / "error_log.1")
    assert len(old) == 2000
    for raw in old:
        m = ERROR_LINE.match(raw)
        assert m is not None, raw
        _, seq, xs = m.group(7).split(b" ")
        assert xs == b"x" * (int(seq) % 300)
    assert [ERROR_LINE.match(x).group(7) for x in read_lines(path)] == [b"after rotate"]  # type: ignore[union-attr]


def test_error_log_missing_directory_fails_at_setup(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        setup_error_log(str(tmp_path / "no" / "such" / "error_log"), "warn")


def test_error_log_piped(tmp_path: Path) -> None:
    out = tmp_path / "piped"
    log = setup_error_log(f"|cat > {out}", "warn")
    log.error("proxy", "via pipe")
    log.close()
    lines = read_lines(out)
    assert len(lines) == 1 and lines[0].endswith(b"] via pipe")


def test_stderr_targets(capfd: pytest.CaptureFixture[str]) -> None:
    log = setup_error_log("/dev/stderr", "warn")
    log.error("core", "to stderr")
    log.info("core", "dropped")
    log.reopen()
    log.close()  # must not close fd 2
    startup_log.warn("core", "AH00558: before config")
    startup_log.debug("core", "dropped too")
    os.write(2, b"fd 2 still open\n")
    err = capfd.readouterr().err.splitlines()
    assert [line.split("] ", 3)[-1] for line in err[:2]] == ["to stderr",
                                                            "AH00558: before config"]
    assert err[2:] == ["fd 2 still open"]
