"""The routing mesh on a real lab: a published port answers on every node's underlay address,
from a namespace that is not a node, including a node that joined after the service was
created and one whose agent restarted (moby#29417, swarmkit#3001); `mode=host` answers only
where its task runs.

The client is a namespace of the test's own on the lab's underlay bridge
(`onet-<lab>-client`, 192.168.0.10: `lab.add_client`), removed at the end even when a test fails.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from overlaynet import lab as labmod
from overlaynet.host.nft import PORTS_TABLE
from overlaynet.host.nssocket import socket_in_netns
from overlaynet.paths import HostPaths
from tests.integration.labs import Lab, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

NODES = {"node1": "192.168.0.11", "node2": "192.168.0.12", "node3": "192.168.0.13"}
CONVERGE = 30.0
IO_TIMEOUT = 3.0


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="module")
def late_lab() -> Iterator[tuple[Lab, str]]:
    """Three hosts, node1 and node2 in a swarm (node3 joins later), and a client namespace."""
    name = "t" + secrets.token_hex(4)
    try:
        hosts = labmod.up(name, 3)
        labmod.form_swarm(name, hosts[:2])
        client = labmod.add_client(name)
        yield Lab(name), client
    finally:
        labmod.down(name)  # the client namespace goes with the lab


def ask(client: str, addr: str, port: int, request: bytes) -> str | None:
    """The answer to one connection from the client namespace (None: refused or silent)."""
    sock = socket_in_netns(client, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(IO_TIMEOUT)
        sock.connect((addr, port))
        if request:
            sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if not request:
                break  # a greeting is all a server without a request says
        return data.decode(errors="replace")
    except OSError:
        return None
    finally:
        sock.close()


def http_get(client: str, addr: str, port: int) -> str | None:
    return ask(client, addr, port, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")


def test_published_port_answers_on_every_node_and_host_mode_only_where_its_task_runs(
    late_lab: tuple[Lab, str],
) -> None:
    lab, client = late_lab
    lab.ok("node1", "network", "create", "-d", "overlay", "atsea")
    lab.ok(
        "node1", "service", "create", "--name", "database", "--endpoint-mode", "dnsrr",
        "--network", "atsea", "--publish", "mode=host,target=1433", "--detach=true",
        "dockersamples/atsea-db:mssql",
    )  # fmt: skip
    lab.ok(
        "node1", "service", "create", "--publish", "8080:8080", "--network", "atsea",
        "--name", "appserver", "--detach=true", "dockersamples/atsea-appserver:1.0",
    )  # fmt: skip

    def mesh_on(nodes: list[str]) -> bool:
        answers = [http_get(client, NODES[n], 8080) for n in nodes]
        return all(a is not None and "200" in a.splitlines()[0] for a in answers)

    assert wait_until(lambda: mesh_on(["node1", "node2"]), CONVERGE)
    answer = http_get(client, NODES["node1"], 8080)
    assert answer is not None and "database: answered" in answer

    # node3 joins after the service exists: its published port works too.
    labmod.form_swarm(lab.name, [labmod.LabHost.numbered(n) for n in (1, 2, 3)])
    assert wait_until(lambda: mesh_on(list(NODES)), CONVERGE)

    # 1433 (mode=host) answers only on the node that runs the database task.
    rows = lab.ok("node1", "service", "ps", "database").splitlines()[1:]
    (db_node,) = [line.split()[3] for line in rows if "Running" in line]

    def db_only_where_it_runs() -> bool:
        return all(
            (ask(client, ip, 1433, b"") is not None) == (node == db_node)
            for node, ip in NODES.items()
        )

    assert wait_until(db_only_where_it_runs, CONVERGE)


def test_published_port_answers_again_after_the_agent_restarts(
    late_lab: tuple[Lab, str],
) -> None:
    lab, client = late_lab
    node = "node2"
    pid = int(HostPaths(node, lab.name).pid_file.read_text())
    os.kill(pid, signal.SIGKILL)  # a crash: the lab brings the agent back below
    # As after a reboot, the host's published-port rules are gone: the new agent must make them.
    sh(
        "ip",
        "netns",
        "exec",
        f"onet-{lab.name}-{node}",
        "nft",
        "delete",
        "table",
        "ip",
        PORTS_TABLE,
    )
    assert http_get(client, NODES[node], 8080) is None
    labmod.up(lab.name, 3)

    def answers() -> bool:
        a = http_get(client, NODES[node], 8080)
        return a is not None and "200" in a.splitlines()[0]

    assert wait_until(answers, CONVERGE)
