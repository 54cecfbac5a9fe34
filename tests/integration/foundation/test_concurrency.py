"""A slow request on one container never holds up the others (issue 18: one agent-wide lock
made `run` wait 29 s behind `stop -t 30` of a container that ignores SIGTERM)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.labs import Lab, wait_until

# Long enough that a `run` queued behind the stop would visibly finish after it.
STOP_GRACE = "12"


def _stops(lab: Lab) -> int:
    """How many stop requests the agent has taken in (counted as it starts each one)."""
    counters: dict[str, int] = json.loads(lab.ok("node1", "info"))["Counters"]
    return counters.get("op:container.stop", 0)


def test_a_slow_stop_does_not_hold_up_run_of_another_container(lab2: Lab) -> None:
    lab2.ok(
        "node1",
        "run",
        "-d",
        "--name",
        "stubborn",
        "alpine",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 1; done",
    )
    argv = [
        sys.executable,
        "-m",
        "overlaynet",
        "--lab",
        lab2.name,
        "-H",
        "node1",
        "stop",
        "-t",
        STOP_GRACE,
        "stubborn",
    ]
    before = _stops(lab2)
    stopper = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The agent has the stop in hand (its SIGTERM is ignored: it waits out the grace).
        assert wait_until(lambda: _stops(lab2) > before, 10)
        lab2.ok("node1", "run", "-d", "--name", "quick", "alpine")
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
    lab2.ok(
        "node1",
        "run",
        "-d",
        "--name",
        "serial",
        "alpine",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 1; done",
    )
    argv = [
        sys.executable,
        "-m",
        "overlaynet",
        "--lab",
        lab2.name,
        "-H",
        "node1",
        "stop",
        "-t",
        "3",
        "serial",
    ]
    before = _stops(lab2)
    stopper = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: _stops(lab2) > before, 10)
        lab2.ok("node1", "start", "serial")  # runs after the stop, not in its middle
        assert stopper.poll() is not None
        assert "serial" in lab2.ok("node1", "ps")
    finally:
        if stopper.poll() is None:
            stopper.kill()
        lab2.cli("node1", "rm", "-f", "serial")
