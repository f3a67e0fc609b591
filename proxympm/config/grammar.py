"""Reading httpd.conf text into a tree of directives and sections (no semantics).

This is the part of httpd's ``server/config.c`` and ``server/util.c`` that turns
files into ``ap_directive_t`` nodes, redone in Python:

1. Physical lines become logical lines: a line ending in ``\\`` is joined with the
   next one (its leading whitespace kept) *before* comments are looked for, so a
   ``#`` comment ending in ``\\`` swallows the next line, as in httpd.
2. Each logical line is trimmed; blank lines and ``#`` lines are dropped.
3. ``${NAME}`` is replaced from ``Define`` variables, then the environment, before
   the line is split into words; an unknown name stays literal (warning AH00111).
4. Words are split as ``ap_getword_conf`` does (quotes, ``\\"`` and ``\\\\``).
5. ``<Name args>`` ... ``</Name>`` nest; names match case-insensitively and every
   file must close what it opens (httpd reads each file with a fresh stack).

The read-time directives are carried out here, in file order, exactly where httpd
runs them (``EXEC_ON_READ``): ``Define``/``UnDefine``, ``Include``/
``IncludeOptional``, ``ServerRoot`` (it moves later relative Includes), and the
conditional sections ``<IfDefine>``, ``<IfModule>`` and ``<IfFile>``. A true
conditional leaves its children in place of itself; a false one is skipped
without expanding variables, still matching nested sections.

Files are decoded as UTF-8 with ``surrogateescape``: config text is UTF-8 in
practice, and any other byte survives into file names and back to the OS intact.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from proxympm.config.directives import check_arity, lookup
from proxympm.config.errors import ConfigError, DirectiveError
from proxympm.config.modules import LOADED_MODULES

MAX_INCLUDE_DEPTH = 128  # httpd's AP_MAX_INCLUDE_DEPTH and AP_MAX_INCLUDE_DIR_DEPTH

_SPACE = " \t\n\r\f\v"  # apr_isspace
_WILDCARD = re.compile(r"[*?\[]")  # apr_fnmatch_test
_CONDITIONALS = ("ifdefine", "ifmodule", "iffile")


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive line: ``name`` as written, its words, and where it is."""

    name: str
    args: tuple[str, ...]
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class Section:
    """``<name args>`` ... ``</name>``; ``name`` as written, without the brackets."""

    name: str
    args: tuple[str, ...]
    children: tuple[Node, ...]
    file: str
    line: int


Node = Directive | Section


# ---------------------------------------------------------------------------
# Lexical layer: lines, variables, words


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (line number of the first physical line, trimmed logical line).

    Blank lines and comment lines are left out. Continuations are joined first,
    so a comment that ends in a backslash also comments out the next line.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()
    i = 0
    while i < len(physical):
        first = i + 1
        line = physical[i].removesuffix("\r")
        i += 1
        while line.endswith("\\") and i < len(physical):
            line = line[:-1] + physical[i].removesuffix("\r")
            i += 1
        line = line.removesuffix("\\").strip(_SPACE)
        if line and not line.startswith("#"):
            yield first, line


