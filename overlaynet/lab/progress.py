"""`lab up`'s progress: on a terminal one line redrawn per step (a bar of hosts done), elsewhere
(a pipe, a log, the demo's transcript) one plain line per host as before."""

from __future__ import annotations

import sys
from typing import TextIO

#: Wide enough to see 250 hosts move, narrow enough for an 80-column terminal with the counts.
BAR_WIDTH = 40


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#####-----]`: `done` of `total` as a bar of `width` characters."""
    filled = width if total <= 0 else min(width, done * width // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class Progress:
    def __init__(self, enabled: bool, out: TextIO | None = None) -> None:
        self.enabled = enabled
        self.out = out if out is not None else sys.stdout
        self.tty = self.out.isatty()

    def step(self, what: str, done: int, total: int, line: str | None = None) -> None:
        """`done` of `total` hosts have reached `what`; `line` is the per-host line printed
        when not on a terminal (nothing when None)."""
        if not self.enabled:
            return
        if self.tty:
            end = "\n" if done >= total else ""
            self.out.write(f"\r{bar(done, total)} {done}/{total} {what}{end}")
        elif line is not None:
            self.out.write(line + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.out.write(text + "\n")
            self.out.flush()
