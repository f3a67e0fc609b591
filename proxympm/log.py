"""Access log (mod_log_config) and error log (core ErrorLog/LogLevel), httpd-compatible.

Theory of operation
-------------------
Both logs end in a ``_Sink``: one destination that takes whole lines as bytes and
writes each with a single ``os.write``. Files are opened ``O_WRONLY|O_APPEND|O_CREAT``;
the kernel appends every ``write(2)`` to an O_APPEND file atomically, so worker
threads and sibling child processes sharing the file never interleave a line and the
hot path takes no lock. A file sink is opened once (by ``open()``, ideally in the
arbiter before it forks and drops privileges, as httpd does, or else by the first
write) and the descriptor is shared by every process forked afterwards.

Piped logs (``"|cmd"``) differ from httpd on purpose: httpd runs one logger for the
whole server from the parent. Here the sink starts ``/bin/sh -c cmd`` lazily in the
process that writes, so **each child has its own pipe process** (a forked child
notices the pid changed and starts its own), so the command must append, not
truncate (``|cat >> file``, ``|rotatelogs ...``). Lines up to PIPE_BUF (4096 bytes)
reach the logger atomically. A logger that died is restarted on the next write
(EPIPE). ``"||cmd"`` runs the command without a shell, as in httpd.

``reopen()`` (logrotate: rename, then tell us) opens the path again and ``dup2``s the
new file over the old descriptor number, so a thread that already loaded the number
writes to the old or the new file, never to a closed or recycled descriptor.

Thread ownership: ``compile_format`` runs at config load. ``AccessLog.write`` and
``ErrorLog.log`` run on any worker or listener thread. ``open``/``reopen``/``close``
run on the child's main thread (signal handling) or the arbiter.

Access log extensions and deviations
------------------------------------
* ``%{BALANCER_WORKER_NAME}e`` gives the backend that served the request
  (``AccessRecord.backend``, e.g. ``http://127.0.0.1:9001``) when ``env`` does not
  set it. mod_proxy_balancer sets this variable only for ``balancer://`` members;
  proxympm sets it for plain ``ProxyPass`` backends too. ``-`` when no backend.
* ``%{Name}n`` reads ``AccessRecord.notes`` (mod_proxy_http's ``proxy-status`` etc.).
* There is one status per request (no internal redirects), so ``%s``, ``%<s`` and
  ``%>s`` agree. ``%l`` is always ``-`` (no identd); ``%u`` is ``env["REMOTE_USER"]``.
* ``%{tid}P`` and the error log's ``tid`` are ``pthread_self()`` like httpd's
  (``threading.get_ident()``); ``%{hextid}P`` is the same in hex.
* Unknown directives and unknown ``{args}`` of ``%p %P %T`` raise ValueError at
  compile time (httpd logs the bogus argument instead).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

__all__ = [
    "AccessLog",
    "AccessRecord",
    "ErrorLog",
    "LEVELS",
    "compile_format",
    "parse_log_level",
    "setup_error_log",
    "startup_log",
]

# --- process identity: one getpid() per fork, not per line -----------------------

_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)

_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
           b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
_WEEKDAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")  # tm_wday order

# --- escaping (server/util.c ap_escape_logitem / ap_escape_errorlog_item) ---------
# httpd escapes every byte that is not printable ASCII (apr_isprint in the C locale),
# plus '"' and '\'. \b \n \r \t \v get C escapes, the rest \xhh (lowercase hex).


def _escape_table(quote: bool) -> list[bytes]:
    table = [b"\\x%02x" % c for c in range(256)]
    for c, e in ((8, b"\\b"), (10, b"\\n"), (13, b"\\r"), (9, b"\\t"), (11, b"\\v"),
                 (0x5C, b"\\\\"), (0x22, b'\\"' if quote else b'"')):
        table[c] = e
    return table


def _make_escaper(quote: bool) -> Callable[[bytes], bytes]:
    table = _escape_table(quote)
    special = b'\\"' if quote else b"\\"
    plain = bytes(c for c in range(0x20, 0x7F) if c not in special)
    sub = re.compile(b"[^" + re.escape(plain) + b"]").sub

    def repl(m: re.Match[bytes]) -> bytes:
        return table[m.group()[0]]

    def escape(value: bytes) -> bytes:
        # Deleting the plain bytes in C is the cheapest "anything to escape?" test.
        if not value.translate(None, plain):
            return value  # the common case: no copy, no regex
        return sub(repl, value)

    return escape


escape_logitem = _make_escaper(quote=True)  # access log values
_escape_errorlog = _make_escaper(quote=False)  # error log: '"' needs no escape there


def _b(value: str) -> bytes:
    return value.encode("utf-8", "backslashreplace")


# --- the access record ----------------------------------------------------------


@dataclass(slots=True, eq=False)
class AccessRecord:
    """What one request leaves behind for the access log. Built per request.

    A slots dataclass: its generated ``__init__`` is plain assignments, as cheap as a
    hand-written one. Header lists hold ``(name_lower, value)`` bytes pairs.
    ``conn_status`` is httpd's ``%X``: ``'X'`` aborted, ``'+'`` kept alive, ``'-'``
    closed. ``keepalives`` counts requests served on the connection before this one.
    ``notes`` stands in for httpd's request notes (``%{Name}n``).
    """

    remote_addr: str = "-"  # the believed client address (mod_remoteip): %a, %h
    remote_port: int = 0
    peer_addr: str = ""  # the connection's peer: %{c}a, %{c}h ('' = remote_addr)
    local_addr: str = "-"
    local_port: int = 0
    method: bytes = b""
    target: bytes = b""  # the request-target as received
    version: bytes = b""  # b"HTTP/1.1"
    request_line: bytes = b""  # without CRLF
    status: int = 0
    body_bytes: int = 0
    bytes_in: int = 0  # with headers (mod_logio %I)
    bytes_out: int = 0  # with headers (mod_logio %O)
    start: float = 0.0  # time.time() when the request started
    duration: float = 0.0  # seconds
    request_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    server_name: str = ""
    server_port: int = 0
    keepalives: int = 0
    conn_status: str = "-"
    backend: str | None = None  # "http://127.0.0.1:9001"
    env: dict[str, str] | None = None
    notes: dict[str, str] | None = None


Item = Callable[[AccessRecord], bytes]

# --- directive implementations: each takes the {arg} and returns an Item ----------


def _request_header(name: bytes) -> Item:
    # httpd merges repeated request headers into one "a, b" value on input.
    def item(r: AccessRecord) -> bytes:
        found = None
        for n, v in r.request_headers:
            if n == name:
                found = v if found is None else found + b", " + v
        return b"-" if found is None else escape_logitem(found)
    return item


def _response_header(name: bytes) -> Item:
    # mod_log_config: first value, except Set-Cookie (all, joined) and Content-Type
    # (without parameters, as ap_field_noparam).
    if name == b"set-cookie":
        def item(r: AccessRecord) -> bytes:
            values = [v for n, v in r.response_headers if n == name]
            return escape_logitem(b", ".join(values)) if values else b"-"
        return item
    noparam = name == b"content-type"

    def first(r: AccessRecord) -> bytes:
        for n, v in r.response_headers:
            if n == name:
                if noparam:
                    v = v.split(b";", 1)[0].rstrip()
                return escape_logitem(v)
        return b"-"
    return first


def _cookie(name: bytes) -> Item:
    def item(r: AccessRecord) -> bytes:
        for n, v in r.request_headers:
            if n != b"cookie":
                continue
            for pair in v.split(b";"):
                key, eq, value = pair.partition(b"=")
                if eq and value and key.strip(b" \t").lower() == name:
                    return escape_logitem(value.strip(b" \t"))
        return b"-"
    return item


def _env(name: str) -> Item:
    def item(r: AccessRecord) -> bytes:
        value = r.env.get(name) if r.env else None
        if value is None and name == "BALANCER_WORKER_NAME":
            value = r.backend
        return b"-" if value is None else escape_logitem(_b(value))
    return item


def _note(name: str) -> Item:
    def item(r: AccessRecord) -> bytes:
        value = r.notes.get(name) if r.notes else None
        return b"-" if value is None else escape_logitem(_b(value))
    return item


def _path(r: AccessRecord) -> bytes:
    # %U is httpd's r->uri: the path without query, percent-decoded.
    t = r.target
    if not t.startswith(b"/"):
        scheme = t.find(b"://")
        if scheme < 0:
            return escape_logitem(t)  # "*" (OPTIONS) or garbage: as received
        slash = t.find(b"/", scheme + 3)
        t = t[slash:] if slash >= 0 else b"/"
    q = t.find(b"?")
    if q >= 0:
        t = t[:q]
    return escape_logitem(unquote_to_bytes(t) if b"%" in t else t)


def _query(r: AccessRecord) -> bytes:
    q = r.target.find(b"?")
    return b"" if q < 0 else escape_logitem(r.target[q:])


def _host_for_V(r: AccessRecord) -> bytes:
    # UseCanonicalName Off (httpd's default): the Host the client asked for.
    for n, v in r.request_headers:
        if n == b"host":
            v = v.strip()
            if v.startswith(b"["):  # IPv6 literal: keep the brackets, drop the port
                v = v[: v.find(b"]") + 1]
            elif b":" in v:
                v = v.rpartition(b":")[0]
            if v:
                return escape_logitem(v.lower())
    return escape_logitem(_b(r.server_name)) if r.server_name else b"-"


def _int(get: Callable[[AccessRecord], int]) -> Item:
    return lambda r: b"%d" % get(r)


def _status(r: AccessRecord) -> bytes:
    return b"%d" % r.status if r.status > 0 else b"-"


def _usec(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _duration(arg: str | None) -> Item:
    unit = (arg or "s").lower()
    div = {"s": 1_000_000, "ms": 1000, "us": 1}.get(unit)
    if div is None:
        raise ValueError(f"unknown unit %{{{arg}}}T in LogFormat (use s, ms or us)")
    return lambda r: b"%d" % (_usec(r.duration) // div)


def _clf_time() -> Item:
    # One-entry cache per compiled format: most lines fall in the same second.
    cache: list[tuple[int, bytes]] = [(-1, b"")]

    def item(r: AccessRecord) -> bytes:
        sec = _usec(r.start) // 1_000_000
        cached = cache[0]  # one load: the tuple is replaced whole, thread-safe
        if cached[0] == sec:
            return cached[1]
        tm = time.localtime(sec)
        off = tm.tm_gmtoff // 60
        sign = b"-" if off < 0 else b"+"
        off = abs(off)
        text = b"[%02d/%s/%d:%02d:%02d:%02d %s%02d%02d]" % (
            tm.tm_mday, _MONTHS[tm.tm_mon - 1], tm.tm_year, tm.tm_hour, tm.tm_min,
            tm.tm_sec, sign, off // 60, off % 60)
        cache[0] = (sec, text)
        return text
    return item


def _time(arg: str | None) -> Item:
    if not arg:
        return _clf_time()
    at_end = False
    if arg.startswith("begin:"):
        arg = arg[6:]
    elif arg.startswith("end:"):
        arg, at_end = arg[4:], True

    def when(r: AccessRecord) -> int:  # usec since the epoch
        return _usec(r.start + r.duration) if at_end else _usec(r.start)

    if arg == "sec":
        return lambda r: b"%d" % (when(r) // 1_000_000)
    if arg == "msec":
        return lambda r: b"%d" % (when(r) // 1000)
    if arg == "usec":
        return lambda r: b"%d" % when(r)
    if arg == "msec_frac":
        return lambda r: b"%03d" % (when(r) // 1000 % 1000)
    if arg == "usec_frac":
        return lambda r: b"%06d" % (when(r) % 1_000_000)
    if not arg:
        return _clf_time()
    fmt = arg
    return lambda r: _b(time.strftime(fmt, time.localtime(when(r) // 1_000_000)))


def _port(arg: str | None) -> Item:
    which = (arg or "canonical").lower()
    if which == "canonical":
        return _int(lambda r: r.server_port)
    if which == "local":
        return _int(lambda r: r.local_port)
    if which == "remote":
        return _int(lambda r: r.remote_port)
    raise ValueError(f"unknown %{{{arg}}}p in LogFormat (use canonical, local or remote)")


def _process(arg: str | None) -> Item:
    which = (arg or "pid").lower()
    if which == "pid":
        return lambda r: b"%d" % _pid
    if which == "tid":
        return lambda r: b"%d" % threading.get_ident()
    if which == "hextid":
        return lambda r: b"%x" % threading.get_ident()
    raise ValueError(f"unknown %{{{arg}}}P in LogFormat (use pid, tid or hextid)")


def _arg_bytes(arg: str | None, letter: str) -> bytes:
    if not arg:
        raise ValueError(f"%{letter} in LogFormat needs a name: %{{Name}}{letter}")
    return arg.lower().encode("latin-1")


def _remote_addr(r: AccessRecord) -> bytes:
    # An IP address from the socket (no HostnameLookups), so nothing to escape.
    return r.remote_addr.encode("ascii", "backslashreplace")


def _peer_addr(r: AccessRecord) -> bytes:
    return (r.peer_addr or r.remote_addr).encode("ascii", "backslashreplace")


def _remote_user(r: AccessRecord) -> bytes:
    user = r.env.get("REMOTE_USER") if r.env else None
    if user is None:
        return b"-"
    return escape_logitem(_b(user)) if user else b'""'  # httpd logs an empty user as ""


# letter -> factory(arg) -> Item. Arguments other than documented ones are ignored
# where httpd ignores them (%h %a).
_DIRECTIVES: dict[str, Callable[[str | None], Item]] = {
    "h": lambda a: _peer_addr if a == "c" else _remote_addr,
    "a": lambda a: _peer_addr if a == "c" else _remote_addr,
    "A": lambda a: lambda r: r.local_addr.encode("ascii", "backslashreplace"),
    "l": lambda a: lambda r: b"-",
    "u": lambda a: _remote_user,
    "t": _time,
    "r": lambda a: lambda r: escape_logitem(r.request_line),
    "m": lambda a: lambda r: escape_logitem(r.method),
    "U": lambda a: _path,
    "q": lambda a: _query,
    "H": lambda a: lambda r: escape_logitem(r.version),
    "s": lambda a: _status,
    "b": lambda a: lambda r: b"%d" % r.body_bytes if r.body_bytes else b"-",
    "B": lambda a: _int(lambda r: r.body_bytes),
    "D": lambda a: lambda r: b"%d" % _usec(r.duration),
    "T": _duration,
    "i": lambda a: _request_header(_arg_bytes(a, "i")),
    "o": lambda a: _response_header(_arg_bytes(a, "o")),
    "C": lambda a: _cookie(_arg_bytes(a, "C")),
    "e": lambda a: _env(a or ""),
    "n": lambda a: _note(a or ""),
    "v": lambda a: lambda r: escape_logitem(_b(r.server_name)) if r.server_name else b"-",
    "V": lambda a: _host_for_V,
    "p": _port,
    "P": _process,
    "k": lambda a: _int(lambda r: r.keepalives),
    "X": lambda a: lambda r: r.conn_status.encode("ascii", "replace"),
    "I": lambda a: _int(lambda r: r.bytes_in),
    "O": lambda a: _int(lambda r: r.bytes_out),
    "S": lambda a: _int(lambda r: r.bytes_in + r.bytes_out),
}

# --- the LogFormat compiler ------------------------------------------------------

_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _conditional(item: Item, statuses: frozenset[int], negate: bool) -> Item:
    # "%400,501{X}i" logs X only for those statuses; "%!200{X}i" for all others.
    def cond(r: AccessRecord) -> bytes:
        if (r.status in statuses) == negate:
            return b"-"
        return item(r)
    return cond


def _parse(fmt: str) -> list[bytes | Item]:
    parts: list[bytes | Item] = []
    literal: list[str] = []
    i, n = 0, len(fmt)
    while i < n:
        c = fmt[i]
        if c == "\\" and i + 1 < n and fmt[i + 1] in _C_ESCAPES:
            literal.append(_C_ESCAPES[fmt[i + 1]])
            i += 2
            continue
        if c != "%":
            literal.append(c)
            i += 1
            continue
        start = i
        i += 1
        # httpd accepts the modifiers in any order before the letter.
        arg: str | None = None
        statuses: list[int] = []
        negate = False
        while True:
            if i >= n:
                raise ValueError(f"LogFormat {fmt!r}: incomplete directive {fmt[start:]!r}")
            c = fmt[i]
            if c == "%" and i == start + 1:
                literal.append("%")
                i += 1
                break
            if c == "!":
                negate = True
                i += 1
            elif c in "<>,":
                i += 1
            elif c == "{":
                end = fmt.find("}", i)
                if end < 0:
                    raise ValueError(f"LogFormat {fmt!r}: unterminated {{ at offset {i}")
                arg = fmt[i + 1:end]
                i = end + 1
            elif c.isdigit():
                j = i
                while j < n and fmt[j].isdigit():
                    j += 1
                statuses.append(int(fmt[i:j]))
                i = j
            else:
                factory = _DIRECTIVES.get(c)
                if factory is None:
                    raise ValueError(
                        f"Unrecognized LogFormat directive %{c} in {fmt!r}")
                item = factory(arg)
                if statuses:
                    item = _conditional(item, frozenset(statuses), negate)
                if literal:
                    parts.append("".join(literal).encode("utf-8"))
                    literal = []
                parts.append(item)
                i += 1
                break
    literal.append("\n")
    parts.append("".join(literal).encode("utf-8"))
    return parts


def compile_format(fmt: str) -> Callable[[AccessRecord], bytes]:
    """Compile an Apache LogFormat string into ``record -> one log line`` (bytes, ends
    in ``b"\\n"``). Raises ValueError naming the bad directive; the caller adds
    file:line. Call once at config load; the result is thread-safe.
    """
    parts = _parse(fmt)
    # Generate "return b''.join((i0(r), b' ', i1(r), ...))": one call per directive,
    # literals inline, no per-line loop or isinstance test.
    namespace: dict[str, object] = {}
    exprs = []
    for k, part in enumerate(parts):
        if isinstance(part, bytes):
            exprs.append(repr(part))
        else:
            namespace[f"i{k}"] = part
            exprs.append(f"i{k}(r)")
    src = f"def access_line(r):\n    return b''.join(({', '.join(exprs)},))\n"
    exec(compile(src, f"<LogFormat {fmt!r}>", "exec"), namespace)
    line = namespace["access_line"]
    assert callable(line)
    return line  # type: ignore[return-value]


# --- sinks -----------------------------------------------------------------------


class _Sink:
    """One destination of whole lines: a file, ``|cmd``/``||cmd``, or stderr."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()  # open/reopen/respawn/close only, never writes
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0  # pid that spawned the pipe process
        self._argv: list[str] | None = None
        self._path: str | None = None
        self._fd = -1
        if target.startswith("||"):
            self._argv = shlex.split(target[2:])
        elif target.startswith("|$"):
            self._argv = ["/bin/sh", "-c", target[2:]]
        elif target.startswith("|"):
            self._argv = ["/bin/sh", "-c", target[1:]]
        elif target in ("/dev/stderr", "stderr"):
            self._fd = 2  # not ours: never closed, reopen is a no-op
        elif target in ("/dev/stdout", "stdout"):
            # By descriptor, not by path: opening /dev/stdout fails (ENXIO) when
            # stdout is a socket, as under systemd's journal.
            self._fd = 1
        else:
            self._path = target
        if self._argv is not None and not self._argv:
            raise ValueError(f"piped log {target!r} has no command")

    def open(self) -> None:
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> int:
        if self._closed:
            raise ValueError(f"log {self.target!r} is closed")
        if self._argv is not None:
            if self._fd >= 0 and self._owner == _pid:
                return self._fd
            self._drop_pipe_locked()  # inherited across fork: the parent's, not ours
            read_end, write_end = os.pipe()
            try:
                self._proc = subprocess.Popen(self._argv, stdin=read_end, close_fds=True)
            finally:
                os.close(read_end)
            self._owner = _pid
            self._fd = write_end
        elif self._fd < 0:
            assert self._path is not None
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def _drop_pipe_locked(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._proc is not None and self._owner == _pid:
            try:
                self._proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def write(self, data: bytes) -> None:
        fd = self._fd
        if fd < 0 or (self._argv is not None and self._owner != _pid):
            with self._lock:
                fd = self._open_locked()
        try:
            written = os.write(fd, data)
        except BrokenPipeError:
            with self._lock:  # the piped logger exited: start it again, once
                if self._fd == fd:
                    self._drop_pipe_locked()
                fd = self._open_locked()
            written = os.write(fd, data)
        while written < len(data):  # only on a full disk or a signal mid-write
            data = data[written:]
            written = os.write(fd, data)

    def reopen(self) -> None:
        """Open the path again (after logrotate renamed it). No-op for pipes/stderr."""
        if self._path is None:
            return
        with self._lock:
            if self._closed or self._fd < 0:
                return
            new = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.dup2(new, self._fd, inheritable=False)
            finally:
                os.close(new)

    def close(self) -> None:
        """Close, and wait for our pipe process. Call after the writers stopped: a
        thread still holding the descriptor number could write to a recycled one."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fd, self._fd = self._fd, -1
            if fd > 2:
                os.close(fd)
            if self._proc is not None and self._owner == _pid:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass  # a forked child still holds the pipe; init reaps it later


# --- access log ------------------------------------------------------------------


class AccessLog:
    """``CustomLog target format``: ``target`` is a path, ``|cmd``, or ``||argv``."""

    def __init__(self, target: str, fmt: str) -> None:
        self.target = target
        self.format = fmt
        self._line = compile_format(fmt)
        self._sink = _Sink(target)

    def open(self) -> None:
        """Open now (the arbiter, before fork/privilege drop); otherwise first write."""
        self._sink.open()

    def write(self, record: AccessRecord) -> None:
        self._sink.write(self._line(record))

    def reopen(self) -> None:
        self._sink.reopen()

    def close(self) -> None:
        self._sink.close()


# --- error log -------------------------------------------------------------------
# Not the stdlib ``logging`` module: its loggers are process-global singletons (a
# second setup, in tests or on restart, would mutate shared state), it takes a lock
# per record, writes through buffered text files that may split a line into several
# write(2) calls (so two processes could interleave), and it would need notice and
# trace1..8 registered as global level names. httpd's rules -- per-module levels,
# notice never suppressed, one atomic write per line, dup2 reopen -- fit in less code
# than adapting it.

LEVELS: dict[str, int] = {
    "emerg": 0, "alert": 1, "crit": 2, "error": 3, "warn": 4, "notice": 5,
    "info": 6, "debug": 7, **{f"trace{k}": 7 + k for k in range(1, 9)},
}
_NOTICE = LEVELS["notice"]


def _level(name: str) -> int:
    try:
        return LEVELS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {name!r} (use one of {', '.join(LEVELS)})") from None


def _module_name(name: str) -> str:
    # httpd treats "ssl", "mod_ssl.c" and "ssl_module" as the same module.
    name = name.lower()
    if name.startswith("mod_") and name.endswith(".c"):
        name = name[4:-2]
    elif name.endswith("_module"):
        name = name[:-7]
    return name


def parse_log_level(spec: str) -> tuple[str, dict[str, str]]:
    """``"info ssl:warn proxy:debug"`` -> ``("info", {"ssl": "warn", "proxy": "debug"})``.
    The default level is ``warn`` when the spec names modules only."""
    level = "warn"
    modules: dict[str, str] = {}
    for word in spec.split():
        module, colon, value = word.rpartition(":")
        _level(value)
        if colon:
            modules[_module_name(module)] = value.lower()
        else:
            level = value.lower()
    return level, modules


class ErrorLog:
    """httpd's error log: ``[time] [module:level] [pid P:tid T] [client a:p] msg``."""

    def __init__(self, target: str, level: str = "warn",
                 module_levels: Mapping[str, str] | None = None) -> None:
        self.target = target
        self._default = _level(level)
        self._modules = {_module_name(m): _level(v)
                         for m, v in (module_levels or {}).items()}
        self._sink = _Sink(target)
        self._time_cache: tuple[int, bytes, bytes] = (-1, b"", b"")

    def enabled(self, level: str, module: str) -> bool:
        """Whether ``log(level, module, ...)`` would write. Test before building
        expensive debug messages. Unknown levels raise ValueError."""
        n = LEVELS.get(level)
        if n is None:
            n = _level(level)
        return n <= self._modules.get(module, self._default) or n == _NOTICE

    def log(self, level: str, module: str, message: str,
            client: tuple[str, int] | None = None) -> None:
        if not self.enabled(level, module):
            return
        now = _usec(time.time())
        sec = now // 1_000_000
        cached = self._time_cache
        if cached[0] != sec:
            tm = time.localtime(sec)
            cached = (sec,
                      b"[%s %s %02d %02d:%02d:%02d." % (
                          _WEEKDAYS[tm.tm_wday], _MONTHS[tm.tm_mon - 1], tm.tm_mday,
                          tm.tm_hour, tm.tm_min, tm.tm_sec),
                      b" %d] " % tm.tm_year)
            self._time_cache = cached
        parts = [cached[1], b"%06d" % (now % 1_000_000), cached[2],
                 b"[%s:%s] [pid %d:tid %d] " % (
                     _escape_errorlog(_b(module)), level.lower().encode(), _pid,
                     threading.get_ident())]
        if client is not None:
            parts.append(b"[client %s:%d] " % (_escape_errorlog(_b(client[0])), client[1]))
        parts.append(_escape_errorlog(_b(message)))
        parts.append(b"\n")
        self._sink.write(b"".join(parts))

    def emerg(self, module: str, message: str, client: tuple[str, int] | None = None) -> None:
        self.log("emerg", module, message, client)

    def alert(self, module: str, message: str, client: tuple[str, int] | None = None) -> None:
        self.log("alert", module, message, client)

    def crit(self, module: str, message: str, client: tuple[str, int] | None = None) -> None:
        self.log("crit", module, message, client)

    def error(self, module: str, message: str, client: tuple[str, int] | None = None) -> None:
        self.log("error", module, message, client)

    def warn(self, module: str, message: str, client: tuple[str, int] | None = None) -> None:
        self.log("warn", module, message, client)

    def notice(self, module: str, message: str, client: tuple[str, int] | None = None) -> None:
        self.log("notice", module, message, client)

    def info(self, module: str, message: str, client: tuple[str, int] | None = None) -> None:
        self.log("info", module, message, client)

    def debug(self, module: str, message: str, client: tuple[str, int] | None = None) -> None:
        self.log("debug", module, message, client)

    def open(self) -> None:
        self._sink.open()

    def reopen(self) -> None:
        self._sink.reopen()

    def close(self) -> None:
        self._sink.close()


def setup_error_log(target: str, level: str,
                    module_levels: Mapping[str, str] | None = None) -> ErrorLog:
    """Create the error log and open a file target now, so a bad path or permission
    fails at startup in the arbiter. Piped targets start lazily per process. The
    arbiter may also ``os.dup2`` the file over fd 2 (httpd does) -- not done here."""
    log = ErrorLog(target, level, module_levels)
    if not target.startswith("|"):
        log.open()
    return log


# Before the config is loaded (and for the arbiter's own early messages): stderr.
startup_log = ErrorLog("/dev/stderr", "warn")
