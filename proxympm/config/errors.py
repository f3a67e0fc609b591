"""The one exception the configuration layer raises, worded as httpd words it.

httpd reports two kinds of configuration errors differently (server/config.c):

* errors found while *reading* the files (unbalanced sections, Include, Define,
  the ``<If...>`` conditionals) come out on one line::

      Syntax error on line 12 of /etc/httpd.conf: </Location> without matching <Location> section

* errors found while *processing* a directive come out as two lines::

      AH00526: Syntax error on line 7 of /etc/httpd.conf:
      Invalid command 'Foo', perhaps misspelled or defined by a module not included in ...

``ConfigError.phase`` says which of the two forms ``str()`` gives; a third,
``"file"``, is a config file that cannot be opened at all (no line to blame).
"""

from __future__ import annotations

from typing import Literal

Phase = Literal["read", "directive", "file"]


class DirectiveError(Exception):
    """A converter's complaint about its arguments; the loader adds file:line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(Exception):
    """A configuration error at ``file``:``line`` (absolute file path, 1-based line)."""

    def __init__(self, message: str, file: str, line: int, phase: Phase = "directive") -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.phase: Phase = phase

    def __str__(self) -> str:
        if self.phase == "file":  # the main file itself could not be opened
            return self.message
        if self.phase == "read":
            return f"Syntax error on line {self.line} of {self.file}: {self.message}"
        return f"AH00526: Syntax error on line {self.line} of {self.file}:\n{self.message}"

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, int, Phase]]:
        return (ConfigError, (self.message, self.file, self.line, self.phase))
