"""mpm_event's ``check_config``: clamp the process and thread numbers, with warnings.

The order and the wording follow httpd's event MPM, so that an admin sees the
same corrections httpd would make. Only AH numbers the reference confirms are
given (AH00513, AH00515).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from proxympm.config.model import ServerConfig

MAX_SERVER_LIMIT = 20000
MAX_THREAD_LIMIT = 100000  # event's; worker and prefork use 20000

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ServerConfig)}


def clamp_mpm(settings: Mapping[str, object], warnings: list[str]) -> dict[str, int]:
    """Effective MPM numbers from what the config set, appending httpd's warnings."""

    def get(field: str) -> int:
        value = settings.get(field, _DEFAULTS[field])
        assert isinstance(value, int)
        return value

    server_limit = get("server_limit")
    if server_limit > MAX_SERVER_LIMIT:
        warnings.append(
            f"WARNING: ServerLimit of {server_limit} exceeds compile-time limit of "
            f"{MAX_SERVER_LIMIT} servers, decreasing to {MAX_SERVER_LIMIT}."
        )
        server_limit = MAX_SERVER_LIMIT
    elif server_limit < 1:
        warnings.append(f"WARNING: ServerLimit of {server_limit} not allowed, increasing to 1.")
        server_limit = 1

    thread_limit = get("thread_limit")
    if thread_limit > MAX_THREAD_LIMIT:
        warnings.append(
            f"WARNING: ThreadLimit of {thread_limit} exceeds compile-time limit of "
            f"{MAX_THREAD_LIMIT} threads, decreasing to {MAX_THREAD_LIMIT}."
        )
        thread_limit = MAX_THREAD_LIMIT
    elif thread_limit < 1:
        warnings.append(f"WARNING: ThreadLimit of {thread_limit} not allowed, increasing to 1.")
        thread_limit = 1

    threads = get("threads_per_child")
    if threads > thread_limit:
        warnings.append(
            f"WARNING: ThreadsPerChild of {threads} exceeds ThreadLimit of {thread_limit} "
            f"threads, decreasing to {thread_limit}. To increase, please see the "
            "ThreadLimit directive."
        )
        threads = thread_limit
    elif threads < 1:
        warnings.append(f"WARNING: ThreadsPerChild of {threads} not allowed, increasing to 1.")
        threads = 1

    workers = get("max_request_workers")
    if workers < threads:
        warnings.append(
            f"WARNING: MaxRequestWorkers of {workers} is less than ThreadsPerChild of "
            f"{threads}, increasing to {threads}. MaxRequestWorkers must be at least as "
            "large as the number of threads in a single server."
        )
        workers = threads
    processes = workers // threads
    if workers % threads:
        rounded = processes * threads
        warnings.append(
            f"AH00513: WARNING: MaxRequestWorkers of {workers} is not an integer multiple of "
            f"ThreadsPerChild of {threads}, decreasing to nearest multiple {rounded}, for a "
            f"maximum of {processes} servers."
        )
        workers = rounded
    if processes > server_limit:
        capped = server_limit * threads
        warnings.append(
            f"AH00515: WARNING: MaxRequestWorkers of {workers} would require {processes} "
            f"servers and would exceed ServerLimit of {server_limit}, decreasing to {capped}. "
            "To increase, please see the ServerLimit directive."
        )
        workers, processes = capped, server_limit

    start = get("start_servers")
    if start < 1:
        warnings.append(f"WARNING: StartServers of {start} not allowed, increasing to 1.")
        start = 1
    elif start > processes:
        warnings.append(
            f"WARNING: StartServers of {start} exceeds the {processes} servers "
            f"MaxRequestWorkers allows, decreasing to {processes}."
        )
        start = processes

    min_spare = get("min_spare_threads")
    if min_spare < 1:
        warnings.append(
            f"WARNING: MinSpareThreads of {min_spare} not allowed, increasing to 1 to avoid "
            "almost certain server failure. Please read the documentation."
        )
        min_spare = 1
    max_spare = get("max_spare_threads")
    if max_spare < min_spare + threads:
        warnings.append(
            f"WARNING: MaxSpareThreads of {max_spare} is less than MinSpareThreads + "
            f"ThreadsPerChild ({min_spare} + {threads}), increasing to {min_spare + threads}."
        )
        max_spare = min_spare + threads

    return {
        "server_limit": server_limit,
        "thread_limit": thread_limit,
        "threads_per_child": threads,
        "max_request_workers": workers,
        "start_servers": start,
        "min_spare_threads": min_spare,
        "max_spare_threads": max_spare,
    }
