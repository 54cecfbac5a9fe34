"""Rolling updates on a real 3-host swarm lab (issue 14): under a steady request loop through
the VIP from a client task, a rolling update of a 3-replica overlaynet/web service with a health
check fails no request (a task leaves DNS and the VIP on every node before its process stops; a
new one joins once healthy), and an update whose new tasks fail their health check with
`--update-failure-action rollback` returns to the previous spec by itself.

Every command is the CLI as a user types it. The load runs in the client task's network
namespace with the host's python3, bounded in count and time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet import lab as labmod
from tests.integration.labs import Lab, wait_until
from tests.integration.services.test_services_swarm import (
    current,
    pid_of,
    ps_rows,
    served_by,
    task_containers,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

# The routing mesh's client: a namespace on the lab underlay that is not a node, asking node1.
NODE1 = "192.168.0.11"
MESH_PORT = 8088
# Long enough for a scheduling pass, a health check and Docker's restart delay.
CONVERGE = 60.0
HEALTH = ["--health-cmd", "wget -q -O /dev/null http://127.0.0.1/", "--health-interval", "500ms"]
# The load: one HTTP request per connection, each bounded by a 5 s timeout, until the stop
# file appears, at most LOAD_MAX requests or LOAD_SECONDS; it prints one line per request.
LOAD_MAX = 5000
LOAD_SECONDS = 180.0
_LOAD = """
import os, socket, sys, time
addr, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
limit, seconds = int(sys.argv[4]), float(sys.argv[5])
end = time.monotonic() + seconds
for _ in range(limit):
    if os.path.exists(stop) or time.monotonic() > end:
        break
    stage = "connect"
    t0 = time.time()
    try:
        s = socket.create_connection((addr, port), timeout=5)
        stage = "recv:%s:%d" % s.getsockname()
        s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        name = [l for l in data.decode().splitlines() if l.startswith("Name: ")]
        print("ok", name[0][6:] if name else "?", flush=True)
    except OSError as e:
        print("fail", "%s@%s@%.2f" % (type(e).__name__, stage, t0), flush=True)
    time.sleep(0.02)
