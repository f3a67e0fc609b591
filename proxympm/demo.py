"""The demo: two small bundled backends and proxympm in front of them.

    python -m proxympm.demo            # from a checkout, after `pip install -e ".[demo]"`

It makes development certificates (certs/make_dev_certs.py, trustme) if they are
missing, starts backend "A" on 127.0.0.1:9001 and backend "B" on 127.0.0.1:9002,
then runs ``proxympm -f conf/proxympm.conf -D FOREGROUND`` with the checkout as
ServerRoot: plain HTTP on 8080 and HTTPS on 8443. Ctrl-C stops everything.
The backends answer with their own name, so each response shows who served it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"A": 9001, "B": 9002}


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the proxy can pool connections
        server_version = f"demo-backend-{name}"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer()

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(self.rfile.read(length))

        do_HEAD = do_GET  # noqa: N815

        def _answer(self, body: bytes = b"") -> None:
            text = (f"hello from backend {name} (port {self.server.server_address[1]}): "
                    f"{self.command} {self.path}\n")
            if self.path.startswith("/json"):
                text = json.dumps({
                    "backend": name, "path": self.path,
                    "headers": dict(self.headers.items()), "body_bytes": len(body),
                }, indent=2) + "\n"
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Backend", name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            pass  # the proxy's access log is the one to read

    return Handler


def serve_backend(name: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(name))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"backend-{name}", daemon=True).start()
    return server


def ensure_certs() -> None:
    if (ROOT / "certs" / "dev" / "server.pem").exists():
        return
    subprocess.run([sys.executable, str(ROOT / "certs" / "make_dev_certs.py")], check=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    ensure_certs()
    servers = [serve_backend(name, port) for name, port in BACKENDS.items()]
    print("demo backends: " + ", ".join(f"{n} on 127.0.0.1:{p}" for n, p in BACKENDS.items()))
    print("proxy: http://127.0.0.1:8080/  and  https://localhost:8443/ "
          "(curl --cacert certs/dev/ca.pem https://localhost:8443/)")
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxympm", "-d", str(ROOT), "-f", "conf/proxympm.conf",
         "-D", "FOREGROUND"],
        cwd=ROOT,
    )
    try:
        return proxy.wait()
    except KeyboardInterrupt:
        proxy.send_signal(signal.SIGTERM)
        return proxy.wait()
    finally:
        for server in servers:
            server.shutdown()
        if proxy.poll() is None:
            os.kill(proxy.pid, signal.SIGTERM)


if __name__ == "__main__":
    raise SystemExit(main())
