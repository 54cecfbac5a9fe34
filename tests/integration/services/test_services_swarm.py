"""Services on a real 3-host swarm lab: tasks run on the workers, scale, get replaced, and
their names resolve the same on every node (issue 13).

Every command is the CLI as a user types it; DNS is asked with dig from inside a task's
network namespace (the container's own resolver at 127.0.0.11).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections import Counter

import pytest

from overlaynet import lab as labmod
from overlaynet.host.nssocket import run_in_netns
from overlaynet.paths import HostPaths
from tests.integration.labs import Lab, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

NODES = ("node1", "node2", "node3")
# Long enough for the managers' restart delay (Docker's 5 s) and a scheduling pass.
CONVERGE = 30.0


def ps_rows(lab: Lab, service: str) -> list[dict[str, str]]:
    """`service ps` as rows of its columns (the table's cells are 3+ spaces apart)."""
    lines = lab.ok("node1", "service", "ps", "--no-trunc", service).splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    rows = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def current(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if not r["NAME"].startswith("\\_")]


def running_nodes(lab: Lab, service: str) -> list[str]:
    return [
        r["NODE"]
        for r in current(ps_rows(lab, service))
        if r["DESIRED STATE"] == "Running" and r["CURRENT STATE"].startswith("Running")
    ]


def task_containers(lab: Lab, host: str, service: str) -> list[str]:
    out = lab.ok(host, "ps", "--format", "{{.Names}}")
    return [n for n in out.split() if n.startswith(service + ".")]


def pid_of(lab: Lab, host: str, container: str) -> int:
    return int(lab.ok(host, "inspect", "--format", "{{.State.Pid}}", container).strip())


def dig(pid: int, name: str) -> tuple[str, list[str]]:
    """(status, addresses) of an A query to the container's resolver."""
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "dig", "+time=2", "+tries=1", name, "@127.0.0.11"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    status = re.search(r"status: (\w+)", out)
    answers = re.findall(r"^\S+\s+\d+\s+IN\s+A\s+(\S+)$", out, re.MULTILINE)
    return (status.group(1) if status else "TIMEOUT", sorted(answers))


@pytest.fixture(scope="module")
def swarm(swarm3: Lab) -> Lab:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "appnet")
    return swarm3


def test_three_replicas_run_spread_over_the_nodes(swarm: Lab) -> None:
    out = swarm.ok(
        "node1", "service", "create", "--name", "spread", "--replicas", "3",
        "--network", "appnet", "alpine", "sleep", "1000",
    )  # fmt: skip
    # Without --detach the CLI waits until converged, printing Docker's progress.
    assert "verify: Service converged" in out
    assert sorted(running_nodes(swarm, "spread")) == list(NODES)
    for host in NODES:
        assert len(task_containers(swarm, host, "spread")) == 1
    assert "3/3" in swarm.ok("node1", "service", "ls")


def test_scale_one_five_two(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "scaled", "--replicas", "1",
        "--network", "appnet", "--detach", "alpine", "sleep", "1000",
    )  # fmt: skip
    assert wait_until(lambda: len(running_nodes(swarm, "scaled")) == 1, CONVERGE)
    assert "scaled to 5" in swarm.ok("node1", "service", "scale", "scaled=5")
    assert len(running_nodes(swarm, "scaled")) == 5
    swarm.ok("node1", "service", "scale", "scaled=2")

    def containers() -> int:
        return sum(len(task_containers(swarm, h, "scaled")) for h in NODES)

    # The three shut down are stopped and their containers removed on their nodes.
    assert wait_until(lambda: containers() == 2, CONVERGE)
    assert len(running_nodes(swarm, "scaled")) == 2


def test_killed_task_is_replaced(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "victim", "--network", "appnet",
        "--detach", "alpine", "sleep", "1000",
    )  # fmt: skip
    assert wait_until(lambda: len(running_nodes(swarm, "victim")) == 1, CONVERGE)
    (row,) = current(ps_rows(swarm, "victim"))
    host = row["NODE"]
    (name,) = task_containers(swarm, host, "victim")
    os.kill(pid_of(swarm, host, name), signal.SIGKILL)

    def replaced() -> bool:
        rows = ps_rows(swarm, "victim")
        now = current(rows)
        return (
            len(now) == 1
            and now[0]["ID"] != row["ID"]
            and now[0]["CURRENT STATE"].startswith("Running")
            and any(r["ID"] == row["ID"] and "Failed" in r["CURRENT STATE"] for r in rows)
        )

    assert wait_until(replaced, CONVERGE)
    # As Docker shows it: killed by SIGKILL is exit 128+9 (State.Pid is the container's init),
    # and the replaced task is wanted shut down.
    (old,) = [r for r in ps_rows(swarm, "victim") if r["ID"] == row["ID"]]
    assert old["DESIRED STATE"] == "Shutdown"
    assert old["ERROR"] == '"task: non-zero exit (137)"'


