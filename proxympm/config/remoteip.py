"""mod_remoteip's directives: the header to believe and whom to believe it from.

``RemoteIPTrustedProxy``/``RemoteIPInternalProxy`` take addresses and networks
(``10.0.0.0/8``, ``10.0.0.0/255.0.0.0``, ``2001:db8::/32``, a bare address);
the ``...List`` forms read them from a file, one or more per line, ``#``
comments allowed. Host names are refused: proxympm resolves nothing while loading.
"""

from __future__ import annotations

import ipaddress
import os

from proxympm.config.converters import Invocation
from proxympm.config.errors import DirectiveError
from proxympm.config.model import Network


def _network(directive: str, word: str) -> Network:
    try:
        return ipaddress.ip_network(word.strip("[]"), strict=False)
    except ValueError:
        pass
    raise DirectiveError(f"{directive}: '{word}' is not an IP address or network "
                         "(host names are not resolved by proxympm)")


def proxies(inv: Invocation) -> tuple[Network, ...]:
    return tuple(_network(inv.name, word) for word in inv.args)


def proxy_list(inv: Invocation) -> tuple[Network, ...]:
    path = os.path.join(inv.server_root, inv.args[0])
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise DirectiveError(f"{inv.name}: Could not open file {path}: {exc.strerror}") \
            from None
    found: list[Network] = []
    for number, line in enumerate(lines, 1):
        for word in line.split():
            if word.startswith("#"):
                break
            try:
                found.append(_network(inv.name, word))
            except DirectiveError as exc:
                raise DirectiveError(f"{exc.message} at line {number} of {path}") from None
    return tuple(found)


def header_name(inv: Invocation) -> str:
    word = inv.args[0]
    if not word or any(c in word for c in "\x00\r\n :"):
        raise DirectiveError(f"{inv.name}: '{word}' is not a valid header field name")
    return word
