"""status.py renderers over a real (in-process) scoreboard: counting rules as
mod_status's, ?auto formatting, the Prometheus text (parsed by prometheus_client),
and the balancer member table fed by the shared balancer table's snapshot."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxympm.config import load_config
from proxympm.config.model import HandlerLocation
from proxympm.mpm import scoreboard as sb
from proxympm.proxy import metrics as m
from proxympm.status import StatusPage, apr_g, render_auto, show_time, snapshot


def _board(tmp_path: Path) -> tuple[sb.Scoreboard, object]:
    conf = tmp_path / "c.conf"
    conf.write_text("Listen 127.0.0.1:1\nServerLimit 2\nThreadsPerChild 2\nThreadLimit 2\n"
                    "MaxRequestWorkers 4\nMinSpareThreads 1\nMaxSpareThreads 4\n")
    config = load_config(str(conf))
    board = sb.Scoreboard(4, 2)
    board.set_header(sb.G_GENERATION, 1)
    board.claim(0, 101, 1, 2, 2)  # current generation
    board.claim(1, 102, 0, 2, 2)  # old generation, finishing
    board.report(1, 0, 0, 3, True, writing=1, keepalive=1, closing=1)
    w = board.worker(0, 0)
    w.status(sb.READY_)
    w.begin(sb.WRITE_W, b"GET /a HTTP/1.1", ("10.0.0.9", 5), b"v.example:8080", 1,
            time.time() - 0.01)
    w.end(1000)
    w.begin(sb.WRITE_W, b"GET /b HTTP/1.1", ("10.0.0.9", 5), b"v.example", 2,
            time.time())  # busy now
    board.worker(0, 1).status(sb.READY_)
    board.worker(1, 0).status(sb.READY_)  # idle thread of a stopping child: G
    board.worker(1, 1).status(sb.WRITE_W)
    rows = board.backend_rows(0, ["http://b:1", "balancer://p", "balancer://p|http://b:1"])
    values = [0] * m.COUNTERS
    values[m.B_STARTED], values[m.B_FINISHED], values[m.B_ERRORS] = 5, 4, 1
    values[m.B_2XX], values[m.B_5XX], values[m.B_BUCKET0] = 3, 1, 4
    values[m.B_LATENCY_US], values[m.B_POOL_IDLE] = 12_000, 2
    board.publish_backend(0, rows[0], [0] * m.COUNTERS, values)
    return board, config


def test_counting_and_auto(tmp_path: Path) -> None:
    board, config = _board(tmp_path)
    snap = snapshot(board, config)
    assert snap.letters == "W_GW"  # slots 2, 3 are beyond ServerLimit and empty
    text = render_auto(snap, "h")
    auto = dict(line.split(": ", 1) for line in text.splitlines()[1:] if ": " in line)
    assert auto["Total Accesses"] == "1" and auto["BusyWorkers"] == "1"
    assert auto["IdleWorkers"] == "1" and auto["GracefulWorkers"] == "1"
    assert auto["Processes"] == "2" and auto["Stopping"] == "1"
    assert (auto["ConnsTotal"], auto["ConnsAsyncWriting"], auto["ConnsAsyncKeepAlive"],
            auto["ConnsAsyncClosing"]) == ("3", "1", "1", "1")
    busy = [w for w in snap.workers if w.letter == "W" and w.slot == 0][0]
    assert (busy.request, busy.client, busy.vhost, busy.acc) == (
        "GET /b HTTP/1.1", "10.0.0.9", "v.example", 1)
    assert apr_g(0.0813008) == ".0813008" and apr_g(0) == "0" and apr_g(12.5) == "12.5"
    assert show_time(0) == "" and show_time(90061) == " 1 day 1 hour 1 minute 1 second"


def test_prometheus_parses_and_members_render(tmp_path: Path) -> None:
    board, config = _board(tmp_path)
    members = [{"balancer": "balancer://p", "member": "http://b:1", "max": 2,
                "in_flight": 1, "queued": 3, "served": 9, "errors": 1, "in_error": True,
                "error_for": 4.2, "hc_failed": False, "hc_checks": 5}]
    page = StatusPage(board, config, "h", lambda: members)
    _, headers, data = page.respond(HandlerLocation("/metrics", "metrics"), b"GET",
                                    b"/metrics", b"h", close=False)
    body = data.split(b"\r\n\r\n", 1)[1].decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    plain = (("backend", "http://b:1"), ("balancer", ""))
    assert samples[("proxympm_backend_requests_total", plain)] == 4
    assert samples[("proxympm_backend_errors_total", plain)] == 1
    assert samples[("proxympm_backend_in_flight", plain)] == 1
    assert samples[("proxympm_backend_pool_idle_connections", plain)] == 2
    assert samples[("proxympm_backend_latency_seconds_bucket", (*plain, ("le", "0.005")))] == 4
    assert samples[("proxympm_backend_latency_seconds_sum", plain)] == 0.012
    member = (("balancer", "balancer://p"), ("member", "http://b:1"))
    assert samples[("proxympm_balancer_member_in_error", member)] == 1
    assert samples[("proxympm_balancer_member_queued", member)] == 3
    _, _, data = page.respond(HandlerLocation("/s", "server-status"), b"GET", b"/s", b"h",
                              close=True)
    html = data.decode()
    assert "Connection: close" in html.split("\r\n\r\n")[0]
    assert '<table id="members">' in html and "Err (4s)" in html
