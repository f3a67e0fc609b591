#!/usr/bin/env python3
"""proxympm side-by-side benchmark: proxympm vs nginx / Apache httpd / HAProxy.

Self-contained (standard library only, plus the `wrk` binary); works from a fresh
clone. Not part of the test suite (pytest never collects this directory's files).

    python3 tests/bench/run.py                     # every installed target, defaults
    python3 tests/bench/run.py --quick             # smoke run: 1 round, 3 s per wrk run
    python3 tests/bench/run.py -t proxympm,apache -s small --rounds 3
    python3 tests/bench/run.py --variants          # + proxympm-pinned, proxympm-t8

See tests/bench/README.md for what is measured and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SMALL_BODY = b"hello, world\n"
PATHS = {"small": "/", "64k": "/64k.bin", "1m": "/1m.bin", "close": "/", "tls": "/"}
SIZES = {"small": len(SMALL_BODY), "64k": 65536, "1m": 1048576}
SCENARIOS = ("small", "64k", "1m", "close", "tls", "idle")


@dataclass
class TLS:
    """The `tls` scenario: every target also terminates TLS on ``port`` (a self-signed
    P-256 certificate made with the openssl CLI) and proxies to the same backend."""

    port: int
    cert: Path
    key: Path
    pem: Path  # cert + key in one file (HAProxy)


TLS_ON: TLS | None = None  # set by main() when the tls scenario runs; per target port


def make_cert(root: Path) -> tuple[Path, Path, Path] | None:
    cert, key, pem = root / "cert.pem", root / "key.pem", root / "both.pem"
    if not shutil.which("openssl"):
        return None
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       capture_output=True)
    if r.returncode:
        return None
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    for f in (cert, key, pem):
        os.chmod(f, 0o644)
    return cert, key, pem


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- processes ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout:g} s")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def descendants(root: int) -> list[int]:
    """root and every process below it (found through /proc ppid links)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                kids.setdefault(int(_stat(int(d))[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            f = _stat(pid)
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def machine_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:9]))
    return sum(v) - v[3] - v[4], sum(v)


class Server:
    """A process we started, in its own session; stopped by its pid and session."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.port, self.workdir = name, argv, port, workdir
        self.logfile = open(workdir / "stdout.log", "wb")
        self.proc = subprocess.Popen(argv, cwd=workdir, stdout=self.logfile,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)
        try:
            wait_port(port, self.proc)
        except Exception:
            self.stop()
            raise

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            members = self.pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                pass
            for pid in members:  # only processes that were ours a moment ago
                try:
                    if os.getsid(pid) == self.proc.pid:
                        os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.logfile.close()


# -- configs ----------------------------------------------------------------------------


def unprivileged_user() -> tuple[str, str] | None:
    if os.geteuid() != 0:
        return None
    import grp
    import pwd
    for user in ("www-data", "nobody", "daemon"):
        try:
            pw = pwd.getpwnam(user)
            return user, grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            continue
    return None


def nginx_common(work: Path, workers: int) -> str:
    ug = unprivileged_user()
    user = f"user {ug[0]} {ug[1]};" if ug else ""
    return f"""{user}