def expand_variables(
    line: str, variables: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[str, list[str]]:
    """Replace ``${NAME}`` (``ap_resolve_env``); return the line and unknown names.

    Names containing ``:`` are never looked up and never warned about (other
    modules use ``${map:key}`` syntax).
    """
    out: list[str] = []
    unknown: list[str] = []
    pos = 0
    while (start := line.find("${", pos)) >= 0:
        end = line.find("}", start + 2)
        if end < 0:
            break
        name = line[start + 2 : end]
        out.append(line[pos:start])
        value = None if ":" in name else variables.get(name, environ.get(name))
        if value is None:
            if ":" not in name:
                unknown.append(name)
            out.append(line[start : end + 1])
        else:
            out.append(value)
        pos = end + 1
    out.append(line[pos:])
    return "".join(out), unknown


def _unescape(raw: str, quote: str | None) -> str:
    # substring_conf: "\\" -> "\", and inside quotes "\<quote>" -> "<quote>".
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw) and (raw[i + 1] == "\\" or raw[i + 1] == quote):
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def next_word(text: str, pos: int = 0) -> tuple[str, int]:
    """``ap_getword_conf``: the word starting at ``pos`` and where the next begins."""
    n = len(text)
    while pos < n and text[pos] in _SPACE:
        pos += 1
    if pos >= n:
        return "", n
    quote = text[pos]
    if quote in "\"'":
        end = pos + 1
        while end < n and text[end] != quote:
            if text[end] == "\\" and end + 1 < n and text[end + 1] in (quote, "\\"):
                end += 2
            else:
                end += 1
        word = _unescape(text[pos + 1 : end], quote)
        if end < n:  # skip the closing quote; the word ends here even without a space
            end += 1
    else:
        end = pos
        while end < n and text[end] not in _SPACE:
            end += 1
        word = _unescape(text[pos:end], None)
    while end < n and text[end] in _SPACE:
        end += 1
    return word, end


def split_words(text: str) -> list[str]:
    """All words of ``text``; an empty quoted word ``""`` is kept as ``''``."""
    words: list[str] = []
    pos = 0
    while pos < len(text):
        word, pos = next_word(text, pos)
        words.append(word)
    return words


# ---------------------------------------------------------------------------
# Structural layer: sections, conditionals, Include, Define


@dataclass(slots=True)
class _OpenSection:
    name: str
    args: tuple[str, ...]
    file: str
    line: int
    transparent: bool  # a true <If...>: its children replace it
    children: list[Node] = field(default_factory=list)


def _has_wildcard(path: str) -> bool:
    return _WILDCARD.search(path) is not None


