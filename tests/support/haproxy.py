"""A real HAProxy (the machine's /usr/sbin/haproxy) for PROXY protocol tests.

``HAProxy(config_text).start()`` writes the config, runs ``haproxy -db -f CONF`` in a
new session and waits for every ``bind`` port to accept; ``stop()`` kills it by pid
(and start time), never by name. Used both as a sender of PROXY headers
(``server ... send-proxy[-v2]``) in front of proxympm and as a receiver
(``bind ... accept-proxy``) behind it.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.support import procs
from tests.support.net import port_accepts
from tests.support.servers import kill_tree

HAPROXY = "/usr/sbin/haproxy"


class HAProxy:
    def __init__(self, directory: Path, config: str) -> None:
        self.dir = directory
        self.conf = directory / "haproxy.cfg"
        self.log = directory / "haproxy.out"
        self.conf.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starttime: int | None = None

    def start(self, timeout: float = 10.0) -> HAProxy:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.conf)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        st = procs.stat(self.proc.pid)
        self.starttime = st.starttime if st else None
        binds = [(h or "127.0.0.1", int(p)) for h, p in
                 re.findall(r"^\s*bind\s+(\S*):(\d+)", self.conf.read_text(), re.M)]
        deadline = time.monotonic() + timeout
        while not all(port_accepts(p, h) for h, p in binds):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc.pid, self.starttime)
            self.proc.wait(5)
