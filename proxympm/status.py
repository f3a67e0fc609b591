"""server-status and metrics: what the shared scoreboard says, for people and machines.

The handlers run in the worker thread of whichever child got the request, and read
the whole scoreboard (every child's process slot, worker slots and backend area)
without a lock: numbers may be one update old, never torn (scoreboard.py).

Three renderings of one ``Snapshot``:

- HTML like mod_status's page for the event MPM (2.4.62): server lines, totals,
  the per-process connection table, the scoreboard letters with their key, the
  per-worker table (``?notable`` leaves it out), then a backend table;
  ``?refresh=N`` adds a ``Refresh`` header (and meta tag);
- ``?auto``: mod_status's machine-readable text, its keys in its order;
- Prometheus text exposition 0.0.4 (``SetHandler metrics``, or ``?prometheus``).

Counting follows mod_status: a worker is idle if ``_`` in a live child of the
current generation that is not stopping, busy if in any other state but ``. S I
G``; the threads of a stopping child that wait for nothing show ``G``.

Two letters of the key are never written, as with httpd 2.4's Unix MPMs:
``D`` (DNS lookup) marked a worker blocked in a reverse lookup of the client
(``HostnameLookups``, ``UseCanonicalName DNS`` in httpd 1.3); proxympm does no
such lookup, and backend names are resolved by the watchdog, never by a worker.
``I`` (idle cleanup) is the NetWare MPM's mark on a single idle thread told to
exit; the event MPM, like proxympm's arbiter, retires spare capacity a whole
child at a time with a graceful stop, whose threads show ``G``. A worker closing
a connection shows ``C``. The key keeps both letters so it reads as httpd's.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxympm import __version__
from proxympm.config.model import HandlerLocation, ServerConfig
from proxympm.http.serialize import status_line
from proxympm.mpm import scoreboard as sb
from proxympm.proxy import metrics as m
from proxympm.proxy.routing import strip_port

SERVER_VERSION = f"proxympm/{__version__}"
STATUS_MAXLINE = 64  # letters per line of the HTML grid (httpd's)


@dataclass(slots=True)
class Proc:
    slot: int
    pid: int
    generation: int
    stopping: bool
    old_gen: bool
    conns: int
    accepting: bool
    writing: int
    keepalive: int
    closing: int
    busy: int = 0
    graceful: int = 0
    idle: int = 0
    cpu: tuple[float, float] = (0.0, 0.0)


@dataclass(slots=True)
class WorkerRow:
    slot: int
    thread: int
    generation: int
    pid: int
    letter: str
    conn_acc: int
    my_acc: int
    acc: int
    ss: float  # seconds since the last request ended
    req_ms: int  # current request so far, or the last one
    dur_ms: int
    my_bytes: int
    bytes: int
    client: str
    vhost: str
    request: str


@dataclass(slots=True)
class Snapshot:
    now: float
    restart: float
    generation: int
    config_generation: int
    procs: list[Proc] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    letters: str = ""
    accesses: int = 0
    bytes: int = 0
    duration_ms: int = 0
    backends: dict[str, list[int]] = field(default_factory=dict)
    # server-wide balancer member state (max, in flight, queue, error state, health
    # checks), when the shared balancer table provides it: its snapshot() rows
    members: list[dict[str, object]] = field(default_factory=list)
    # plain ProxyPass backends' server-wide error state: seconds left, 0.0 when usable
    backend_errors: dict[str, float] = field(default_factory=dict)

    @property
    def uptime(self) -> int:
        return max(0, int(self.now - self.restart))

    def total(self, attr: str, current_only: bool = False) -> int:
        return sum(getattr(p, attr) for p in self.procs
                   if not current_only or not p.stopping)


def snapshot(board: sb.Scoreboard, config: ServerConfig) -> Snapshot:
    now = time.time()
    gen = board.header(sb.G_GENERATION)
    snap = Snapshot(now, board.header(sb.G_RESTART_US) / 1e6, gen,
                    board.header(sb.G_CONFIG_GENERATION))
    tpc = config.threads_per_child
    letters = []
    for slot in range(board.slots):
        pid = board.get(slot, sb.PID)
        state = board.get(slot, sb.STATE)
        alive = pid != 0 and state != sb.FREE
        pgen = board.get(slot, sb.GENERATION)
        snap.accesses += board.get(slot, sb.REJECTED)
        snap.bytes += board.get(slot, sb.LISTENER_BYTES)
        proc = None
        if alive:
            proc = Proc(
                slot, pid, pgen, state == sb.STOPPING or pgen != gen, pgen != gen,
                board.get(slot, sb.CONNS), bool(board.get(slot, sb.ACCEPTING)),
                board.get(slot, sb.WRITING), board.get(slot, sb.KEEPALIVE),
                board.get(slot, sb.CLOSING),
                cpu=(board.get(slot, sb.CPU_USER_MS) / 1000, board.get(slot, sb.CPU_SYS_MS) / 1000))
            snap.procs.append(proc)
        for thread in range(board.threads):
            words, request, client, vhost = board.worker_fields(slot, thread)
            code = words[sb.W_STATUS] or sb.DEAD
            if not alive:
                code = sb.DEAD
            elif proc is not None and proc.stopping and code == sb.READY_:
                code = sb.GRACEFUL_G
            letter = chr(code)
            snap.accesses += words[sb.W_ACCESS]
            snap.bytes += words[sb.W_BYTES]
            snap.duration_ms += words[sb.W_DURATION_US] // 1000
            if proc is not None:
                if letter == "_":
                    proc.idle += 1
                elif letter == "G":
                    proc.graceful += 1
                elif letter not in ".SI":
                    proc.busy += 1
            if letter != "." or (thread < tpc and slot < config.server_limit):
                letters.append(letter)
            if words[sb.W_ACCESS] == 0 and letter in "_.":
                continue
            start, stop = words[sb.W_START_US], words[sb.W_STOP_US]
            busy = letter not in "_.G" and start > stop
            req_us = (now * 1e6 - start) if busy else (stop - start)
            snap.workers.append(WorkerRow(
                slot, thread, pgen, pid if alive else 0, letter, words[sb.W_CONN_ACCESS],
                words[sb.W_MY_ACCESS], words[sb.W_ACCESS],
                max(0.0, now - stop / 1e6) if stop else 0.0, max(0, int(req_us / 1000)),
                words[sb.W_DURATION_US] // 1000, words[sb.W_MY_BYTES], words[sb.W_BYTES],
                client.decode("utf-8", "replace"),
                strip_port(vhost).decode("utf-8", "replace"),
                request.decode("utf-8", "replace")))
        for row in range(sb.MAX_BACKENDS):
            name = board.backend_name(slot, row)
            if not name:
                continue
            values = board.backend_counters(slot, row)
            total = snap.backends.setdefault(name, [0] * m.COUNTERS)
            for i, v in enumerate(values):
                total[i] += v
    snap.letters = "".join(letters)
    return snap


# -- formatting helpers, httpd's ------------------------------------------------------


def apr_g(value: float) -> str:
    """C's %g as APR prints it: no leading zero before the point (".0813008")."""
    text = f"{value:g}"
    if text.startswith("0."):
        return text[1:]
    return text