worker_processes {workers};
worker_rlimit_nofile 65536;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 20000; }}
"""


def nginx_temp(work: Path) -> str:
    return "\n".join(f"    {k}_temp_path {work}/tmp_{k};" for k in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def backend_nginx(work: Path, port: int, workers: int) -> list[str]:
    www = work / "www"
    www.mkdir(parents=True, exist_ok=True)
    for name, size in (("64k.bin", 65536), ("1m.bin", 1048576)):
        p = www / name
        if not p.exists() or p.stat().st_size != size:
            p.write_bytes(os.urandom(size))
    conf = nginx_common(work, workers) + f"""http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_timeout 300s; keepalive_requests 100000000;
{nginx_temp(work)}
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location = / {{ return 200 "hello, world\\n"; }}
        location / {{ }}
    }}
}}
"""
    (work / "nginx.conf").write_text(conf)
    return [shutil.which("nginx") or "nginx", "-p", str(work), "-e", str(work / "error.log"),
            "-c", str(work / "nginx.conf")]


PY_BACKEND = r'''
import asyncio, os, sys
port, root = int(sys.argv[1]), sys.argv[2]
files = {b"/": b"hello, world\n"}
for n in ("64k.bin", "1m.bin"):
    files[b"/" + n.encode()] = open(os.path.join(root, n), "rb").read()
async def serve(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            body = files.get(path)
            if body is None:
                w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        w.close()
async def main():
    srv = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
'''


def backend_python(work: Path, port: int) -> list[str]:
    www = work / "www"
    www.mkdir(parents=True, exist_ok=True)
    for name, size in (("64k.bin", 65536), ("1m.bin", 1048576)):
        (www / name).write_bytes(os.urandom(size))
    (work / "backend.py").write_text(PY_BACKEND)
    return [sys.executable, str(work / "backend.py"), str(port), str(www)]


def nginx_proxy(work: Path, port: int, bport: int, workers: int, threads: int) -> list[str]:
    conf = nginx_common(work, workers) + f"""http {{
    access_log off;
    keepalive_timeout 300s; keepalive_requests 100000000;
{nginx_temp(work)}
    upstream backend {{
        server 127.0.0.1:{bport};
        keepalive 32; keepalive_requests 100000000; keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
{tls_nginx()}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    (work / "nginx.conf").write_text(conf)
    return [shutil.which("nginx") or "nginx", "-p", str(work), "-e", str(work / "error.log"),
            "-c", str(work / "nginx.conf")]


def tls_nginx() -> str:
    t = TLS_ON
    if t is None:
        return ""
    return (f"        listen 127.0.0.1:{t.port} ssl;\n        ssl_certificate {t.cert};\n"
            f"        ssl_certificate_key {t.key};")


def apache_binary() -> str | None:
    return shutil.which("apache2") or shutil.which("httpd")


def apache_modules() -> Path | None:
    for d in ("/usr/lib/apache2/modules", "/usr/lib64/httpd/modules", "/usr/lib/httpd/modules",
              "/usr/libexec/apache2", "/usr/local/apache2/modules"):
        if (Path(d) / "mod_proxy_http.so").exists():
            return Path(d)
    return None


def apache_proxy(work: Path, port: int, bport: int, workers: int, threads: int) -> list[str]:
    mods = apache_modules()
    if mods is None:
        raise RuntimeError("mod_proxy_http.so not found")
    (work / "logs").mkdir(exist_ok=True)
    (work / "run").mkdir(exist_ok=True)
    ug = unprivileged_user()
    load = [f"LoadModule {m}_module {mods}/mod_{m}.so"
            for m in ("mpm_event", "authz_core", "proxy", "proxy_http", "unixd",
                      *(("ssl", "socache_shmcb") if TLS_ON else ()))
            if (mods / f"mod_{m}.so").exists()]
    t = 64 if threads <= 0 else threads
    conf = f"""ServerRoot "{work}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{work}/run/httpd.pid"
DefaultRuntimeDir "{work}/run"
ErrorLog "{work}/logs/error.log"
LogLevel warn
{f"User {ug[0]}" if ug else ""}
{f"Group {ug[1]}" if ug else ""}
{chr(10).join(load)}
StartServers {workers}
ServerLimit {workers}
ThreadLimit {t}
ThreadsPerChild {t}
MaxRequestWorkers {workers * t}
MinSpareThreads 1
MaxSpareThreads {workers * t}
AsyncRequestWorkerFactor 100
MaxConnectionsPerChild 0
Timeout 60
KeepAlive On
KeepAliveTimeout 300
MaxKeepAliveRequests 0
ProxyRequests Off
ProxyPass "/" "http://127.0.0.1:{bport}/" enablereuse=on keepalive=On
"""
    if TLS_ON is not None:
        t = TLS_ON
        conf += f"""Listen 127.0.0.1:{t.port}
<VirtualHost 127.0.0.1:{t.port}>
    SSLEngine on
    SSLCertificateFile "{t.cert}"
    SSLCertificateKeyFile "{t.key}"
    ProxyPass "/" "http://127.0.0.1:{bport}/" enablereuse=on keepalive=On
</VirtualHost>
"""
    (work / "httpd.conf").write_text(conf)
    return [apache_binary() or "apache2", "-d", str(work), "-f", str(work / "httpd.conf"),
            "-DFOREGROUND"]


def haproxy_proxy(work: Path, port: int, bport: int, workers: int, threads: int) -> list[str]:
    # haproxy needs about 2 fds per connection and refuses to start if it cannot
    # raise RLIMIT_NOFILE to what maxconn implies
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    maxconn = max(1000, min(20000, (nofile - 200) // 2 - 100))
    conf = f"""global
    nbthread {workers}
    maxconn {maxconn}
    tune.pool-high-fd-ratio 90
    tune.pool-low-fd-ratio 80
defaults
    mode http
    option http-keep-alive
    maxconn {maxconn}
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 300s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:{port}
{f"    bind 127.0.0.1:{TLS_ON.port} ssl crt {TLS_ON.pem}" if TLS_ON else ""}
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:{bport}
"""
    (work / "haproxy.cfg").write_text(conf)
    return [shutil.which("haproxy") or "haproxy", "-db", "-f", str(work / "haproxy.cfg")]


def proxympm_conf(work: Path, port: int, bport: int, workers: int, threads: int) -> Path:
    t = 25 if threads <= 0 else threads
    conf = f"""Listen 127.0.0.1:{port}
PidFile {work}/proxympm.pid
ErrorLog {work}/error.log
LogLevel warn
StartServers {workers}
ServerLimit {workers}
ThreadsPerChild {t}
MaxRequestWorkers {workers * t}
MinSpareThreads 1
MaxSpareThreads {workers * t + t + 1}
MaxConnectionsPerChild 0
KeepAlive On
KeepAliveTimeout 300
MaxKeepAliveRequests 0
ProxyPass "/" "http://127.0.0.1:{bport}/"
"""
    if TLS_ON is not None:
        t = TLS_ON
        conf += f"""Listen 127.0.0.1:{t.port} https
<VirtualHost 127.0.0.1:{t.port}>
    SSLEngine on
    SSLCertificateFile {t.cert}
    SSLCertificateKeyFile {t.key}
    ProxyPass "/" "http://127.0.0.1:{bport}/"
</VirtualHost>
"""
    path = work / "proxympm.conf"
    path.write_text(conf)
    return path


def proxympm_cmd(args: argparse.Namespace) -> list[str]:
    if args.proxympm_cmd:
        return args.proxympm_cmd.split()
    return [sys.executable, "-m", "proxympm"]


@dataclass
class Target:
    name: str
    available: str | None  # None when runnable, else why not
    build: object  # (work, port, bport, workers, threads) -> argv
    threads: int = 0
    pin: bool = False  # pin child i of proxympm to CPU i % ncpu (experiment)
    env: dict[str, str] = field(default_factory=dict)


def make_targets(args: argparse.Namespace) -> list[Target]:
    def pm_builder(work: Path, port: int, bport: int, workers: int, threads: int) -> list[str]:
        conf = proxympm_conf(work, port, bport, workers, threads)
        return [*proxympm_cmd(args), "-f", str(conf), "-D", "FOREGROUND"]

    pm_env = dict(os.environ)
    pm_env["PYTHONPATH"] = str(REPO) + os.pathsep + pm_env.get("PYTHONPATH", "")
    nginx_ok = None if shutil.which("nginx") else "nginx not installed"
    apache_ok = (None if apache_binary() and apache_modules()
                 else "apache2/httpd (mod_proxy_http) not installed")
    haproxy_ok = None if shutil.which("haproxy") else "haproxy not installed"
    targets = [
        Target("proxympm", None, pm_builder, args.threads, env=pm_env),
        Target("nginx", nginx_ok, nginx_proxy),
        Target("apache", apache_ok, apache_proxy, args.apache_threads),
        Target("haproxy", haproxy_ok, haproxy_proxy),
    ]
    if args.variants:
        targets.append(Target("proxympm-pinned", None, pm_builder, args.threads, pin=True,
                              env=pm_env))
        targets.append(Target("proxympm-t8", None, pm_builder, 8, env=pm_env))
    return targets


def pin_children(server: Server) -> None:
    """Experiment: each proxympm child (all its threads) on one CPU, round robin."""
    ncpu = os.cpu_count() or 1
    kids = [p for p in server.pids() if p != server.proc.pid]
    for i, pid in enumerate(sorted(kids)):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), {i % ncpu})
            except OSError:
                pass


# -- load ------------------------------------------------------------------------------


def http_get(port: int, path: str, tls: bool = False) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        s = raw
        if tls:
            import ssl

            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(raw)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while True:
            line, _, rest = rest.partition(b"\r\n")
            n = int(line.split(b";")[0], 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return status, body


def check_target(port: int, scenarios: list[str]) -> None:
    status, body = http_get(port, "/")
    if status != 200 or body != SMALL_BODY:
        raise RuntimeError(f"GET / gave {status} {body[:40]!r}")
    for sc in scenarios:
        if sc == "tls" and TLS_ON is not None:
            status, body = http_get(TLS_ON.port, "/", tls=True)
            if status != 200 or body != SMALL_BODY:
                raise RuntimeError(f"GET https:///{TLS_ON.port}/ gave {status} {body[:40]!r}")
        if sc in ("64k", "1m"):
            status, body = http_get(port, PATHS[sc])
            if status != 200 or len(body) != SIZES[sc]:
                raise RuntimeError(f"GET {PATHS[sc]} gave {status}, {len(body)} bytes")


def parse_dur(s: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)?$", s)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]


def run_wrk(port: int, path: str, args: argparse.Namespace, duration: float,
            scenario: str = "") -> dict:
    url = f"http://127.0.0.1:{port}{path}"
    extra: list[str] = []
    if scenario == "close":
        extra = ["-H", "Connection: close"]  # a new connection for every request
    elif scenario == "tls" and TLS_ON is not None:
        url = f"https://127.0.0.1:{TLS_ON.port}{path}"
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.conns}", f"-d{duration:g}s",
           "--timeout", "5s", "--latency", *extra, url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    out = r.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(m.group(1)) if m else 0.0, "requests": int(n.group(1)) if n else 0,
            "p99_ms": parse_dur(p99.group(1)) * 1e3 if p99 else float("nan"),
            "errors": errs + (int(non2xx.group(1)) if non2xx else 0)}


def measured_wrk(server: Server, path: str, args: argparse.Namespace,
                 scenario: str = "") -> dict:
    pids = server.pids()
    c0, m0, t0 = cpu_ticks(pids), machine_busy(), time.monotonic()
    res = run_wrk(server.port, path, args, args.duration, scenario)
    el = time.monotonic() - t0
    c1, m1 = cpu_ticks(server.pids()), machine_busy()
    cpu = (c1 - c0) / CLK_TCK
    res["cpu_us_per_req"] = cpu / res["requests"] * 1e6 if res["requests"] else float("nan")
    res["server_cpu_pct"] = cpu / el * 100
    res["machine_busy_pct"] = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 100
    return res


def hold_idle(port: int, n: int, batch: int = 32, timeout: float = 60.0) -> list[socket.socket]:
    """Open n keep-alive connections, one GET / each, read the response, keep them open."""
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle\r\n\r\n"
    sel = selectors.DefaultSelector()
    held: list[socket.socket] = []
    pending: dict[socket.socket, bytearray] = {}
    started = 0
    deadline = time.monotonic() + timeout
    while (started < n or pending) and time.monotonic() < deadline:
        while started < n and len(pending) < batch:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            pending[s] = bytearray()
            sel.register(s, selectors.EVENT_WRITE)
            started += 1
        for key, ev in sel.select(1.0):
            s = key.fileobj
            buf = pending[s]
            try:
                if ev & selectors.EVENT_WRITE:
                    s.send(req)
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                del pending[s]
                s.close()
                continue
            buf += data
            if buf.endswith(SMALL_BODY):
                sel.unregister(s)
                del pending[s]
                held.append(s)
    for s in pending:
        s.close()
    sel.close()
    return held


def alive(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                continue
        except BlockingIOError:
            pass
        except OSError:
            continue
        n += 1
    return n


# -- orchestration ------------------------------------------------------------------------


def run_target(t: Target, args: argparse.Namespace, root: Path, bport: int, rnd: int) -> list[dict]:
    work = root / f"{t.name}-r{rnd}"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    port = free_port()
    if TLS_ON is not None:
        TLS_ON.port = free_port()
    argv = t.build(work, port, bport, args.workers, t.threads)
    out: list[dict] = []
    server = Server(t.name, argv, port, work, env=t.env or None)
    try:
        time.sleep(0.3)
        if t.pin:
            pin_children(server)
        check_target(port, args.scenarios)
        run_wrk(port, "/", args, args.warmup)  # warm-up (pools, caches)
        for sc in args.scenarios:
            if sc == "idle":
                pids = server.pids()
                before = rss_kib(pids)
                socks = hold_idle(port, args.idle)
                time.sleep(1.0)
                after = rss_kib(server.pids())
                res = measured_wrk(server, "/", args)
                res.update(scenario="idle", idle_held=len(socks), idle_alive=alive(socks),
                           rss_before_kib=before, rss_after_kib=after,
                           kib_per_conn=(after - before) / max(1, len(socks)))
                for s in socks:
                    s.close()
            else:
                if sc == "tls":  # warm-up: handshakes and TLS session caches
                    run_wrk(port, "/", args, args.warmup, "tls")
                res = measured_wrk(server, PATHS[sc], args, sc)
                res["scenario"] = sc
            res.update(target=t.name, round=rnd)
            log(f"  {t.name:16s} {sc:6s} {res['rps']:10.0f} req/s  "
                f"{res['cpu_us_per_req']:7.1f} us CPU/req  p99 {res['p99_ms']:.1f} ms"
                + (f"  {res['kib_per_conn']:.1f} KiB/idle conn" if sc == "idle" else "")
                + (f"  errors {res['errors']}" if res["errors"] else ""))
            out.append(res)
    finally:
        server.stop()
    return out


def med(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if r.get(key) == r.get(key)]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def report(results: list[dict], targets: list[str], scenarios: list[str], args) -> str:
    by: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        by.setdefault((r["target"], r["scenario"]), []).append(r)
    pm = [t for t in targets if t.startswith("proxympm")]
    anchors = [t for t in targets if not t.startswith("proxympm")]
    L = [f"wrk -t{args.wrk_threads} -c{args.conns} -d{args.duration:g}s, {args.workers} "
         f"processes/threads per server, median of {args.rounds} round(s); "
         f"{os.cpu_count()} CPUs; backend: {args.backend_kind}", ""]
    head = "| scenario | metric | " + " | ".join(targets) + " | " + " | ".join(
        f"{p}/{a}" for p in pm for a in anchors) + " |"
    L.append(head)
    L.append("|" + "---|" * (2 + len(targets) + len(pm) * len(anchors)))
    for sc in scenarios:
        metrics = [("rps", "req/s", "{:.0f}", False),
                   ("cpu_us_per_req", "CPU us/req", "{:.1f}", True),
                   ("p99_ms", "p99 ms", "{:.1f}", True)]
        if sc == "idle":
            metrics.insert(0, ("kib_per_conn", f"KiB/idle conn ({args.idle})", "{:.2f}", True))
        for key, label, fmt, lower_better in metrics:
            vals = {t: med(by.get((t, sc), []), key) for t in targets}
            cells = [fmt.format(vals[t]) if vals[t] == vals[t] else "-" for t in targets]
            ratios = []
            for p in pm:
                for a in anchors:
                    x, y = vals[p], vals[a]
                    ok = x == x and y == y and x > 0 and y > 0
                    # ratios are "proxympm is N x as good": >1 better, whatever the metric
                    ratios.append(f"{(y / x if lower_better else x / y):.2f}x" if ok else "-")
            L.append(f"| {sc} | {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    errs = {r["target"] for r in results if r["errors"]}
    if errs:
        L.append("")
        L.append("wrk reported socket errors / non-2xx for: " + ", ".join(sorted(errs)))
    busy = [r["machine_busy_pct"] for r in results]
    L.append("")
    L.append("Ratios: proxympm relative to the anchor, >1.00x means proxympm is better "
             "(more req/s, less CPU, lower p99, less memory).")
    L.append(f"Machine busy during wrk runs: median {statistics.median(busy):.0f}% "
             f"(wrk, backend and the server share {os.cpu_count()} CPUs).")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--targets", default="proxympm,nginx,apache,haproxy",
                    help="comma list among proxympm,nginx,apache,haproxy (+ variants)")
    ap.add_argument("-s", "--scenarios", default="small,64k,idle",
                    help="comma list among small,64k,1m,close,tls,idle")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    ap.add_argument("-d", "--duration", type=float, default=8.0, help="seconds per wrk run (<=10)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("-c", "--conns", type=int, default=50)
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("-w", "--workers", type=int, default=2,
                    help="processes (nginx, apache, proxympm) / threads (haproxy)")
    ap.add_argument("--threads", type=int, default=25, help="proxympm ThreadsPerChild")
    ap.add_argument("--apache-threads", type=int, default=64, help="Apache ThreadsPerChild")
    ap.add_argument("--idle", type=int, default=2000, help="idle keep-alive connections")
    ap.add_argument("--variants", action="store_true",
                    help="also run proxympm-pinned (child i on CPU i) and proxympm-t8")
    ap.add_argument("--proxympm-cmd", default=os.environ.get("PROXYMPM_CMD"),
                    help="command that runs proxympm (default: python -m proxympm from this repo)")
    ap.add_argument("--python-backend", action="store_true",
                    help="use the bundled asyncio backend even when nginx is installed")
    ap.add_argument("--quick", action="store_true", help="1 round, 3 s runs, 500 idle conns")
    ap.add_argument("--out", default=None, help="results directory (default: a new temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.idle = 1, 3.0, 1.0, 500
    args.duration = min(args.duration, 10.0)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s}")
    if not shutil.which("wrk"):
        log("wrk is required: apt-get install wrk (Debian/Ubuntu) or build github.com/wg/wrk")
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.idle + 1024, 65536))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    wanted = [t for t in args.targets.split(",") if t]
    targets = []
    for t in make_targets(args):
        if t.name not in wanted and not (args.variants and t.name.startswith("proxympm-")):
            continue
        if t.available:
            log(f"skipping {t.name}: {t.available}")
            continue
        targets.append(t)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="proxympm-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    bwork = root / "backend"
    bwork.mkdir(exist_ok=True)
    os.chmod(bwork, 0o755)
    bport = free_port()
    if "tls" in args.scenarios:
        made = make_cert(root)
        if made is None:
            log("no openssl CLI: skipping the tls scenario")
            args.scenarios.remove("tls")
        else:
            global TLS_ON
            TLS_ON = TLS(0, *made)
    if shutil.which("nginx") and not args.python_backend:
        args.backend_kind = "nginx (return 200 / sendfile)"
        bargv = backend_nginx(bwork, bport, args.workers)
    else:
        args.backend_kind = ("bundled asyncio backend (slow: numbers are NOT comparable "
                             "to nginx-backed runs)")
        bargv = backend_python(bwork, bport)
    for p in bwork.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    log(f"results and logs under {root}")
    backend = Server("backend", bargv, bport, bwork)
    results: list[dict] = []
    try:
        check_target(bport, [s for s in args.scenarios if s != "tls"])
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[: rnd % len(targets)]
            log(f"round {rnd + 1}/{args.rounds}")
            for t in order:
                try:
                    results.extend(run_target(t, args, root, bport, rnd))
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    log(f"  {t.name}: FAILED: {exc}")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        backend.stop()
    names = [t.name for t in targets if any(r["target"] == t.name for r in results)]
    table = report(results, names, args.scenarios, args)
    (root / "results.json").write_text(json.dumps(results, indent=1))
    (root / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
