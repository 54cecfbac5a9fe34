"""docker's exit statuses for a command that cannot start, shared by the agent that finds out
(host/command_lookup.py) and the CLI that exits with them (which must not load host code)."""

from __future__ import annotations

# docker's exit statuses (docker run reference): the command cannot be invoked / is not found.
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
# runc's words before the reason; the CLI recognises a failed start by them.
PREFIX = "unable to start container process: "


def exit_status(message: str) -> int | None:
    """docker's exit status for an error that command_lookup made (seen by the CLI as the
    daemon's message), None for any other error."""
    if PREFIX + "exec: " not in message:
        return None
    if message.rstrip(".").endswith("permission denied"):
        return EXIT_NOT_EXECUTABLE
    return EXIT_NOT_FOUND
