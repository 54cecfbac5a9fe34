"""`logs --tail N`: the last N lines of a container's output, and when a follower may stop."""

from __future__ import annotations

from collections import deque

# docker's `--tail` default: every line.
ALL = "all"


class TailError(ValueError):
    """A `--tail` value that is neither a count nor `all`."""


def parse_tail(text: str) -> int | None:
    """`--tail` as a line count; None for `all` (docker also reads a negative count as all)."""
    if text == ALL:
        return None
    try:
        n = int(text)
    except ValueError:
        raise TailError(f'invalid value "{text}" for --tail: a number of lines or "all"') from None
    return None if n < 0 else n


class Tail:
    """The last `count` lines of a stream fed in pieces (a last line without its newline is
    kept as a line, as docker prints it)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._lines: deque[bytes] = deque(maxlen=count if count > 0 else 0)
        self._partial = b""

    def feed(self, data: bytes) -> None:
        if self.count <= 0:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self._lines.extend(line + b"\n" for line in lines)

    def result(self) -> bytes:
        lines = list(self._lines)
        if self._partial and self.count > 0:
            lines = [*lines, self._partial][-self.count :]
        return b"".join(lines)


def tail_lines(data: bytes, count: int | None) -> bytes:
    """The last `count` lines of `data` (all of it for None)."""
    if count is None:
        return data
    tail = Tail(count)
    tail.feed(data)
    return tail.result()
