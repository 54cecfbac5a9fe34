"""The one error type of the cluster plane and the vocabulary every cluster module shares.

Apart from state.py so that the state machine can import the service cores (spec, tasks,
scheduler, orchestrator), which use the same errors, roles and availabilities.
"""

from __future__ import annotations

from enum import StrEnum

# The one list of error kinds on both wires (the agent's API and tcp/2377).
from overlaynet.errors import ErrorKind as ErrorKind


class ClusterError(Exception):
    """A cluster request that was refused; `kind` travels over the wire with the message."""

    def __init__(self, kind: ErrorKind | str, message: str) -> None:
        super().__init__(message)
        try:
            self.kind = ErrorKind(kind)
        except ValueError:
            self.kind = ErrorKind.INVALID
        self.message = message

    def __repr__(self) -> str:
        return f"ClusterError({self.kind.value!r}, {self.message!r})"


class Role(StrEnum):
    WORKER = "worker"
    MANAGER = "manager"


class Availability(StrEnum):
    ACTIVE = "active"
    PAUSE = "pause"
    DRAIN = "drain"


class ManagerStatus(StrEnum):
    LEADER = "Leader"
    REACHABLE = "Reachable"