def test_vip_and_dnsrr_answers_and_tasks_names_on_every_node(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "vipsvc", "--replicas", "3",
        "--network", "appnet", "alpine", "sleep", "1000",
    )  # fmt: skip
    swarm.ok(
        "node1", "service", "create", "--name", "rrsvc", "--replicas", "2",
        "--endpoint-mode", "dnsrr", "--network", "appnet", "alpine", "sleep", "1000",
    )  # fmt: skip
    doc = swarm.ok("node1", "service", "inspect", "vipsvc")
    (vip,) = re.findall(r'"Addr": "([\d.]+)/\d+"', doc)
    pids = {h: pid_of(swarm, h, task_containers(swarm, h, "vipsvc")[0]) for h in NODES}

    def answers() -> dict[str, dict[str, tuple[str, list[str]]]]:
        return {
            h: {n: dig(pid, n) for n in ("vipsvc", "tasks.vipsvc", "rrsvc", "tasks.rrsvc")}
            for h, pid in pids.items()
        }

    def converged() -> bool:
        seen = answers()
        return all(
            len(a["tasks.vipsvc"][1]) == 3 and len(a["rrsvc"][1]) == 2 for a in seen.values()
        )

    assert wait_until(converged, CONVERGE), answers()
    seen = answers()
    first = seen["node1"]
    for host in NODES:
        assert seen[host] == first, f"{host} answers differently from node1"
    assert first["vipsvc"] == ("NOERROR", [vip])
    assert vip not in first["tasks.vipsvc"][1]
    assert first["rrsvc"][1] == first["tasks.rrsvc"][1]
    assert vip not in first["rrsvc"][1]
    # Every node runs an lb_appnet sandbox for the VIP; like Docker's, it is no container to
    # the user (ps -a, a label filter) and has no name in DNS. Tasks carry Docker's labels.
    for host in NODES:
        shown = swarm.ok(host, "ps", "-a", "--format", "{{.Names}}").split()
        assert "lb_appnet" not in shown and "ingress-sbox" not in shown
        status, found = dig(pids[host], "lb_appnet")
        assert status != "NOERROR" and found == [], (host, status, found)
    task = task_containers(swarm, "node2", "vipsvc")[0]
    labels = json.loads(swarm.ok("node2", "inspect", "--format", "{{json .Config.Labels}}", task))
    assert labels["com.docker.swarm.service.name"] == "vipsvc"
    assert labels["com.docker.swarm.task.name"] == task
    assert task.endswith("." + labels["com.docker.swarm.task.id"])
    selected = swarm.ok("node2", "ps", "--filter", "label=com.docker.swarm.service.name=vipsvc")
    assert task in selected and "rrsvc" not in selected


def test_service_without_running_task_is_noerror_empty_not_nxdomain(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "lonely", "--endpoint-mode", "dnsrr",
        "--network", "appnet", "alpine", "sleep", "1000",
    )  # fmt: skip
    swarm.ok(
        "node1", "service", "create", "--name", "asker", "--network", "appnet",
        "alpine", "sleep", "1000",
    )  # fmt: skip
    host = current(ps_rows(swarm, "asker"))[0]["NODE"]
    pid = pid_of(swarm, host, task_containers(swarm, host, "asker")[0])
    assert wait_until(lambda: len(dig(pid, "lonely")[1]) == 1, CONVERGE)
    swarm.ok("node1", "service", "scale", "lonely=0")
    assert wait_until(lambda: dig(pid, "lonely")[1] == [], CONVERGE)
    assert dig(pid, "lonely") == ("NOERROR", [])
    assert dig(pid, "tasks.lonely") == ("NOERROR", [])
    assert dig(pid, "nosuchservice")[0] != "NOERROR"


def test_restarted_agent_keeps_its_tasks_without_duplicates(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "steady", "--replicas", "3",
        "--network", "appnet", "alpine", "sleep", "1000",
    )  # fmt: skip
    before = Counter(r["ID"] for r in current(ps_rows(swarm, "steady")))
    names = task_containers(swarm, "node2", "steady")
    agent = int(HostPaths("node2", swarm.name).pid_file.read_text())
    os.kill(agent, signal.SIGKILL)  # a crash: the supervisor leaves it down
    labmod.up(swarm.name, len(NODES))  # brings the missing agent back

    def polls() -> int:
        out = swarm.cli("node2", "info", "--format", "json")
        if out.returncode != 0:
            return 0
        info = json.loads(out.stdout)
        return int(info["Pid"] != agent and info["Tasks"].get("assigned_polls", 0))

    # The new agent has read its assignments a few times: still the same tasks and containers.
    assert wait_until(lambda: polls() >= 3, CONVERGE)
    assert sorted(task_containers(swarm, "node2", "steady")) == sorted(names)
    after = Counter(r["ID"] for r in current(ps_rows(swarm, "steady")))
    assert after == before
    assert len(running_nodes(swarm, "steady")) == 3


# Inside a client task's namespace: N HTTP requests to ADDR:PORT, one connection each, and the
# name of the task that served each (the overlaynet/web image prints it). Bounded: N requests,
# each with a 5 s timeout.
_CLIENT = """
import socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    s = socket.create_connection((addr, port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    name = [l for l in data.decode().splitlines() if l.startswith("Name: ")]
    print(name[0][6:] if name else "?", flush=True)
"""
CONNECTIONS = 300


