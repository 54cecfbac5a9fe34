"""Health checks of standalone containers on a real one-host lab (issue 14): `run
--health-cmd …` is probed inside the container, `ps` shows `(health: starting)`, `(healthy)`,
`(unhealthy)` after its status, `inspect` has State.Health {Status, FailingStreak, Log}, and
bad flags are one clear error. Every command is the CLI as a user types it."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.integration.labs import Lab, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

# Probes every 0.5 s, 2 failures in a row make it unhealthy: a few seconds cover any change.
CONVERGE = 20.0


def status(lab: Lab, name: str) -> str:
    out = lab.ok("node1", "ps", "--format", "{{.Names}}\t{{.Status}}")
    rows = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return rows.get(name, "")


def health(lab: Lab, name: str) -> dict[str, Any]:
    (doc,) = json.loads(lab.ok("node1", "inspect", name))
    return dict(doc["State"].get("Health") or {})


def test_run_with_a_health_check_starts_becomes_healthy_then_unhealthy(fresh_lab: Lab) -> None:
    lab = fresh_lab
    lab.ok(
        "node1", "run", "-d", "--name", "hc", "--health-cmd", "test -e /tmp/ok",
        "--health-interval", "500ms", "--health-retries", "2", "--health-start-period", "1m",
        "alpine", "sleep", "1000",
    )  # fmt: skip
    # Failing inside the start period: still starting, and the failures are logged.
    assert wait_until(lambda: len(health(lab, "hc").get("Log", [])) >= 2, CONVERGE)
    doc = health(lab, "hc")
    assert doc["Status"] == "starting" and doc["FailingStreak"] == 0
    assert doc["Log"][-1]["ExitCode"] == 1
    assert status(lab, "hc").endswith("(health: starting)")

    lab.ok("node1", "exec", "hc", "touch", "/tmp/ok")
    assert wait_until(lambda: health(lab, "hc").get("Status") == "healthy", CONVERGE)
    assert status(lab, "hc").startswith("Up") and status(lab, "hc").endswith("(healthy)")
    doc = health(lab, "hc")
    assert doc["FailingStreak"] == 0 and doc["Log"][-1]["ExitCode"] == 0
    assert set(doc["Log"][-1]) == {"Start", "End", "ExitCode", "Output"}
    assert len(doc["Log"]) <= 5  # Docker keeps the last 5 probes

    lab.ok("node1", "exec", "hc", "rm", "/tmp/ok")
    assert wait_until(lambda: health(lab, "hc").get("Status") == "unhealthy", CONVERGE)
    assert status(lab, "hc").endswith("(unhealthy)")
    doc = health(lab, "hc")
    assert doc["FailingStreak"] >= 2 and doc["Log"][-1]["ExitCode"] == 1
    # Docker restarts nothing for an unhealthy standalone container: it keeps running.
    assert status(lab, "hc").startswith("Up")

    # Without a check (or with --no-healthcheck) there is no Health and no suffix.
    lab.ok("node1", "run", "-d", "--name", "plain", "--no-healthcheck", "alpine", "sleep", "1000")
    assert health(lab, "plain") == {}
    assert status(lab, "plain").startswith("Up") and not status(lab, "plain").endswith(")")


def test_bad_health_flags_are_one_clear_error(fresh_lab: Lab) -> None:
    out = fresh_lab.cli("node1", "run", "-d", "--health-interval", "1s", "alpine", "true")
    assert out.returncode == 125
    assert "need --health-cmd" in out.stderr and "Traceback" not in out.stderr
    out = fresh_lab.cli("node1", "run", "-d", "--health-cmd", "x", "--health-retries", "0",
                        "alpine", "true")  # fmt: skip
    assert out.returncode == 125 and "retries" in out.stderr
    # Nothing was created by either.
    assert fresh_lab.ok("node1", "ps", "-a", "-q").strip() == ""
