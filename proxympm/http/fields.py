"""What request and response heads share: llhttp (httptools, strict) as the
validator, the field lines split from a head it accepted, and Connection tokens.

A head that arrives whole is checked by ``validates`` (no per-field callbacks) and
split by ``split_fields``; anything else is fed with callbacks through ``feed``,
which turns llhttp's errors into the HTTPError the caller's side answers with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httptools

from proxympm.http.errors import HTTPError
from proxympm.http.grammar import OWS

Headers = list[tuple[bytes, bytes]]  # (name as received, value without OWS)

NO_TOKENS: frozenset[bytes] = frozenset()
# Connection values as most clients and servers send them, tokenized once
_COMMON_CONNECTION: dict[bytes, frozenset[bytes]] = {
    value: frozenset({value.lower()})
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")
}


class _Validator:
    """httptools protocol without callbacks: llhttp only validates the head."""

    __slots__ = ()


_VALIDATOR = _Validator()


def validates(parser_type: Any, head: bytes | bytearray) -> bool:
    """Whether llhttp (``HttpRequestParser`` or ``HttpResponseParser``) accepts the
    whole ``head``."""
    try:
        parser_type(_VALIDATOR).feed_data(head)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return False
    return True


def feed(parser: Any, data: bytes | bytearray, status: int, what: str,
         refine: Callable[[str], HTTPError | None] | None = None) -> None:
    """``parser.feed_data(data)``; a callback's HTTPError propagates as it is, any
    other refusal is ``HTTPError(status, "invalid <what>: ...")``, unless ``refine``
    makes a more precise one of llhttp's own message."""
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass  # Upgrade is decided by the proxy layer, not the parser
    except httptools.HttpParserCallbackError as exc:
        cause = exc.__context__
        if isinstance(cause, HTTPError):
            raise cause from None
        raise HTTPError(status, f"invalid {what}: {exc}") from None
    except httptools.HttpParserError as exc:
        better = refine(str(exc)) if refine is not None else None
        if better is not None:
            raise better from None
        raise HTTPError(status, f"invalid {what}: {exc}") from None


def split_fields(buf: bytearray, start: int, end: int) -> tuple[Headers, list[bytes]]:
    """The fields of ``buf[start:end]`` (field lines joined by CRLF) and their
    lowercase names, for a head llhttp (strict) accepted: every line is a token, a
    colon and the value between OWS; no CR or LF but these line ends."""
    headers: Headers = []
    lnames: list[bytes] = []
    if start < end:
        for line in bytes(buf[start:end]).split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers.append((name, value.strip(OWS)))
            lnames.append(name.lower())
    return headers, lnames


def connection_tokens(headers: Headers, lnames: list[bytes]) -> frozenset[bytes]:
    """The lowercase tokens of every Connection field (RFC 9110 7.6.1)."""
    count = lnames.count(b"connection")
    if count == 1:
        value = headers[lnames.index(b"connection")][1]
        common = _COMMON_CONNECTION.get(value)
        if common is not None:
            return common
        values = [value]
    elif count:
        values = [headers[i][1] for i, lname in enumerate(lnames) if lname == b"connection"]
    else:
        return NO_TOKENS
    tokens: set[bytes] = set()
    for value in values:
        if b"," in value:
            tokens.update(t.strip(OWS).lower() for t in value.split(b","))
        else:  # the usual single token ("keep-alive", "close")
            tokens.add(value.lower())
    tokens.discard(b"")
    return frozenset(tokens)
