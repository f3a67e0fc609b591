"""What a directive declaration is: where it may stand, its words, its docs.

The table of declarations itself is ``proxympm.config.directives``; converters
live in ``converters`` and the functions that put values into scopes in ``stores``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxympm.config.converters import Invocation
from proxympm.config.errors import DirectiveError
from proxympm.config.scope import Context, Scope

Converter = Callable[[Invocation], Any]
Store = Callable[[Scope, Invocation, Any], "Scope | None"]  # a section returns its scope

SERVER = Context.SERVER
VHOST = Context.SERVER | Context.VIRTUALHOST
ANYWHERE = Context.SERVER | Context.VIRTUALHOST | Context.LOCATION | Context.PROXY


@dataclass(frozen=True, slots=True)
class Arity:
    """How many words a directive takes, and httpd's complaint when it is wrong."""

    minimum: int
    maximum: int | None
    complaint: str
    flag: bool = False


TAKE1 = Arity(1, 1, "takes one argument")
TAKE2 = Arity(2, 2, "takes two arguments")
TAKE12 = Arity(1, 2, "takes 1-2 arguments")
TAKE23 = Arity(2, 3, "takes two or three arguments")
ITERATE = Arity(1, None, "requires at least one argument")
FLAG = Arity(1, 1, "must be On or Off", flag=True)
RAW = Arity(0, None, "")  # the converter checks the words itself


@dataclass(frozen=True, slots=True)
class Declaration:
    """One directive: name, contexts, arity, converter, store, default and docs."""

    name: str  # canonical spelling; a section's name without the angle brackets
    contexts: Context
    arity: Arity
    convert: Converter
    store: Store
    syntax: str
    default: str | None  # config text that, written out, changes nothing
    doc: str
    compat: str = ""  # how it differs from httpd, if at all
    usage: str = ""  # httpd's one-line help, appended to arity complaints
    aliases: tuple[str, ...] = ()  # deprecated httpd names, accepted with a warning
    section: bool = False
    read_time: bool = False  # carried out by the reader, never seen by the loader
    module: str = "core"

    @property
    def display_name(self) -> str:
        return f"<{self.name}>" if self.section else self.name


def check_arity(declaration: Declaration, args: tuple[str, ...], name: str | None = None) -> None:
    """Refuse a wrong number of words with httpd's ``invoke_cmd`` wording."""
    arity = declaration.arity
    name = name or declaration.display_name
    if arity.flag:
        if len(args) != 1 or args[0].lower() not in ("on", "off"):
            raise DirectiveError(f"{name} must be On or Off")
        return
    count = len(args)
    if (
        count < arity.minimum
        or (arity.maximum is not None and count > arity.maximum)
        or "" in args[: arity.minimum]
    ):
        if declaration.section and (not args or args[0] == ""):
            raise DirectiveError(f"{name} directive requires additional arguments")
        usage = f", {declaration.usage}" if declaration.usage else ""
        raise DirectiveError(f"{name} {arity.complaint}{usage}")