def served_by(pid: int, addr: str, port: int, n: int) -> Counter[str]:
    """Who served each of `n` connections (fewer entries when a connection failed)."""
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "python3", "-c", _CLIENT, addr, str(port), str(n)],
        capture_output=True,
        text=True,
        timeout=5 * n + 30,
        check=False,
    ).stdout
    return Counter(out.split())


def test_vip_spreads_connections_over_the_tasks_and_follows_scaling(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "lbweb", "--replicas", "3",
        "--network", "appnet", "overlaynet/web",
    )  # fmt: skip
    swarm.ok(
        "node1", "service", "create", "--name", "lbclient", "--network", "appnet",
        "alpine", "sleep", "100000",
    )  # fmt: skip
    doc = swarm.ok("node1", "service", "inspect", "lbweb")
    (vip,) = re.findall(r'"Addr": "([\d.]+)/\d+"', doc)
    host = current(ps_rows(swarm, "lbclient"))[0]["NODE"]
    pid = pid_of(swarm, host, task_containers(swarm, host, "lbclient")[0])
    # The client's node learns every task through gossip: then the VIP has three backends.
    assert wait_until(lambda: len(served_by(pid, vip, 80, 30)) == 3, CONVERGE)
    counts = served_by(pid, vip, 80, CONNECTIONS)
    assert sum(counts.values()) == CONNECTIONS
    assert len(counts) == 3, counts
    assert all(name.startswith("lbweb.") for name in counts)
    assert max(counts.values()) / min(counts.values()) <= 2, counts
    # `network lb` on the client's node shows that VIP, its service, the three tasks as its
    # backends and at least the connections each served above, and the nft rules with them.
    lb = json.loads(swarm.ok(host, "network", "lb", "appnet", "--format", "json"))
    assert lb["Sandbox"] == "lb_appnet" and lb["Network"] == "appnet"
    (entry,) = [v for v in lb["VIPs"] if v["VIP"] == f"{vip}:*/tcp"]
    assert entry["Service"] == "lbweb"
    backends = {b["Task"]: b for b in entry["Backends"]}
    assert set(backends) == set(counts)
    for name, served in counts.items():
        assert backends[name]["Connections"] >= served
        assert f"dnat to {backends[name]['Address']}" in lb["Rules"]
    assert vip in lb["Rules"]
    text = swarm.ok(host, "network", "lb", "appnet")
    assert text.startswith(f"network appnet: load balancer lb_appnet at {lb['LbAddress']}")
    assert all(name in text for name in counts)

    swarm.ok("node1", "service", "scale", "lbweb=1")
    (left,) = [r["ID"] for r in current(ps_rows(swarm, "lbweb")) if r["DESIRED STATE"] == "Running"]
    # Once the shut-down tasks are gone from the VIP, every connection reaches the one left.
    assert wait_until(lambda: set(served_by(pid, vip, 80, 10)) == {_name_of(swarm, left)}, CONVERGE)


def _name_of(lab: Lab, task_id: str) -> str:
    row = next(r for r in ps_rows(lab, "lbweb") if r["ID"] == task_id)
    return f"{row['NAME']}.{task_id}"


# How long a client may wait, after its backend's task is gone, to learn that its connection
# is over (EOF or reset). Docker's clients hang here (moby#35548-like stale conntrack).
RESET_WAIT = 15.0


def test_a_removed_backends_open_connection_is_reset_not_left_hanging(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "echo", "--network", "appnet",
        "overlaynet/echo",
    )  # fmt: skip
    swarm.ok(
        "node1", "service", "create", "--name", "echoclient", "--network", "appnet",
        "alpine", "sleep", "100000",
    )  # fmt: skip
    (vip,) = re.findall(r'"Addr": "([\d.]+)/\d+"', swarm.ok("node1", "service", "inspect", "echo"))
    host = current(ps_rows(swarm, "echoclient"))[0]["NODE"]
    pid = pid_of(swarm, host, task_containers(swarm, host, "echoclient")[0])

    def connect() -> socket.socket | None:
        try:
            return run_in_netns(pid, lambda: socket.create_connection((vip, 7), timeout=2))
        except OSError:
            return None

    def reachable() -> bool:
        probe = connect()
        if probe is None:
            return False
        probe.close()
        return True

    assert wait_until(reachable, CONVERGE)
    conn = connect()
    assert conn is not None
    with conn:
        conn.settimeout(2)
        conn.sendall(b"hello\n")
        assert conn.recv(100) == b"hello\n"  # through the VIP to the task and back
        swarm.ok("node1", "service", "scale", "echo=0")

        def over() -> bool:
            """One probe: a line sent, then EOF or a reset means the client knows."""
            try:
                conn.sendall(b"still there?\n")
                return conn.recv(100) == b""
            except TimeoutError:
                return False  # nothing came back: not over yet, or hanging
            except (ConnectionResetError, BrokenPipeError):
                return True

        assert wait_until(over, RESET_WAIT)
