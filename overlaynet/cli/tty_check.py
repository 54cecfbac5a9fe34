"""docker's refusal of `-i` with `-t` when the client's own stdin is not a terminal.

`echo hi | docker exec -it c cat` answers `the input device is not a TTY` and exits 1 before it
asks the daemon anything (cli/command/streams.In.CheckTty, called by exec and by run in the
foreground): the keys of a terminal go to the command's pty as typed, and a pipe or a file is
not a terminal, so the client would echo its input back through the pty and mangle its line
ends. `-t` alone, or `-i` alone, is fine with any stdin. Sans-IO: the flags and whether stdin
is a terminal in, the message or None out.
"""

from __future__ import annotations

# docker's words (streams.In.CheckTty's eText), printed alone on stderr; the CLI exits 1.
NOT_A_TTY = "the input device is not a TTY"


def refusal(attach_stdin: bool, tty: bool, stdin_is_terminal: bool) -> str | None:
    """The error to leave with, or None when the streams fit the flags."""
    if tty and attach_stdin and not stdin_is_terminal:
        return NOT_A_TTY
    return None
