"""``Header`` and ``RequestHeader`` (mod_headers): words in, a checked ``HeaderRule`` out.

httpd's syntax (``header_inout_cmd``)::

    Header [always|onsuccess] action header [value [replacement]] [early|env=[!]VAR]
    RequestHeader action header [value [replacement]] [early|env=[!]VAR]

Everything that can be checked is checked here, at load time, with the directive's
file:line: the action, the field name (a token), values and replacements (no CR, LF
or NUL: a rule can never split a message), the edit regex, the value's format
specifiers. Fields whose framing proxympm owns (Content-Length, Transfer-Encoding,
Connection and the other hop-by-hop fields) are refused: a rule on them would
contradict the framing proxympm writes itself.
"""

from __future__ import annotations

import re

from proxympm.config.converters import Invocation
from proxympm.config.errors import DirectiveError
from proxympm.config.model import HeaderRule

_ACTIONS = ("set", "append", "merge", "add", "setifempty", "unset", "edit", "edit*", "echo")
_APACHE_ONLY_ACTIONS = ("note",)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN = re.compile(r"[\x00\r\n]")
_OWNED = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
    "te", "trailer", "upgrade",
})  # fmt: skip
_FORMAT = re.compile(r"%(?:\{([^}]*)\})?(.)", re.S)


def header(inv: Invocation) -> HeaderRule:
    return _rule(inv, request=False)


def request_header(inv: Invocation) -> HeaderRule:
    return _rule(inv, request=True)


def _rule(inv: Invocation, request: bool) -> HeaderRule:
    name = inv.name
    words = list(inv.args)
    always = False
    if not request and words and words[0].lower() in ("always", "onsuccess"):
        always = words.pop(0).lower() == "always"
    if len(words) < 2:
        raise DirectiveError(f"{name} requires at least two arguments: an action and a "
                             "header name")
    action = words.pop(0).lower()
    if action in _APACHE_ONLY_ACTIONS:
        raise DirectiveError(f"{name} action '{action}' is not supported by proxympm")
    if action not in _ACTIONS:
        raise DirectiveError(f"{name} first argument must be 'add', 'set', 'setifempty', "
                             "'append', 'merge', 'unset', 'echo' or 'edit'.")  # httpd's
    if action == "echo" and request:
        raise DirectiveError("RequestHeader: 'echo' is only valid for Header")
    field = words.pop(0)
    takes = 0 if action in ("unset", "echo") else 2 if action.startswith("edit") else 1
    if len(words) < takes:
        wanted = "a regular expression and a replacement" if takes == 2 else "a value"
        raise DirectiveError(f"{name} {action} requires {wanted}")
    values, words = words[:takes], words[takes:]
    if len(words) > 1:
        raise DirectiveError(f"{name} has too many arguments")
    early, env, negate = _condition(inv, words[0] if words else None)
    for text in (field, *values):
        if _FORBIDDEN.search(text):
            raise DirectiveError(f"{name}: a CR, LF or NUL in '{text[:40]!r}' would split "
                                 "the message")
    if action == "echo":
        return HeaderRule(request, action, b"", b"", pattern=_regex(name, field),
                          always=always, early=early, env=env, env_negate=negate,
                          where=inv.where)
    if not _TOKEN.fullmatch(field):
        raise DirectiveError(f"{name}: '{field}' is not a valid header field name")
    lname = field.lower()
    if lname in _OWNED:
        raise DirectiveError(f"{name}: proxympm writes {field} itself (message framing and "
                             "hop-by-hop fields); rules on it are refused")
    raw = field.encode("latin-1")
    if action.startswith("edit"):
        if values[0].lower().startswith("expr="):
            raise DirectiveError(f"{name}: expr= values are not supported by proxympm")
        return HeaderRule(request, action, raw, raw.lower(), pattern=_regex(name, values[0]),
                          replacement=values[1].encode("latin-1"), always=always,
                          early=early, env=env, env_negate=negate, where=inv.where)
    value: tuple[bytes | tuple[str, ...], ...] = ()
    if values:
        value = _format(name, values[0])
    return HeaderRule(request, action, raw, raw.lower(), value=value, always=always,
                      early=early, env=env, env_negate=negate, where=inv.where)


def _condition(inv: Invocation, word: str | None) -> tuple[bool, str | None, bool]:
    if word is None:
        return False, None, False
    lower = word.lower()
    if lower == "early":
        if inv.location is not None:
            raise DirectiveError(f"{inv.name}: 'early' is not allowed in a <Location>")
        return True, None, False
    if lower.startswith("env="):
        var = word[4:]
        negate = var.startswith("!")
        var = var[1:] if negate else var
        if not var:
            raise DirectiveError(f"{inv.name}: env= needs a variable name")
        return False, var, negate
    if lower.startswith("expr="):
        raise DirectiveError(f"{inv.name}: expr= conditions are not supported by proxympm")
    raise DirectiveError(f"{inv.name}: unknown condition '{word}' (early, env=[!]VAR)")


def _regex(name: str, text: str) -> re.Pattern[bytes]:
    try:
        return re.compile(text.encode("latin-1"))
    except re.error as exc:
        raise DirectiveError(f"{name} regex could not be compiled: {exc}") from None


def _format(name: str, text: str) -> tuple[bytes | tuple[str, ...], ...]:
    """mod_headers' format: %% %t %D %{VAR}e; httpd's %l %i %b %{VAR}s are refused."""
    parts: list[bytes | tuple[str, ...]] = []
    pos = 0
    for m in _FORMAT.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()].encode("latin-1"))
        pos = m.end()
        arg, letter = m.group(1), m.group(2)
        if letter == "%" and arg is None:
            parts.append(b"%")
        elif letter in ("t", "D") and arg is None:
            parts.append((letter,))
        elif letter == "e" and arg:
            parts.append(("e", arg))
        else:
            raise DirectiveError(f"{name}: format specifier '{m.group(0)}' is not supported "
                                 "(%%, %t, %D and %{VAR}e are)")
    if pos < len(text):
        if "%" in text[pos:]:  # every other % was taken by the loop
            raise DirectiveError(f"{name}: a lone '%' ends the value (write %% for a %)")
        parts.append(text[pos:].encode("latin-1"))
    merged: list[bytes | tuple[str, ...]] = []
    for part in parts:  # join neighbouring literals: a constant value is one bytes
        if merged and isinstance(part, bytes) and isinstance(merged[-1], bytes):
            merged[-1] = merged[-1] + part
        else:
            merged.append(part)
    return tuple(merged)
