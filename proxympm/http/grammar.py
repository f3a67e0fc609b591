"""The HTTP/1.1 grammar proxympm enforces, as byte regexes (RFC 9110 / RFC 9112).

Every check on wire data goes through these patterns: never Python's ``int()``,
``str.strip()`` or ``str.lower()``, which accept signs, underscores, non-ASCII digits
and Unicode whitespace that the RFC does not (the class of bug behind
CVE-2023-47627 and friends). httptools (llhttp in strict mode) validates the head
first; these rules cover what llhttp leaves open and what a proxy must decide
itself (framing, Host, target forms).
"""

from __future__ import annotations

import re

# RFC 9110 5.6.2: token = 1*tchar
TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN = re.compile(rb"%s+" % TCHAR)

# RFC 9112 3: request-line = method SP request-target SP HTTP-version CRLF, exactly
# one SP each; the target is visible ASCII only (no whitespace, CTL or obs-text).
REQUEST_LINE = re.compile(
    rb"(?P<line>(?P<method>%s+) (?P<target>[\x21-\x7e]+) HTTP/(?P<major>[0-9])\.(?P<minor>[0-9]))"
    rb"\r\n" % TCHAR
)

# RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
STATUS_LINE = re.compile(
    rb"HTTP/(?P<major>[0-9])\.(?P<minor>[0-9]) (?P<code>[1-9][0-9]{2})"
    rb"(?: (?P<reason>[\t\x20-\x7e\x80-\xff]*))?\r\n"
)

# RFC 9110 5.5: field-value = *field-content; no CTL but HTAB, obs-text allowed.
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
FORBIDDEN_IN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# RFC 9110 8.6: Content-Length = 1*DIGIT (we cap at 18 digits: < 2**63).
CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")


def is_content_length(value: bytes) -> bool:
    """``CONTENT_LENGTH.fullmatch(value)``, cheaper: ``bytes.isdigit`` is true only
    for 1+ ASCII digits (unlike ``str.isdigit``, no other Unicode digits)."""
    return len(value) <= 18 and value.isdigit()


# RFC 9112 7.1: chunk-size = 1*HEXDIG (capped at 16 digits), optional extensions
#   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
QUOTED_STRING = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
CHUNK_LINE = re.compile(
    rb"(?P<size>[0-9A-Fa-f]{1,16})"
    rb"(?P<ext>(?:[ \t]*;[ \t]*%s+(?:[ \t]*=[ \t]*(?:%s+|%s))?)*)"
    rb"\r\n" % (TCHAR, TCHAR, QUOTED_STRING)
)

# RFC 9110 7.2 / RFC 3986 authority for Host: reg-name / IPv4 / [IPv6] with port.
HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?"
)

# origin-form: absolute-path [ "?" query ]
ORIGIN_FORM = re.compile(rb"/[\x21-\x7e]*")
# absolute-form: scheme "://" authority path-abempty [ "?" query ]
ABSOLUTE_FORM = re.compile(
    rb"(?P<scheme>[Hh][Tt][Tt][Pp][Ss]?)://(?P<authority>[^/?#\x00-\x20]+)(?P<rest>[/?][\x21-\x7e]*)?"
)

OWS = b" \t"
BARE_LF = re.compile(rb"(?<!\r)\n")

HTTP_11 = b"1.1"
HTTP_10 = b"1.0"

