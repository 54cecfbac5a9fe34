"""Errors an agent returns to a client: each one a line that says what is wrong and what to do.

`ErrorKind` is the one list of error kinds that travel on the wire (the agent's API and the
managers' tcp/2377 protocol both send them); each kind has one exception class here.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"


class ApiError(Exception):
    """A request the agent refused; `kind` travels over the API so the CLI can pick its exit."""

    kind: ErrorKind = ErrorKind.INVALID


class InvalidArgument(ApiError):
    kind = ErrorKind.INVALID


class NotFound(ApiError):
    kind = ErrorKind.NOT_FOUND


class Conflict(ApiError):
    kind = ErrorKind.CONFLICT


class Forbidden(ApiError):
    """Not allowed from here (a worker asking for what only managers do)."""

    kind = ErrorKind.FORBIDDEN


class Unavailable(ApiError):
    """The request is fine but cannot be served now (a kernel call failed, a peer is down)."""

    kind = ErrorKind.UNAVAILABLE


KINDS: dict[str, type[ApiError]] = {
    cls.kind: cls for cls in (InvalidArgument, NotFound, Conflict, Forbidden, Unavailable)
}
assert set(KINDS) == set(ErrorKind), "every error kind has its exception class"


def error_for(kind: str, message: str) -> ApiError:
    """The exception for a kind received from a peer (an unknown kind reads as invalid)."""
    return KINDS.get(kind, InvalidArgument)(message)
