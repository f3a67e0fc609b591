"""The one error type the HTTP layer raises: it carries the status to answer with."""

from __future__ import annotations


class HTTPError(Exception):
    """A request (or upstream response) proxympm refuses.

    ``status`` is what the client gets; ``detail`` is for the error log only and is
    never sent on the wire (it may quote attacker bytes).
    """

    __slots__ = ("status", "detail")

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ClientGone(Exception):
    """The client closed, reset, or stopped reading past the deadline."""


class ClientTimeout(ClientGone):
    """The client sent (or took) nothing before the deadline."""
