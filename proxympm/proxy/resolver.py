"""Backend name resolution with aiodns, off the request path.

A child resolves every backend host name once, before its threads start serving
(an asyncio loop in the child's main thread, then closed), and workers only read
the resulting table. IP literals never touch DNS. A name that failed to resolve
maps to no address: requests for it fail fast as a connect failure instead of
blocking a worker in getaddrinfo. (Periodic re-resolution honouring TTLs belongs
to the watchdog process; until it exists, a child keeps its answers for its
lifetime, like httpd's per-child cache.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import aiodns

Address = tuple[socket.AddressFamily, tuple]


class Resolver:
    __slots__ = ("_table", "failures")

    def __init__(self) -> None:
        self._table: dict[tuple[str, int], list[Address]] = {}
        self.failures: dict[str, str] = {}

    def addresses(self, host: str, port: int) -> list[Address]:
        found = self._table.get((host, port))
        if found is not None:
            return found
        literal = _literal(host, port)
        if literal is not None:
            self._table[(host, port)] = literal
            return literal
        return []

    def resolve_all(self, names: Iterable[tuple[str, int]], timeout: float = 5.0) -> None:
        """Resolve the given (host, port) pairs now; call before serving starts."""
        pending = [(h, p) for h, p in set(names) if _literal(h, p) is None]
        if pending:
            asyncio.run(self._resolve(pending, timeout))

    async def _resolve(self, names: list[tuple[str, int]], timeout: float) -> None:
        resolver = aiodns.DNSResolver(timeout=timeout)

        async def one(host: str, port: int) -> None:
            try:
                result = await resolver.getaddrinfo(host, port=port, type=socket.SOCK_STREAM)
            except aiodns.error.DNSError as exc:
                self.failures[host] = str(exc)
                return
            addrs: list[Address] = []
            # Prefer IPv4 first (as getaddrinfo's usual ordering for loopback names).
            for node in sorted(result.nodes, key=lambda n: n.family != socket.AF_INET):
                ip = node.addr[0].decode("ascii")
                sockaddr = (ip, port) if node.family == socket.AF_INET else (ip, port, 0, 0)
                if (node.family, sockaddr) not in addrs:
                    addrs.append((socket.AddressFamily(node.family), sockaddr))
            self._table[(host, port)] = addrs

        await asyncio.gather(*(one(h, p) for h, p in names))
        await resolver.close()


def _literal(host: str, port: int) -> list[Address] | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 4:
        return [(socket.AF_INET, (host, port))]
    return [(socket.AF_INET6, (host, port, 0, 0))]
