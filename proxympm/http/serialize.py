"""Writing HTTP heads: the one place header bytes are put on the wire.

Every value proxympm makes or rewrites goes through ``check_value`` (or
``serialize_head``), which refuses CR, LF and NUL (and other CTLs), so no rewritten
Location, X-Forwarded-* value or error page can split a response or inject a header.
``join_head`` writes fields that are already known good (copied from a head llhttp
validated, or checked when they were made).
"""

from __future__ import annotations

from html import escape
from http import HTTPStatus

from proxympm.http.grammar import FORBIDDEN_IN_VALUE, TOKEN

Headers = list[tuple[bytes, bytes]]


class HeaderInjection(ValueError):
    """A header value or name that would break the message framing."""


def check_value(value: bytes) -> bytes:
    if FORBIDDEN_IN_VALUE.search(value):
        raise HeaderInjection(f"control character in header value {value[:40]!r}")
    return value


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


_STATUS_LINES: dict[int, bytes] = {}
_REASON_LINES: dict[tuple[int, bytes], bytes] = {}  # only lines that passed check_value


def status_line(status: int, reason: bytes | None = None) -> bytes:
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is None:
            line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))
        return line
    key = (status, reason)
    line = _REASON_LINES.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, check_value(reason))
        if len(_REASON_LINES) < 256:  # upstream reasons: a few distinct ones in practice
            _REASON_LINES[key] = line
    return line


def serialize_head(start_line: bytes, headers: Headers) -> bytes:
    """start_line already ends in CRLF; headers are (name, value) pairs."""
    parts = [start_line]
    for name, value in headers:
        if TOKEN.fullmatch(name) is None:
            raise HeaderInjection(f"invalid header name {name[:40]!r}")
        if FORBIDDEN_IN_VALUE.search(value):
            raise HeaderInjection(f"control character in header value {value[:40]!r}")
        parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(b"\r\n")
    return b"".join(parts)


def join_head(start_line: bytes, headers: Headers) -> bytes:
    """``serialize_head`` without the per-field checks, for fields that were already
    validated: copied from a head llhttp (strict) parsed, or passed through
    ``check_value`` by whoever made them, or constant/numeric framing fields."""
    parts = [start_line]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


_MESSAGES = {
    400: "Your browser sent a request that this server could not understand.",
    404: "The requested URL was not found on this server.",
    408: "Server timeout waiting for the HTTP request from the client.",
    413: "The requested resource does not allow request data with this request, "
    "or the amount of data provided in the request exceeds the capacity limit.",
    414: "The requested URL's length exceeds the capacity limit for this server.",
    417: "The expectation given in the Expect request-header field could not be met "
    "by this server.",
    421: "The client needs a new connection for this request as the requested host "
    "name does not match the Server Name Indication (SNI) in use for this connection.",
    431: "The request header fields are too large.",
    500: "The server encountered an internal error or misconfiguration and was unable "
    "to complete your request.",
    501: "The server does not support the method or transfer coding of this request.",
    502: "The proxy server received an invalid response from an upstream server.",
    503: "The server is temporarily unable to service your request due to maintenance "
    "downtime or capacity problems. Please try again later.",
    504: "The gateway did not receive a timely response from the upstream server "
    "or application.",
    505: "The server does not support the major version of HTTP used in the request.",
}


def error_response(status: int, close: bool, extra: Headers | None = None,
                   head_only: bool = False) -> bytes:
    """A complete small HTML error response, httpd style."""
    phrase = reason_phrase(status).decode("ascii")
    message = escape(_MESSAGES.get(status, phrase))
    body = (
        '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n'
        f"<html><head>\n<title>{status} {phrase}</title>\n</head><body>\n"
        f"<h1>{phrase}</h1>\n<p>{message}</p>\n</body></html>\n"
    ).encode("ascii")
    headers: Headers = [
        (b"Content-Type", b"text/html; charset=iso-8859-1"),
        (b"Content-Length", b"%d" % len(body)),
    ]
    if extra:
        headers.extend(extra)
    if close:
        headers.append((b"Connection", b"close"))
    head = serialize_head(status_line(status), headers)
    return head if head_only else head + body