class Reader:
    """Reads one configuration (a file and everything it includes) into nodes.

    After ``read``: ``server_root`` is the final ServerRoot, ``define_names`` and
    ``variables`` what Define/UnDefine left, ``warnings`` the AH00111 notices and
    ``line_counts`` the physical length of every file read.
    """

    def __init__(
        self,
        server_root: str,
        defines: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.server_root = server_root
        self.define_names: list[str] = list(dict.fromkeys(defines))
        self.variables: dict[str, str] = {}
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.warnings: list[str] = []
        self.line_counts: dict[str, int] = {}

    def read(self, path: str) -> tuple[Node, ...]:
        return tuple(self._read_file(path, depth=0, nested=False))

    # -- one file ----------------------------------------------------------

    def _read_file(self, path: str, depth: int, nested: bool) -> list[Node]:
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "surrogateescape")
        except OSError as e:
            raise ConfigError(
                f"Could not open configuration file {path}: {e.strerror}", path, 0, "file"
            ) from None
        self.line_counts[path] = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        top: list[Node] = []
        stack: list[_OpenSection] = []
        lines = logical_lines(text)
        for lineno, raw in lines:
            line = self._expand(raw, path, lineno)
            name, pos = next_word(line)
            rest = line[pos:]
            here = stack[-1].children if stack else top
            if name.startswith("</"):
                self._close(name, stack, top, path, lineno)
            elif name.startswith("<"):
                opened = self._open(name, rest, path, lineno)
                if opened is None:
                    self._soak(lines, name[1:].removesuffix(">"), path, lineno)
                else:
                    stack.append(opened)
            else:
                inside = nested or any(not s.transparent for s in stack)
                here.extend(self._directive(name, rest, path, lineno, depth, inside))
        if stack:
            notes = [f"{s.file}:{s.line}: <{s.name}> was not closed." for s in reversed(stack)]
            raise ConfigError("\n".join(notes), path, stack[0].line, "read")
        return top

    def _expand(self, raw: str, path: str, lineno: int) -> str:
        line, unknown = expand_variables(raw, self.variables, self.environ)
        for name in unknown:
            self.warnings.append(
                f"AH00111: Config variable ${{{name}}} is not defined ({path}:{lineno})"
            )
        return line

    def _open(self, word: str, rest: str, path: str, lineno: int) -> _OpenSection | None:
        """Open ``<Name ...``; None means a false conditional to skip."""
        name = word[1:].removesuffix(">")
        raw_args = rest or ">"
        gt = raw_args.rfind(">")
        if gt < 0:
            raise ConfigError(f"<{name}> directive missing closing '>'", path, lineno, "read")
        args = tuple(split_words(raw_args[:gt]))
        if name.lower() not in _CONDITIONALS:
            return _OpenSection(name, args, path, lineno, transparent=False)
        if not args or args[0] in ("", "!"):
            raise ConfigError(
                f"<{name}> directive requires additional arguments", path, lineno, "read"
            )
        if len(args) > 1:
            raise ConfigError(f"<{name}> takes one argument", path, lineno, "read")
        if self._condition(name.lower(), args[0]):
            return _OpenSection(name, args, path, lineno, transparent=True)
        return None

    def _condition(self, kind: str, arg: str) -> bool:
        negate = arg.startswith("!")
        subject = arg[1:] if negate else arg
        if kind == "ifdefine":
            holds = subject in self.define_names
        elif kind == "ifmodule":
            holds = subject in LOADED_MODULES
        else:  # iffile
            holds = os.path.exists(os.path.join(self.server_root, subject))
        return holds != negate

    def _close(
        self, word: str, stack: list[_OpenSection], top: list[Node], path: str, lineno: int
    ) -> None:
        name = word[2:].removesuffix(">")
        if not stack:
            raise ConfigError(f"</{name}> without matching <{name}> section", path, lineno, "read")
        if not word.endswith(">"):
            raise ConfigError(f"</{name}> directive missing closing '>'", path, lineno, "read")
        opened = stack[-1]
        if opened.name.lower() != name.lower():
            raise ConfigError(f"Expected </{opened.name}> but saw </{name}>", path, lineno, "read")
        stack.pop()
        parent = stack[-1].children if stack else top
        if opened.transparent:
            parent.extend(opened.children)
        else:
            parent.append(
                Section(opened.name, opened.args, tuple(opened.children), opened.file, opened.line)
            )

    def _soak(self, lines: Iterator[tuple[int, str]], opener: str, path: str, lineno: int) -> None:
        """Skip a false conditional (``ap_soak_end_container``), nesting included."""
        open_names = [opener]
        for at, raw in lines:
            word, pos = next_word(raw)
            if word.startswith("</"):
                name = word[2:].removesuffix(">")
                if name.lower() != open_names[-1].lower():
                    raise ConfigError(
                        f"Expected </{open_names[-1]}> but saw </{name}>", path, at, "read"
                    )
                open_names.pop()
                if not open_names:
                    return
            elif word.startswith("<"):
                name = word[1:]
                if pos >= len(raw):
                    name = name.removesuffix(">")
                open_names.append(name)
        raise ConfigError(f"Expected </{opener}> before end of configuration", path, lineno, "read")

    # -- read-time directives ---------------------------------------------

    def _directive(
        self, name: str, rest: str, path: str, lineno: int, depth: int, inside: bool
    ) -> list[Node]:
        args = tuple(split_words(rest))
        lname = name.lower()
        if lname not in ("define", "undefine", "include", "includeoptional", "serverroot"):
            return [Directive(name, args, path, lineno)]
        if lname == "serverroot" and inside:
            # Not at top level: the loader reports it as misplaced.
            return [Directive(name, args, path, lineno)]
        declaration = lookup(name)
        assert declaration is not None
        try:
            check_arity(declaration, args)
            if lname == "define":
                self._define(args)
            elif lname == "undefine":
                self._undefine(args[0])
            elif lname == "serverroot":
                self._set_server_root(args[0])
                return [Directive(name, args, path, lineno)]
            else:
                return self._include(args[0], lname == "includeoptional", depth, inside)
        except DirectiveError as e:
            raise ConfigError(e.message, path, lineno, "read") from None
        except ConfigError as e:
            if e.phase != "file":
                raise
            # An included file that cannot be opened: blame the Include line.
            raise ConfigError(e.message, path, lineno, "read") from None
        return []

    def _define(self, args: tuple[str, ...]) -> None:
        name = args[0]
        if ":" in name:
            raise DirectiveError("Variable name must not contain ':'")
        if name not in self.define_names:
            self.define_names.append(name)
        if len(args) > 1:
            self.variables[name] = args[1]

    def _undefine(self, name: str) -> None:
        if ":" in name:
            raise DirectiveError("Variable name must not contain ':'")
        if name in self.define_names:
            self.define_names.remove(name)
        self.variables.pop(name, None)

    def _set_server_root(self, arg: str) -> None:
        root = os.path.normpath(os.path.join(self.server_root, arg))
        if not os.path.isdir(root):
            raise DirectiveError("ServerRoot must be a valid directory")
        self.server_root = root

    def _include(self, arg: str, optional: bool, depth: int, inside: bool) -> list[Node]:
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise DirectiveError(
                f"Exceeded maximum include depth of {MAX_INCLUDE_DEPTH}, "
                "There appears to be a recursion."
            )
        if "\0" in arg:  # no file has such a name; os.listdir would raise ValueError
            raise DirectiveError(f"Could not open configuration file {arg!r}: a path cannot "
                                 "contain a NUL byte")
        pattern = os.path.normpath(os.path.join(self.server_root, arg))
        nodes: list[Node] = []
        for file in self._include_files(pattern, optional):
            nodes.extend(self._read_file(file, depth + 1, inside))
        return nodes

    def _include_files(self, pattern: str, optional: bool) -> list[str]:
        """Files an Include names, in httpd's order (alphabetical, per directory)."""
        if not _has_wildcard(pattern):
            if os.path.isdir(pattern):
                return self._directory_files(pattern, 1)
            if optional and not os.path.exists(pattern):
                return []
            return [pattern]  # a missing file fails at open, with httpd's message
        parts = [p for p in pattern.split("/") if p]
        candidates = ["/"]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if not _has_wildcard(part):
                candidates = [os.path.join(c, part) for c in candidates]
                continue
            matched: list[str] = []
            for directory in candidates:
                try:
                    names = sorted(os.listdir(directory))
                except OSError as e:
                    if optional:
                        continue
                    raise DirectiveError(
                        f"Could not open config directory {directory}: {e.strerror}"
                    ) from None
                found = [
                    os.path.join(directory, n)
                    for n in names
                    if fnmatch.fnmatchcase(n, part) and (part.startswith(".") or n[0] != ".")
                ]
                if not last:
                    found = [f for f in found if os.path.isdir(f)]
                if not found and not optional:
                    raise DirectiveError(f"No matches for the wildcard '{part}' in {directory}")
                matched.extend(found)
            candidates = matched
        files: list[str] = []
        for candidate in candidates:
            if os.path.isdir(candidate):
                files.extend(self._directory_files(candidate, 1))
            elif os.path.exists(candidate) or not optional:
                files.append(candidate)
        return files

    def _directory_files(self, directory: str, level: int) -> list[str]:
        if level > MAX_INCLUDE_DEPTH:
            raise DirectiveError(
                f"Directory {directory} exceeds the maximum include directory nesting "
                f"level of {MAX_INCLUDE_DEPTH}. You have probably a recursion somewhere."
            )
        try:
            names = sorted(os.listdir(directory))
        except OSError as e:
            raise DirectiveError(
                f"Could not open config directory {directory}: {e.strerror}"
            ) from None
        files: list[str] = []
        for name in names:
            full = os.path.join(directory, name)
            if os.path.isdir(full):
                files.extend(self._directory_files(full, level + 1))
            else:
                files.append(full)
        return files