def show_time(secs: int) -> str:
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    out = ""
    for n, unit in ((days, "day"), (hours, "hour"), (mins, "minute"), (secs, "second")):
        if n:
            out += f" {n} {unit}{'' if n == 1 else 's'}"
    return out


def ht_time(t: float) -> str:
    """httpd's DEFAULT_TIME_FORMAT in local time."""
    return time.strftime("%A, %d-%b-%Y %H:%M:%S %Z", time.localtime(t))


def byte_out(n: float) -> str:
    """mod_status's format_byte_out."""
    if n < 5 * 1024:
        return f"{int(n)} B"
    if n < 5 * 1024 * 1024:
        return f"{n / 1024:.1f} kB"
    if n < 5 * 1024 * 1024 * 1024:
        return f"{n / 1048576:.1f} MB"
    return f"{n / 1073741824:.1f} GB"


def split_backend(name: str) -> tuple[str, str]:
    """Row name -> (balancer, backend); a balancer's own row has backend ''."""
    balancer, sep, backend = name.partition("|")
    if sep:
        return balancer, backend
    if name.startswith("balancer://"):
        return name, ""
    return "", name


# -- ?auto -------------------------------------------------------------------------------


def render_auto(snap: Snapshot, server_name: str) -> str:
    up = snap.uptime
    user = sum(p.cpu[0] for p in snap.procs)
    system = sum(p.cpu[1] for p in snap.procs)
    kb = snap.bytes // 1024
    load = os.getloadavg()
    busy = snap.total("busy", current_only=True)
    idle = sum(p.idle for p in snap.procs if not p.stopping and not p.old_gen)
    graceful = snap.total("graceful")
    lines = [
        server_name,
        f"ServerVersion: {SERVER_VERSION}",
        "ServerMPM: event",
        f"Server Built: {SERVER_VERSION}",
        f"CurrentTime: {ht_time(snap.now)}",
        f"RestartTime: {ht_time(snap.restart)}",
        f"ParentServerConfigGeneration: {snap.config_generation}",
        f"ParentServerMPMGeneration: {snap.generation}",
        f"ServerUptimeSeconds: {up}",
        f"ServerUptime:{show_time(up)}",
        f"Load1: {load[0]:.2f}",
        f"Load5: {load[1]:.2f}",
        f"Load15: {load[2]:.2f}",
        f"Total Accesses: {snap.accesses}",
        f"Total kBytes: {kb}",
        f"Total Duration: {snap.duration_ms}",
        f"CPUUser: {apr_g(user)}",
        f"CPUSystem: {apr_g(system)}",
        "CPUChildrenUser: 0",
        "CPUChildrenSystem: 0",
    ]
    if (user or system) and up:
        lines.append(f"CPULoad: {apr_g((user + system) / up * 100)}")
    lines.append(f"Uptime: {up}")
    if up > 0:
        lines.append(f"ReqPerSec: {apr_g(snap.accesses / up)}")
        lines.append(f"BytesPerSec: {apr_g(1024 * kb / up)}")
    if snap.accesses > 0:
        lines.append(f"BytesPerReq: {apr_g(1024 * kb / snap.accesses)}")
        lines.append(f"DurationPerReq: {apr_g(snap.duration_ms / snap.accesses)}")
    lines += [
        f"BusyWorkers: {busy}",
        f"GracefulWorkers: {graceful}",
        f"IdleWorkers: {idle}",
        f"Processes: {len(snap.procs)}",
        f"Stopping: {sum(p.stopping for p in snap.procs)}",
        f"ConnsTotal: {snap.total('conns')}",
        f"ConnsAsyncWriting: {snap.total('writing')}",
        f"ConnsAsyncKeepAlive: {snap.total('keepalive')}",
        f"ConnsAsyncClosing: {snap.total('closing')}",
        f"Scoreboard: {snap.letters}",
    ]
    return "\n".join(lines) + "\n"


