"""A slow request on one container never holds up the others (issue 18: one agent-wide lock
made `run` wait 29 s behind `stop -t 30` of a container that ignores SIGTERM)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.labs import Lab, wait_until

# Long enough that a `run` queued behind the stop would visibly finish after it.
STOP_GRACE = "12"
IGNORES_SIGTERM = "trap '' TERM; while true; do sleep 1; done"


def _stops(lab: Lab) -> int:
    """How many stop requests the agent has taken in (counted as it starts each one)."""
    counters: dict[str, int] = json.loads(lab.ok("node1", "info", "--format", "json"))["Counters"]
    return counters.get("op:container.stop", 0)


def _start_stopping(lab: Lab, name: str, grace: str) -> subprocess.Popen[str]:
    """Run `name` (it ignores SIGTERM), then `stop -t grace` it in the background; return once
    the agent has the stop in hand, so the stop is waiting out its grace period."""
    lab.ok("node1", "run", "-d", "--name", name, "alpine", "sh", "-c", IGNORES_SIGTERM)
    cli = [sys.executable, "-m", "overlaynet", "--lab", lab.name, "-H", "node1"]
    before = _stops(lab)
    stopper = subprocess.Popen(
        [*cli, "stop", "-t", grace, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_until(lambda: _stops(lab) > before, 10)
    return stopper


def test_a_slow_stop_does_not_hold_up_run_of_another_container(lab2: Lab) -> None:
    stopper = _start_stopping(lab2, "stubborn", STOP_GRACE)
    try:
        lab2.ok("node1", "run", "-d", "--name", "quick", "alpine", "top")
        assert "quick" in lab2.ok("node1", "ps")
        # Order, not time: `run` finished while the stop was still waiting.
        assert stopper.poll() is None, stopper.communicate()
        _, err = stopper.communicate(timeout=60)
        assert stopper.returncode == 0, err
        assert "stubborn" not in lab2.ok("node1", "ps")
    finally:
        if stopper.poll() is None:
            stopper.kill()
        lab2.cli("node1", "rm", "-f", "stubborn", "quick")


def test_a_second_request_on_the_same_container_waits_for_the_first(lab2: Lab) -> None:
    stopper = _start_stopping(lab2, "serial", "3")
    try:
        lab2.ok("node1", "start", "serial")  # runs after the stop, not in its middle
        assert stopper.poll() is not None
        assert "serial" in lab2.ok("node1", "ps")
    finally:
        if stopper.poll() is None:
            stopper.kill()
        lab2.cli("node1", "rm", "-f", "serial")
