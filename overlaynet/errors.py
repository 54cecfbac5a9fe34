"""Errors an agent returns to a client: each one a line that says what is wrong and what to do."""

from __future__ import annotations


class ApiError(Exception):
    """A request the agent refused; `kind` travels over the API so the CLI can pick its exit."""

    kind = "invalid"


class InvalidArgument(ApiError):
    kind = "invalid"


class NotFound(ApiError):
    kind = "not_found"


class Conflict(ApiError):
    kind = "conflict"


class Forbidden(ApiError):
    """Not allowed from here (a worker asking for what only managers do)."""

    kind = "forbidden"


class Unavailable(ApiError):
    """The request is fine but cannot be served now (a kernel call failed, a peer is down)."""

    kind = "unavailable"


KINDS: dict[str, type[ApiError]] = {
    cls.kind: cls for cls in (InvalidArgument, NotFound, Conflict, Forbidden, Unavailable)
}
