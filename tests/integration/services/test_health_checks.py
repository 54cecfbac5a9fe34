"""Health checks on a real 3-host swarm lab (issue 14): a task with a check is `(health:
starting)` and out of DNS until a probe passes, then `(healthy)` and in DNS with State.Health
in inspect; once it fails its probes it is `(unhealthy)`, leaves DNS, fails with Docker's
error and is replaced per its restart policy.

The probe is `test -f /tmp/ok` inside the task, so the test turns health on and off with
`exec`. Every command is the CLI as a user types it; DNS is asked with dig from a client task.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.integration.labs import Lab, wait_until
from tests.integration.services.test_services_swarm import (
    current,
    dig,
    pid_of,
    ps_rows,
    task_containers,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

CONVERGE = 60.0
NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def swarm(swarm3: Lab) -> Lab:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "hcnet")
    swarm3.ok(
        "node1", "service", "create", "--name", "hcclient", "--network", "hcnet",
        "alpine", "sleep", "100000",
    )  # fmt: skip
    return swarm3


def where(lab: Lab, service: str) -> tuple[str, str]:
    """(node, container name) of the service's one wanted task that has a container."""
    for host in NODES:
        names = task_containers(lab, host, service)
        rows = [r for r in current(ps_rows(lab, service)) if r["DESIRED STATE"] == "Running"]
        wanted = {r["ID"] for r in rows}
        for name in names:
            if name.rsplit(".", 1)[1] in wanted:
                return host, name
    raise AssertionError(f"no container of {service}")


def ps_status(lab: Lab, host: str, container: str) -> str:
    out = lab.ok(host, "ps", "--format", "{{.Names}}\t{{.Status}}")
    for line in out.splitlines():
        name, _, status = line.partition("\t")
        if name == container:
            return status
    return ""


def health(lab: Lab, host: str, container: str) -> dict[str, Any]:
    (doc,) = json.loads(lab.ok(host, "inspect", container))
    found: dict[str, Any] = doc["State"].get("Health") or {}
    return found


def test_a_task_serves_only_while_healthy_and_is_replaced_when_unhealthy(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "hc", "--network", "hcnet", "--detach",
        "--health-cmd", "test -f /tmp/ok", "--health-interval", "500ms",
        "--health-retries", "2", "--health-start-period", "120s", "overlaynet/web",
    )  # fmt: skip
    assert wait_until(lambda: bool(task_containers_anywhere(swarm, "hc")), CONVERGE)
    host, name = where(swarm, "hc")
    client_host = current(ps_rows(swarm, "hcclient"))[0]["NODE"]
    client = pid_of(swarm, client_host, task_containers(swarm, client_host, "hcclient")[0])
    # Starting: its probes fail (inside the start period, so they do not count yet).
    assert wait_until(lambda: bool(health(swarm, host, name).get("Log")), CONVERGE)
    assert ps_status(swarm, host, name).endswith("(health: starting)")
    assert health(swarm, host, name)["Status"] == "starting"
    (row,) = [r for r in current(ps_rows(swarm, "hc")) if r["DESIRED STATE"] == "Running"]
    assert row["CURRENT STATE"].startswith("Starting")
    assert row["CURRENT STATE"].endswith("(health: starting)")
    assert dig(client, "tasks.hc") == ("NOERROR", [])

    swarm.ok(host, "exec", name, "touch", "/tmp/ok")
    assert wait_until(lambda: health(swarm, host, name).get("Status") == "healthy", CONVERGE)
    assert ps_status(swarm, host, name).endswith("(healthy)")
    doc = health(swarm, host, name)
    assert doc["FailingStreak"] == 0 and doc["Log"][-1]["ExitCode"] == 0
    assert 1 <= len(doc["Log"]) <= 5
    (container,) = json.loads(swarm.ok(host, "inspect", name))
    addr = container["NetworkSettings"]["Networks"]["hcnet"]["IPAddress"]
    assert wait_until(lambda: dig(client, "tasks.hc") == ("NOERROR", [addr]), CONVERGE)
    first = row["ID"]

    swarm.ok(host, "exec", name, "rm", "/tmp/ok")
    # Unhealthy after two failed probes: it leaves DNS, fails with Docker's error, and the
    # restart policy (any, 5 s) starts a new task in its slot.
    assert wait_until(lambda: addr not in dig(client, "tasks.hc")[1], CONVERGE)
    assert wait_until(lambda: failed_unhealthy(swarm, first), CONVERGE)
    assert wait_until(lambda: new_task(swarm, first), CONVERGE)


def task_containers_anywhere(lab: Lab, service: str) -> list[str]:
    return [n for host in NODES for n in task_containers(lab, host, service)]


def failed_unhealthy(lab: Lab, task_id: str) -> bool:
    row = next((r for r in ps_rows(lab, "hc") if r["ID"] == task_id), None)
    return (
        row is not None
        and row["CURRENT STATE"].startswith("Failed")
        and "dockerexec: unhealthy container" in row["ERROR"]
    )


def new_task(lab: Lab, old: str) -> bool:
    return any(
        r["ID"] != old and r["DESIRED STATE"] == "Running" for r in current(ps_rows(lab, "hc"))
    )
