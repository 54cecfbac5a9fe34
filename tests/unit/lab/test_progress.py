"""`lab up`'s progress: a redrawn bar on a terminal, the old per-host lines elsewhere."""

from __future__ import annotations

import io

from overlaynet.lab.progress import Progress, bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_fills_in_proportion_and_never_overflows() -> None:
    assert bar(0, 250, width=10) == "[----------]"
    assert bar(125, 250, width=10) == "[#####-----]"
    assert bar(250, 250, width=10) == "[##########]"
    assert bar(300, 250, width=10) == "[##########]"
    assert bar(0, 0, width=4) == "[####]"


def test_on_a_terminal_one_line_is_redrawn_and_ended_once_done() -> None:
    out = Terminal()
    shown = Progress(True, out)
    for n in range(1, 4):
        shown.step("agents ready", n, 3, f"node{n}  agent ready")
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("3/3 agents ready\n")
    assert text.count("\n") == 1 and "node1" not in text


def test_elsewhere_each_host_gets_its_line_and_steps_without_one_print_nothing() -> None:
    out = io.StringIO()
    shown = Progress(True, out)
    shown.step("hosts set up", 1, 2)
    shown.step("agents ready", 1, 2, "node1  192.168.0.11  agent ready")
    assert out.getvalue() == "node1  192.168.0.11  agent ready\n"


def test_disabled_progress_prints_nothing() -> None:
    out = Terminal()
    shown = Progress(False, out)
    shown.step("agents ready", 1, 1, "node1")
    shown.note("note")
    assert out.getvalue() == ""