# -- Prometheus ---------------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_prometheus(snap: Snapshot) -> str:
    out: list[str] = []

    def family(name: str, kind: str, doc: str) -> None:
        out.append(f"# HELP {name} {doc}")
        out.append(f"# TYPE {name} {kind}")

    def sample(name: str, labels: dict[str, object], value: float) -> None:
        text = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
        out.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")

    family("proxympm_up", "gauge", "1: the server answers.")
    sample("proxympm_up", {}, 1)
    family("proxympm_uptime_seconds", "gauge", "Seconds since the server (re)started.")
    sample("proxympm_uptime_seconds", {}, snap.uptime)
    family("proxympm_generation", "gauge", "Children generation (bumped by each restart).")
    sample("proxympm_generation", {}, snap.generation)
    family("proxympm_accesses_total", "counter", "Requests served by worker threads.")
    sample("proxympm_accesses_total", {}, snap.accesses)
    family("proxympm_sent_bytes_total", "counter", "Bytes sent to clients.")
    sample("proxympm_sent_bytes_total", {}, snap.bytes)
    family("proxympm_request_duration_seconds_total", "counter",
           "Time spent serving requests, summed.")
    sample("proxympm_request_duration_seconds_total", {}, snap.duration_ms / 1000)
    family("proxympm_workers", "gauge", "Worker threads by state (server-wide).")
    sample("proxympm_workers", {"state": "busy"}, snap.total("busy", current_only=True))
    sample("proxympm_workers", {"state": "idle"},
           sum(p.idle for p in snap.procs if not p.stopping and not p.old_gen))
    sample("proxympm_workers", {"state": "graceful"}, snap.total("graceful"))
    family("proxympm_scoreboard", "gauge", "Worker slots by mod_status letter.")
    for letter, meaning in sb.LEGEND:
        sample("proxympm_scoreboard", {"state": letter, "meaning": meaning},
               snap.letters.count(letter))

    family("proxympm_process_connections", "gauge",
           "Client connections of one child process, by state.")
    for p in snap.procs:
        labels = {"slot": p.slot, "pid": p.pid, "generation": p.generation}
        for state, v in (("total", p.conns), ("writing", p.writing),
                         ("keepalive", p.keepalive), ("closing", p.closing)):
            sample("proxympm_process_connections", {**labels, "state": state}, v)
    family("proxympm_process_workers", "gauge", "Worker threads of one child, by state.")
    for p in snap.procs:
        labels = {"slot": p.slot, "pid": p.pid, "generation": p.generation}
        for state, v in (("busy", p.busy), ("idle", p.idle), ("graceful", p.graceful)):
            sample("proxympm_process_workers", {**labels, "state": state}, v)
    family("proxympm_process_accepting", "gauge", "1 while the child accepts connections.")
    for p in snap.procs:
        sample("proxympm_process_accepting", {"slot": p.slot, "pid": p.pid}, int(p.accepting))
    family("proxympm_process_stopping", "gauge", "1 while the child finishes gracefully.")
    for p in snap.procs:
        sample("proxympm_process_stopping", {"slot": p.slot, "pid": p.pid}, int(p.stopping))
    family("proxympm_process_cpu_seconds_total", "counter", "CPU time of the child.")
    for p in snap.procs:
        sample("proxympm_process_cpu_seconds_total",
               {"slot": p.slot, "pid": p.pid, "mode": "user"}, p.cpu[0])
        sample("proxympm_process_cpu_seconds_total",
               {"slot": p.slot, "pid": p.pid, "mode": "system"}, p.cpu[1])

    rows = sorted(snap.backends.items())
    members = [(split_backend(n), v) for n, v in rows if split_backend(n)[1]]
    queues = [(split_backend(n)[0], v) for n, v in rows if not split_backend(n)[1]]

    def per_backend(name: str, kind: str, doc: str, index: int) -> None:
        family(name, kind, doc)
        for (balancer, backend), v in members:
            sample(name, {"balancer": balancer, "backend": backend}, v[index])

    per_backend("proxympm_backend_requests_total", "counter",
                "Attempts sent to the backend (a balancer failover is a second attempt).",
                m.B_FINISHED)
    per_backend("proxympm_backend_errors_total", "counter",
                "Attempts that failed: connect/TLS error, timeout, invalid or cut response.",
                m.B_ERRORS)
    family("proxympm_backend_responses_total", "counter", "Backend responses by class.")
    for (balancer, backend), v in members:
        for k in range(5):
            sample("proxympm_backend_responses_total",
                   {"balancer": balancer, "backend": backend, "code": f"{k + 1}xx"},
                   v[m.B_1XX + k])
    family("proxympm_backend_in_flight", "gauge", "Attempts on the backend right now.")
    for (balancer, backend), v in members:
        sample("proxympm_backend_in_flight", {"balancer": balancer, "backend": backend},
               max(0, v[m.B_STARTED] - v[m.B_FINISHED]))
    per_backend("proxympm_backend_pool_idle_connections", "gauge",
                "Idle pooled keep-alive connections to the backend origin.", m.B_POOL_IDLE)
    family("proxympm_backend_connections_total", "counter",
           "Attempts by upstream connection: a new one or one reused from the pool.")
    for (balancer, backend), v in members:
        for how, i in (("new", m.B_NEW_CONNS), ("reused", m.B_REUSED_CONNS)):
            sample("proxympm_backend_connections_total",
                   {"balancer": balancer, "backend": backend, "connection": how}, v[i])
    family("proxympm_backend_latency_seconds", "histogram",
           "Time from picking the backend to the end of its response.")
    for (balancer, backend), v in members:
        labels = {"balancer": balancer, "backend": backend}
        running = 0
        for k, bound in enumerate(m.LATENCY_BUCKETS):
            running += v[m.B_BUCKET0 + k]
            sample("proxympm_backend_latency_seconds_bucket", {**labels, "le": f"{bound:g}"},
                   running)
        running += v[m.B_BUCKET0 + len(m.LATENCY_BUCKETS)]
        sample("proxympm_backend_latency_seconds_bucket", {**labels, "le": "+Inf"}, running)
        sample("proxympm_backend_latency_seconds_sum", labels, v[m.B_LATENCY_US] / 1e6)
        sample("proxympm_backend_latency_seconds_count", labels, running)
    if snap.backend_errors:
        family("proxympm_backend_error_seconds", "gauge",
               "Seconds of server-wide error state left for a plain ProxyPass backend "
               "(0: usable).")
        for backend, left in sorted(snap.backend_errors.items()):
            sample("proxympm_backend_error_seconds", {"backend": backend}, left)
    family("proxympm_balancer_queued", "gauge",
           "Requests waiting for a balancer member under its max.")
    for balancer, v in queues:
        sample("proxympm_balancer_queued", {"balancer": balancer}, v[m.B_QUEUED])
    if snap.members:
        for key, kind, doc in MEMBER_GAUGES:
            name = f"proxympm_balancer_member_{key}"
            family(name, kind, doc)
            for row in snap.members:
                value = row.get(key)
                if isinstance(value, bool | int | float):
                    sample(name, {"balancer": str(row.get("balancer", "")),
                                  "member": str(row.get("member", ""))}, float(value))
    return "\n".join(out) + "\n"


