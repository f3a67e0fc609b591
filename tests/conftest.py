"""Every fixture that starts a real server lives here, and every one cleans up by pid.

Fixtures:

- ``free_port``: the function ``free_port() -> int`` (127.0.0.1, never repeated).
- ``backend_factory(name="backend", port=0, start=True, **kw) -> Backend``; ``backend``:
  one started ``Backend`` named "backend". In-process threads, stopped at teardown.
- ``gunicorn_server(app=..., workers=2, worker_class="sync", args=()) -> Gunicorn``:
  a real gunicorn subprocess on a free port; stopped by pid at teardown.
- ``proxympm(config, *, start=True, wait_children=1, **values) -> Proxy``: writes the
  config under tmp_path and runs ``python -m proxympm -f CONF -D FOREGROUND``.
  ``config`` is httpd.conf text with ``{placeholders}`` or a dict of directive ->
  value (a list repeats the directive). Placeholders: ``{port}`` (a free port the
  proxy listens on), ``{dir}``, ``{pid_file}``, ``{error_log}``, ``{access_log}``, and
  any keyword given (e.g. ``b1=backend.port``). Other braces (``${VAR}``) are left
  alone. Missing ``Listen``/``PidFile``/``ErrorLog``/``CustomLog``/``LogLevel`` and the
  MPM sizing directives get small test defaults (``servers.DEFAULTS``).
- ``proxympm_cli(*args) -> CompletedProcess``: ``python -m proxympm ARGS`` (e.g. -t).

``PROXYMPM_CMD`` in the environment replaces ``python -m proxympm`` everywhere.
- ``certs`` (session): a trustme CA and a server cert for localhost/127.0.0.1/::1.
- ``dnsmasq(hosts=..., ttl=1, srv=(), start=True) -> Dnsmasq``: a real DNS server on a
  loopback port, authoritative for ``.test`` (tests/support/dns.py).

Processes are started in a new session, so the arbiter's pid is also the session id:
teardown SIGKILLs every live descendant and every member of that session, each
identified by pid and start time. Nothing is ever killed by name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import procs  # noqa: E402
from tests.support.backend import Backend  # noqa: E402
from tests.support.dns import Dnsmasq  # noqa: E402
from tests.support.net import free_port as _free_port  # noqa: E402
from tests.support.net import port_accepts  # noqa: E402
from tests.support.servers import (  # noqa: E402
    START_TIMEOUT,
    Certs,
    Gunicorn,
    Proxy,
    child_env,
    proxympm_command,
    render_config,
)

# Fuzzing explores new inputs on developers' machines; in CI (CI=true) it replays a
# fixed sequence, so a red CI always means a reproducible failure, never luck.
if os.environ.get("CI"):
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None)
    _hypothesis_settings.load_profile("ci")
    os.environ.setdefault("PROXYMPM_FUZZ_SEED", "20261128")

# Nothing here may go through a proxy from the environment.
for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"


@pytest.fixture
def free_port() -> Callable[[], int]:
    return _free_port


# -- backends -----------------------------------------------------------------------


@pytest.fixture
def backend_factory() -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(name: str = "backend", port: int = 0, start: bool = True, **kw: object) -> Backend:
        b = Backend(name=name, port=port, **kw)  # type: ignore[arg-type]
        started.append(b)
        return b.start() if start else b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def backend(backend_factory: Callable[..., Backend]) -> Backend:
    return backend_factory("backend")


# -- gunicorn -----------------------------------------------------------------------


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    servers: list[Gunicorn] = []

    def start(
        app: str = "tests.support.wsgi_app:app",
        workers: int = 2,
        worker_class: str = "sync",
        args: tuple[str, ...] = (),
    ) -> Gunicorn:
        port = _free_port()
        log_path = tmp_path / f"gunicorn-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", worker_class,
                 "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT), "--graceful-timeout", "5",
                 *args, app],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=ROOT, env=child_env(), start_new_session=True,
            )
        st = procs.stat(proc.pid)
        server = Gunicorn(proc, port, log_path, st.starttime if st else None)
        servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_accepts(port) and len(server.workers()) >= workers):
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {proc.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready in {START_TIMEOUT}s:\n{server.log()}")
            time.sleep(0.05)
        return server

    yield start
    for server in servers:
        server.stop()


# -- proxympm -----------------------------------------------------------------------


@pytest.fixture
def proxympm(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def make(
        config: str | dict[str, object],
        *,
        start: bool = True,
        wait_children: int = 1,
        port: int | None = None,
        **values: object,
    ) -> Proxy:
        # A port picked free may be taken (by an outgoing connection's ephemeral port)
        # before proxympm binds it: then the same config starts again on another one.
        for attempt in range(3):
            proxy = _prepare(config, port or _free_port(), values)
            if not start:
                return proxy
            try:
                return proxy.start(wait_children)
            except AssertionError:
                if port is not None or attempt == 2 or "could not bind" not in proxy.stderr():
                    raise
                proxy.kill()
        raise AssertionError("unreachable")

    def _prepare(config: str | dict[str, object], port: int, values: dict[str, object]) -> Proxy:
        pdir = tmp_path / f"proxympm{len(started)}"
        pdir.mkdir()
        proxy = Proxy(
            dir=pdir,
            conf_path=pdir / "proxympm.conf",
            port=port,
            pid_file=pdir / "proxympm.pid",
            error_log_path=pdir / "error_log",
            access_log_path=pdir / "access_log",
        )
        all_values = {
            "port": port,
            "dir": pdir,
            "pid_file": proxy.pid_file,
            "error_log": proxy.error_log_path,
            "access_log": proxy.access_log_path,
            **values,
        }
        proxy.conf_path.write_text(render_config(config, all_values))
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.kill()


@pytest.fixture
def proxympm_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*proxympm_command(), *args],
            capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=child_env(),
            stdin=subprocess.DEVNULL, check=False,
        )

    return run


# -- TLS material -------------------------------------------------------------------


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    import trustme

    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    result = Certs(d, d / "ca.pem", d / "server.pem", d / "server-key.pem")
    ca.cert_pem.write_to_path(str(result.ca_pem))
    server.private_key_pem.write_to_path(str(result.key_pem))
    with open(result.cert_pem, "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    return result


# -- DNS ----------------------------------------------------------------------------


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Callable[..., Dnsmasq]]:
    """``dnsmasq(hosts={name: [addr...]}, ttl=1, srv=(), start=True) -> Dnsmasq``: a
    real dnsmasq on a free loopback port (see tests/support/dns.py); stopped by pid."""
    servers: list[Dnsmasq] = []

    def make(hosts: dict[str, list[str]] | None = None, ttl: int = 1,
             srv: tuple[str, ...] = (), start: bool = True) -> Dnsmasq:
        d = tmp_path / f"dns{len(servers)}"
        d.mkdir()
        server = Dnsmasq(d, _free_port())
        servers.append(server)
        server.set_hosts(hosts or {})
        return server.start(ttl=ttl, srv=srv) if start else server

    yield make
    for server in servers:
        server.stop()