"""


@pytest.fixture(scope="module")
def swarm(swarm3: Lab) -> Lab:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "updnet")
    swarm3.ok(
        "node1", "service", "create", "--name", "updclient", "--network", "updnet",
        "alpine", "sleep", "100000",
    )  # fmt: skip
    return swarm3


def client_pid(lab: Lab) -> int:
    host = current(ps_rows(lab, "updclient"))[0]["NODE"]
    return pid_of(lab, host, task_containers(lab, host, "updclient")[0])


def inspect(lab: Lab, service: str) -> dict[str, Any]:
    (doc,) = json.loads(lab.ok("node1", "service", "inspect", service))
    return doc  # type: ignore[no-any-return]


def vip_of(lab: Lab, service: str) -> str:
    (vip,) = re.findall(r'"Addr": "([\d.]+)/\d+"', lab.ok("node1", "service", "inspect", service))
    return str(vip)


@pytest.fixture
def stop_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("load") / "stop")
    yield path
    with open(path, "w"):
        pass


def update_under_load(
    lab: Lab, service: str, enter: list[str], addr: str, port: int, stop_file: str
) -> tuple[float, list[list[str]], str]:
    """`service update --env-add VERSION=2` while the load runs (`enter` + python3): the
    update's duration, each request's result and the CLI's output."""
    load = subprocess.Popen(
        [*enter, "python3", "-c", _LOAD, addr, str(port), stop_file,
         str(LOAD_MAX), str(LOAD_SECONDS)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # requests flowing before the update starts
        started = time.monotonic()
        out = lab.ok("node1", "service", "update", "--env-add", "VERSION=2", service)
        duration = time.monotonic() - started
        time.sleep(1.0)  # and after it ended
    finally:
        with open(stop_file, "w"):
            pass
        output, _ = load.communicate(timeout=60)
    lines = output.split()
    return duration, [lines[i : i + 2] for i in range(0, len(lines), 2)], out


def test_rolling_update_under_load_fails_no_request(swarm: Lab, stop_file: str) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "rollweb", "--replicas", "3",
        "--network", "updnet", *HEALTH, "--update-monitor", "1s", "overlaynet/web",
    )  # fmt: skip
    pid, vip = client_pid(swarm), vip_of(swarm, "rollweb")
    assert wait_until(lambda: len(served_by(pid, vip, 80, 30)) == 3, CONVERGE)
    before = set(served_by(pid, vip, 80, 30))
    enter = ["nsenter", "-t", str(pid), "-n"]
    duration, results, out = update_under_load(swarm, "rollweb", enter, vip, 80, stop_file)
    failed = [r for r in results if r[0] == "fail"]
    served = {r[1] for r in results if r[0] == "ok"}
    print(f"rolling update of 3 replicas: {duration:.1f} s, {len(results)} requests, "
          f"{len(failed)} failed")  # fmt: skip
    assert "update completed" in out
    assert results and not failed, failed[:5]
    status = inspect(swarm, "rollweb")["UpdateStatus"]
    assert status["State"] == "completed"
    # Old and new tasks both served during the update, and only new ones serve now.
    after = set(served_by(pid, vip, 80, 30))
    assert len(after) == 3 and not after & before
    assert before & served and after & served


def test_failing_health_checks_roll_back_by_themselves(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "badweb", "--replicas", "3",
        "--network", "updnet", *HEALTH, "overlaynet/web",
    )  # fmt: skip
    previous = inspect(swarm, "badweb")["Spec"]
    swarm.ok(
        "node1", "service", "update", "--detach", "--health-cmd", "false",
        "--health-retries", "1", "--update-failure-action", "rollback", "badweb",
    )  # fmt: skip

    def rolled_back() -> bool:
        status = inspect(swarm, "badweb").get("UpdateStatus") or {}
        return status.get("State") == "rollback_completed"

    assert wait_until(rolled_back, CONVERGE * 2)
    doc = inspect(swarm, "badweb")
    spec = doc["Spec"]
    assert spec["TaskTemplate"] == previous["TaskTemplate"]
    prev = doc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]
    assert prev["Healthcheck"]["Test"] == ["CMD-SHELL", "false"]
    # The failed task says why, as Docker's does, and three healthy tasks run again.
    rows = ps_rows(swarm, "badweb")
    assert any("dockerexec: unhealthy container" in r["ERROR"] for r in rows)
    assert wait_until(
        lambda: (
            sum(
                1
                for r in current(ps_rows(swarm, "badweb"))
                if r["DESIRED STATE"] == "Running" and r["CURRENT STATE"].startswith("Running")
            )
            == 3
        ),
        CONVERGE,
    )


@pytest.fixture
def client(swarm: Lab) -> Iterator[str]:
    """A namespace on the lab's underlay that is not a node (the routing mesh's client)."""
    name = labmod.add_client(swarm.name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)  # the lab outlives it


def test_rolling_update_through_the_routing_mesh_fails_no_request(
    swarm: Lab, client: str, stop_file: str
) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "meshweb", "--replicas", "3",
        "--publish", f"{MESH_PORT}:80", *HEALTH, "--update-monitor", "1s", "overlaynet/web",
    )  # fmt: skip
    enter = ["ip", "netns", "exec", client]

    def answers() -> bool:
        probe = subprocess.run(
            [*enter, "python3", "-c", _LOAD, NODE1, str(MESH_PORT), "/nonexistent", "30", "20"],
            capture_output=True, text=True, timeout=200, check=False,
        )  # fmt: skip
        names = {line.split()[1] for line in probe.stdout.splitlines() if line.startswith("ok")}
        return len(names) == 3

    assert wait_until(answers, CONVERGE)
    duration, results, out = update_under_load(swarm, "meshweb", enter, NODE1, MESH_PORT, stop_file)
    failed = [r for r in results if r[0] == "fail"]
    print(f"rolling update through the routing mesh: {duration:.1f} s, {len(results)} requests, "
          f"{len(failed)} failed")  # fmt: skip
    assert "update completed" in out
    assert results and not failed, failed[:5]