# Server-wide balancer member fields (the shared balancer table's snapshot keys).
MEMBER_GAUGES = (
    ("max", "gauge", "The member's max (concurrent requests, whole server)."),
    ("in_flight", "gauge", "Requests on the member now, whole server."),
    ("queued", "gauge", "Requests of its balancer waiting for a member, whole server."),
    ("in_error", "gauge", "1 while the member is in error state."),
    ("error_for", "gauge", "Seconds of error state left."),
    ("hc_failed", "gauge", "1 while its health check fails."),
)


# -- HTML ----------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
dl dt { margin: .15em 0; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #bbb; padding: .2em .55em; text-align: right; }
th { background: #eee; white-space: nowrap; } td.l { text-align: left; }
tr.sum td { font-weight: bold; background: #f6f6f6; }
pre.board { font-size: 1.05em; line-height: 1.25; background: #f8f8f8; padding: .5em; }
code { font-weight: bold; } .legend { font-size: .92em; }
"""


def render_html(snap: Snapshot, server_name: str, notable: bool, refresh: int) -> str:
    e = html.escape
    up = snap.uptime
    kb = snap.bytes // 1024
    busy = snap.total("busy", current_only=True)
    idle = sum(p.idle for p in snap.procs if not p.stopping and not p.old_gen)
    graceful = snap.total("graceful")
    user = sum(p.cpu[0] for p in snap.procs)
    system = sum(p.cpu[1] for p in snap.procs)
    o = ["<!DOCTYPE html>", "<html><head>", '<meta charset="utf-8">',
         "<title>Proxympm Status</title>"]
    if refresh:
        o.append(f'<meta http-equiv="refresh" content="{refresh}">')
    o += [f"<style>{_CSS}</style>", "</head><body>",
          f"<h1>Proxympm Server Status for {e(server_name)}</h1>",
          f'<dl><dt id="version">Server Version: {e(SERVER_VERSION)}</dt>',
          "<dt>Server MPM: event</dt></dl><hr /><dl>",
          f"<dt>Current Time: {e(ht_time(snap.now))}</dt>",
          f"<dt>Restart Time: {e(ht_time(snap.restart))}</dt>",
          f"<dt>Parent Server Config. Generation: {snap.config_generation}</dt>",
          f"<dt>Parent Server MPM Generation: {snap.generation}</dt>",
          f'<dt id="uptime">Server uptime: {e(show_time(up).strip() or "0 seconds")}</dt>',
          "<dt>Server load: {:.2f} {:.2f} {:.2f}</dt>".format(*os.getloadavg()),
          f'<dt id="totals">Total accesses: <span id="accesses">{snap.accesses}</span> - '
          f"Total Traffic: {byte_out(snap.bytes)} - Total Duration: {snap.duration_ms}</dt>",
          f"<dt>CPU Usage: u{apr_g(user)} s{apr_g(system)} cu0 cs0"
          + (f" - {(user + system) / up * 100:.3g}% CPU load" if up and (user or system)
             else "") + "</dt>"]
    parts = []
    if up > 0:
        parts.append(f"{snap.accesses / up:.3g} requests/sec - {byte_out(1024 * kb / up)}/second")
    if snap.accesses:
        parts.append(f"{byte_out(1024 * kb / snap.accesses)}/request - "
                     f"{snap.duration_ms / snap.accesses:g} ms/request")
    o.append(f"<dt>{' - '.join(parts)}</dt>")
    o.append(f'<dt id="workers">{busy} requests currently being processed, {graceful} workers '
             f"gracefully restarting, {idle} idle workers</dt></dl>")

    # per-process table (event MPM)
    o += ['<table id="processes">',
          '<tr><th rowspan="2">Slot</th><th rowspan="2">PID</th><th rowspan="2">Stopping</th>'
          '<th colspan="2">Connections</th><th colspan="3">Threads</th>'
          '<th colspan="3">Async connections</th></tr>',
          "<tr><th>total</th><th>accepting</th><th>busy</th><th>graceful</th><th>idle</th>"
          "<th>writing</th><th>keep-alive</th><th>closing</th></tr>"]
    for p in snap.procs:
        stopping = ("yes" if p.stopping else "no") + (" (old gen)" if p.old_gen else "")
        o.append(f"<tr><td>{p.slot}</td><td>{p.pid}</td><td>{stopping}</td><td>{p.conns}</td>"
                 f"<td>{'yes' if p.accepting else 'no'}</td><td>{p.busy}</td>"
                 f"<td>{p.graceful}</td><td>{p.idle}</td><td>{p.writing}</td>"
                 f"<td>{p.keepalive}</td><td>{p.closing}</td></tr>")
    o.append(f'<tr class="sum"><td>Sum</td><td>{len(snap.procs)}</td>'
             f"<td>{sum(p.stopping for p in snap.procs)}</td><td>{snap.total('conns')}</td>"
             f"<td>&nbsp;</td><td>{snap.total('busy')}</td><td>{graceful}</td>"
             f"<td>{snap.total('idle')}</td><td>{snap.total('writing')}</td>"
             f"<td>{snap.total('keepalive')}</td><td>{snap.total('closing')}</td></tr></table>")

    # scoreboard grid and key
    grid = "\n".join(snap.letters[i:i + STATUS_MAXLINE]
                     for i in range(0, len(snap.letters), STATUS_MAXLINE))
    o.append(f'<pre class="board" id="scoreboard">{e(grid)}</pre>')
    o.append('<p class="legend">Scoreboard Key:<br />')
    o.append(",\n".join(f'"<code>{e(k)}</code>" {e(v)}' for k, v in sb.LEGEND) + "</p>")

    # per-worker table
    if notable:
        o.append("<hr /><h2>Server Details</h2>")
        for w in snap.workers:
            o.append(f"<p><b>Server {w.slot}-{w.generation}</b> ({w.pid or '-'}): "
                     f"{w.conn_acc}|{w.my_acc}|{w.acc} [{w.letter}] {w.ss:.0f} {w.req_ms} "
                     f"{w.dur_ms} ({byte_out(w.my_bytes)}|{byte_out(w.bytes)}) "
                     f"<i>{e(w.client)} {{{e(w.request)}}}</i> <b>[{e(w.vhost)}]</b></p>")
    else:
        o += ["<h2>Workers</h2>", '<table id="workers-table"><tr><th>Srv</th><th>PID</th>'
              "<th>Acc</th><th>M</th><th>SS</th><th>Req</th><th>Dur</th><th>Child</th>"
              "<th>Slot</th><th>Client</th><th>Protocol</th><th>VHost</th>"
              "<th>Request</th></tr>"]
        for w in snap.workers:
            o.append(f"<tr><td>{w.slot}-{w.generation}</td><td>{w.pid or '-'}</td>"
                     f"<td>{w.conn_acc}/{w.my_acc}/{w.acc}</td><td><b>{w.letter}</b></td>"
                     f"<td>{w.ss:.0f}</td><td>{w.req_ms}</td><td>{w.dur_ms}</td>"
                     f"<td>{w.my_bytes / 1048576:.2f}</td><td>{w.bytes / 1048576:.2f}</td>"
                     f'<td class="l">{e(w.client)}</td><td class="l">http/1.1</td>'
                     f'<td class="l">{e(w.vhost)}</td><td class="l">{e(w.request)}</td></tr>')
        o.append("</table>")
        o.append('<table class="legend"><tr><th>Srv</th><td class="l">Child Server number '
                 "- generation</td></tr><tr><th>PID</th><td class=\"l\">OS process ID</td>"
                 '</tr><tr><th>Acc</th><td class="l">Number of accesses this connection / '
                 "this child / this slot</td></tr><tr><th>M</th><td class=\"l\">Mode of "
                 'operation</td></tr><tr><th>SS</th><td class="l">Seconds since beginning of '
                 'most recent request</td></tr><tr><th>Req</th><td class="l">Milliseconds '
                 "required to process most recent request (so far, if busy)</td></tr>"
                 '<tr><th>Dur</th><td class="l">Sum of milliseconds required to process all '
                 'requests</td></tr><tr><th>Child</th><td class="l">Megabytes transferred '
                 'this child</td></tr><tr><th>Slot</th><td class="l">Total megabytes '
                 "transferred this slot</td></tr></table>")

    if snap.members:
        o += ["<h2>Balancer members</h2>", '<table id="members"><tr><th>Balancer</th>'
              "<th>Member</th><th>Max</th><th>In flight</th><th>Queued</th><th>Served</th>"
              "<th>Errors</th><th>State</th><th>Health check</th></tr>"]
        for row in snap.members:
            state = (f"Err ({float(row.get('error_for') or 0):.0f}s)" if row.get("in_error")
                     else "Ok")
            check = "failed" if row.get("hc_failed") else ("ok" if row.get("hc_checks")
                                                           else "-")
            cap = row.get("max")
            o.append(f'<tr><td class="l">{e(str(row.get("balancer", "")))}</td>'
                     f'<td class="l">{e(str(row.get("member", "")))}</td>'
                     f"<td>{'-' if cap is None else cap}</td><td>{row.get('in_flight', 0)}</td>"
                     f"<td>{row.get('queued', 0)}</td><td>{row.get('served', 0)}</td>"
                     f"<td>{row.get('errors', 0)}</td><td>{state}</td><td>{check}</td></tr>")
        o.append("</table>")

    # backends
    o += ["<h2>Backends</h2>", '<table id="backends"><tr><th>Balancer</th><th>Backend</th>'
          "<th>Requests</th><th>Errors</th><th>In flight</th><th>Queued</th>"
          "<th>Pool idle</th><th>New conns</th><th>Reused conns</th><th>2xx</th>"
          "<th>4xx</th><th>5xx</th><th>Avg ms</th><th>State</th></tr>"]
    for name, v in sorted(snap.backends.items()):
        balancer, backend = split_backend(name)
        done = v[m.B_FINISHED]
        avg = f"{v[m.B_LATENCY_US] / done / 1000:.1f}" if done else "-"
        if not backend:
            o.append(f'<tr><td class="l">{e(balancer)}</td><td class="l">(queue)</td>'
                     f"<td></td><td></td><td></td><td>{v[m.B_QUEUED]}</td>"
                     "<td></td><td></td><td></td><td></td><td></td><td></td><td></td>"
                     "<td></td></tr>")
            continue
        left = snap.backend_errors.get(backend) if not balancer else None
        state = "" if left is None else (f"Err ({left:.0f}s)" if left > 0 else "Ok")
        o.append(f'<tr><td class="l">{e(balancer) or "-"}</td><td class="l">{e(backend)}</td>'
                 f"<td>{done}</td><td>{v[m.B_ERRORS]}</td>"
                 f"<td>{max(0, v[m.B_STARTED] - done)}</td><td></td>"
                 f"<td>{v[m.B_POOL_IDLE]}</td><td>{v[m.B_NEW_CONNS]}</td>"
                 f"<td>{v[m.B_REUSED_CONNS]}</td><td>{v[m.B_2XX]}</td><td>{v[m.B_4XX]}</td>"
                 f"<td>{v[m.B_5XX]}</td><td>{avg}</td><td>{state}</td></tr>")
    o.append("</table>")
    o.append("<hr /><address>" + e(f"{SERVER_VERSION} Server at {server_name}") + "</address>")
    o.append("</body></html>")
    return "\n".join(o) + "\n"


# -- the handler ------------------------------------------------------------------------------


def _query_words(target: bytes) -> dict[str, str]:
    query = target.partition(b"?")[2].decode("latin-1")
    words: dict[str, str] = {}
    for part in query.replace(";", "&").split("&"):
        if part:
            key, _, value = part.partition("=")
            words.setdefault(key.lower(), value)
    return words


class StatusPage:
    """One per child: answers server-status and metrics requests (worker threads;
    it holds only read-only state)."""

    __slots__ = ("board", "config", "server_name", "members", "errors")

    def __init__(self, board: sb.Scoreboard, config: ServerConfig, server_name: str,
                 members: Callable[[], list[dict[str, object]]] | None = None,
                 errors: Callable[[], dict[str, float]] | None = None) -> None:
        self.board = board
        self.config = config
        self.server_name = server_name
        # the shared backend table's snapshot (server-wide member state), if any, and
        # its plain backends' error state
        self.members = members
        self.errors = errors

    def respond(self, handler: HandlerLocation, method: bytes, target: bytes,
                host: bytes | None, close: bool) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and the whole response (head and body) as bytes."""
        if method not in (b"GET", b"HEAD"):
            body = b"Method not allowed: server-status answers GET and HEAD\n"
            headers = [(b"Allow", b"GET, HEAD"), (b"Content-Type", b"text/plain")]
            return self._response(405, headers, body, method, close)
        words = _query_words(target)
        name = (host or b"").decode("latin-1").rsplit(":", 1)[0] or self.server_name
        snap = snapshot(self.board, self.config)
        if self.members is not None:
            snap.members = self.members()
        if self.errors is not None:
            snap.backend_errors = self.errors()
        headers: list[tuple[bytes, bytes]] = []
        if handler.handler == "metrics" or "prometheus" in words:
            body = render_prometheus(snap).encode()
            ctype = b"text/plain; version=0.0.4; charset=utf-8"
        elif "auto" in words:
            body = render_auto(snap, name).encode()
            ctype = b"text/plain; charset=ISO-8859-1"
        else:
            refresh = 0
            if "refresh" in words:
                value = words["refresh"]
                refresh = int(value) if value.isdigit() and int(value) > 0 else 1
                headers.append((b"Refresh", str(refresh).encode()))
            body = render_html(snap, name, "notable" in words, refresh).encode()
            ctype = b"text/html; charset=utf-8"
        headers.append((b"Content-Type", ctype))
        headers.append((b"Cache-Control", b"no-cache"))
        return self._response(200, headers, body, method, close)

    @staticmethod
    def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                  method: bytes, close: bool) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        from proxympm.http.serialize import serialize_head

        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        if close:
            headers.append((b"Connection", b"close"))
        head = serialize_head(status_line(status), headers)
        return status, headers, head if method == b"HEAD" else head + body
