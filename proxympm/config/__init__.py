"""proxympm's configuration: a subset of Apache httpd.conf, loaded once, then immutable.

``load_config`` reads a file (and what it includes) into a ``ServerConfig``;
``describe`` writes one out for ``proxympm -S``; ``ConfigError`` carries httpd's
wording with file and line. Every directive is declared once in ``directives``.
"""

from proxympm.config.describe import describe
from proxympm.config.errors import ConfigError
from proxympm.config.loader import load_config
from proxympm.config.model import (
    COMBINED_LOG_FORMAT,
    COMMON_LOG_FORMAT,
    CustomLog,
    HostConfig,
    Listen,
    ProxyRoute,
    ReverseRule,
    ServerConfig,
    TLSSettings,
    VirtualHost,
    WorkerParams,
)

__all__ = [
    "COMBINED_LOG_FORMAT",
    "COMMON_LOG_FORMAT",
    "ConfigError",
    "CustomLog",
    "HostConfig",
    "Listen",
    "ProxyRoute",
    "ReverseRule",
    "ServerConfig",
    "TLSSettings",
    "VirtualHost",
    "WorkerParams",
    "describe",
    "load_config",
]
