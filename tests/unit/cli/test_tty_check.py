"""`exec -it` / `run -it` with a stdin that is not a terminal: docker refuses with `the input
device is not a TTY` (exit 1) before it asks the daemon; the CLI took a pipe and echoed it
back through the container's pty. No root, no agent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from overlaynet.cli import tty_check


@pytest.mark.parametrize(
    ("attach_stdin", "tty", "terminal", "refused"),
    [
        (True, True, False, True),
        (True, True, True, False),
        (False, True, False, False),  # -t alone takes any stdin
        (True, False, False, False),  # -i alone reads a pipe
        (False, False, False, False),
    ],
)
def test_refusal_only_for_i_and_t_without_a_terminal(
    attach_stdin: bool, tty: bool, terminal: bool, refused: bool
) -> None:
    got = tty_check.refusal(attach_stdin, tty, terminal)
    assert got == ("the input device is not a TTY" if refused else None)


@pytest.mark.parametrize(
    "verb",
    [
        ["exec", "-it", "c1", "cat"],
        ["exec", "-i", "-t", "c1", "cat"],
        ["run", "-it", "--rm", "alpine", "cat"],
    ],
)
def test_cli_refuses_piped_stdin_before_asking_the_agent(verb: list[str]) -> None:
    # A lab that does not exist: the refusal must come before any connection (the code before
    # tried the agent and said it was not running).
    out = subprocess.run(
        [sys.executable, "-m", "overlaynet", "--lab", "s9w-no-such-lab", "-H", "node1", *verb],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "the input device is not a TTY\n")


def test_cli_keeps_run_detached_with_it() -> None:
    # docker checks only in the foreground: `run -dit` with a pipe goes to the daemon (here the
    # missing lab's agent answers, so the error is that one, not the TTY one).
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "overlaynet",
            "--lab",
            "s9w-no-such-lab",
            "-H",
            "node1",
            "run",
            "-dit",
            "alpine",
            "sh",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "not a TTY" not in out.stderr and out.returncode != 0, out
