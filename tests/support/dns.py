"""A real DNS server for tests: dnsmasq on a loopback port, started by pid.

``Dnsmasq(directory, port)`` serves the names written with ``set_hosts`` (an
addn-hosts file; ``set_hosts`` rewrites it and SIGHUPs dnsmasq, which re-reads it)
and the SRV records given to ``start`` (changing those needs a restart). It is
authoritative for ``.test`` (``--local=/test/``): an unknown name there is NXDOMAIN,
never forwarded. ``ttl`` is the TTL of every answer (``--local-ttl``).

``wait_for_answer`` asks it through pycares, so a test knows the server answers
before the proxy does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiodns

DNSMASQ = "/usr/sbin/dnsmasq"


class Dnsmasq:
    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        self.hosts_path = directory / "dns-hosts"
        self.log_path = directory / "dnsmasq.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.hosts_path.write_text("")

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_hosts(self, records: dict[str, list[str]]) -> None:
        """Replace the A/AAAA records: name -> addresses; re-read at once if running."""
        lines = [f"{addr} {name}" for name, addrs in records.items() for addr in addrs]
        tmp = self.hosts_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.hosts_path)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def start(self, ttl: int = 1, srv: tuple[str, ...] = ()) -> Dnsmasq:
        """``srv``: dnsmasq ``--srv-host`` values, ``name,target,port,priority,weight``."""
        args = [
            DNSMASQ, f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", "--no-daemon", "--conf-file=/dev/null",
            "--local=/test/", f"--addn-hosts={self.hosts_path}", f"--local-ttl={ttl}",
            "--log-queries", f"--log-facility={self.log_path}", "--pid-file=",
            *(f"--srv-host={s}" for s in srv),
        ]
        if os.geteuid() == 0:
            args.append("--user=root")  # else it drops to nobody, who cannot read tmp_path
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"dnsmasq exited {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError("dnsmasq did not answer within 10 s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()

    def answers(self) -> bool:
        """Does it answer a query (NXDOMAIN counts) right now?"""

        async def ask() -> bool:
            dns = aiodns.DNSResolver(nameservers=[self.server], timeout=0.5, tries=1)
            try:
                await dns.query_dns("probe.test", "A")
            except aiodns.error.DNSError as exc:
                return exc.args[0] == 4  # NXDOMAIN: it is up and authoritative
            finally:
                await dns.close()
            return True

        return asyncio.run(ask())

    def queries(self, name: str) -> int:
        """How many queries for ``name`` it has logged so far."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines()
                   if "query[" in line and f" {name} from" in line)
