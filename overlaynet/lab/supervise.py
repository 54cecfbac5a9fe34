"""A lab host's supervisor: restarts its agent when the agent dies on its own, as systemd's
`Restart=on-failure` does for the agent on a VM (vagrant/provision.sh).

A lab's supervisors are forks of `overlaynet.lab.zygote`, which hands `supervise` a `start`
that forks the agent; `python -m overlaynet.lab.supervise PIDFILE -- AGENT ARGV…` (the lab's
`OVERLAYNET_LAB_SPAWN=exec`) runs the agent as a program instead. Either way it waits. What
happens next is `decide()`'s, a pure function: an agent that exits 0 was asked to stop; SIGTERM
and SIGINT are stops too; SIGKILL is the lab's way of crashing a host on purpose (tests and
benchmarks kill -9 an agent to see its host declared dead), so it is not undone either. Anything
else (an uncaught exception, SIGSEGV, SIGABRT, an OOM kill's …) is a failure: the agent is
started again after a back-off, and its start-up restores its state from the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from overlaynet.paths import write_private

#: First back-off after a failure; doubled per failure in a row, up to the cap (systemd's
#: RestartSec defaults to 100 ms; a little more keeps a crash loop from eating a core).
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
#: An agent that ran this long was healthy: its next failure starts the back-off afresh.
HEALTHY_RUN = 30.0
_STOPS = (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL)


@dataclass(frozen=True)
class Verdict:
    restart: bool
    delay: float
    failures: int  # failures in a row, this one included


def decide(returncode: int, ran_for: float, failures: int) -> Verdict:
    """What to do when the agent ended with `returncode` (negative: killed by that signal)
    after running `ran_for` seconds, with `failures` failures in a row before this one."""
    if returncode in _STOPS:
        return Verdict(False, 0.0, 0)
    in_a_row = 1 if ran_for >= HEALTHY_RUN else failures + 1
    delay = min(FIRST_BACKOFF * 2 ** (in_a_row - 1), MAX_BACKOFF)
    return Verdict(True, delay, in_a_row)


class Agent(Protocol):
    """The running agent as the supervisor sees it: `subprocess.Popen` is one, and so is
    `overlaynet.lab.zygote`'s forked agent."""

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


def supervise(
    pid_file: Path, start: Callable[[], Agent], ready: Callable[[], None] | None = None
) -> int:
    """Start the agent with `start()` and do what `decide()` says each time it ends; `ready()`
    is called once the pid file is written. Returns the supervisor's exit code."""
    child: Agent | None = None
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_private(pid_file, f"{os.getpid()}\n")
    if ready is not None:
        ready()
    failures = 0
    try:
        while True:
            started = time.monotonic()
            child = start()
            if stopping:
                # A stop that came while the agent was being started found no child to pass
                # the signal to.
                child.send_signal(signal.SIGTERM)
            returncode = child.wait()
            if stopping:
                return 0
            verdict = decide(returncode, time.monotonic() - started, failures)
            if not verdict.restart:
                return returncode if returncode >= 0 else 128 - returncode
            failures = verdict.failures
            print(
                f"supervisor: agent ended with {returncode}; restart {failures} "
                f"in {verdict.delay:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(verdict.delay)
            if stopping:
                return 0
    finally:
        pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m overlaynet.lab.supervise PIDFILE -- ARGV…", file=sys.stderr)
        return 2
    argv_ = args[2:]
    return supervise(Path(args[0]), lambda: subprocess.Popen(argv_))


if __name__ == "__main__":
    sys.exit(main())
