"""Docker's services tutorial part typed literally on a 3-host swarm lab (issue 13).

The commands are the tutorial's, with `overlaynet -H node1` for `docker`; a client namespace
of the test's own on the lab's underlay (not a node) makes the requests. Assertions are what
the tutorial shows: `service ps`'s columns, `service logs`' prefixes, 8080 on every node
reaching the appserver, which reaches `database` by name, and 1433 only where its task runs.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from overlaynet import lab as labmod
from overlaynet.host import netns
from tests.integration.labs import Lab, wait_until
from tests.integration.services.test_routing_mesh import NODES, ask, http_get

CONVERGE = 30.0


@pytest.fixture(scope="module")
def tutorial() -> Iterator[tuple[Lab, str]]:
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 3, swarm=True)
        client = labmod.add_client(name)
        yield Lab(name), client
    finally:
        labmod.down(name)
    assert [ns for ns in netns.list_names() if ns.startswith(f"onet-{name}-")] == []


def test_services_tutorial_typed_literally(tutorial: tuple[Lab, str]) -> None:
    lab, client = tutorial
    lab.ok("node1", "network", "create", "-d", "overlay", "atsea")
    service_id = lab.ok(
        "node1", "service", "create", "--name", "database", "--endpoint-mode", "dnsrr",
        "--network", "atsea", "--publish", "mode=host,target=1433", "--detach=true",
        "dockersamples/atsea-db:mssql",
    ).strip()  # fmt: skip
    assert re.fullmatch(r"[0-9a-z]{25}", service_id), service_id

    def database_running() -> bool:
        # CURRENT STATE, the sixth column (DESIRED STATE says Running from the start).
        return lab.ok("node1", "service", "ps", "database").splitlines()[1].split()[5] == "Running"

    assert wait_until(database_running, CONVERGE)
    header, row = lab.ok("node1", "service", "ps", "database").splitlines()[:2]
    assert header.split() == [
        "ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS",
    ]  # fmt: skip
    task_id, name, image, db_node, desired, current = row.split()[:6]
    assert (name, image, desired, current) == (
        "database.1",
        "dockersamples/atsea-db:mssql",
        "Running",
        "Running",
    )
    assert db_node in NODES and row.endswith("*:1433->1433/tcp")

    def logs() -> list[str]:
        return lab.ok("node1", "service", "logs", "database").splitlines()

    assert wait_until(lambda: len(logs()) > 0, CONVERGE)
    prefix = f"database.1.{task_id}@{db_node}    | "
    assert all(line.startswith(prefix) for line in logs()), logs()

    lab.ok(
        "node1", "service", "create", "--publish", "8080:8080", "--network", "atsea",
        "--name", "appserver", "--detach=true", "dockersamples/atsea-appserver:1.0",
    )  # fmt: skip

    # The page names the task that served it, as `service ps` and `service logs` name tasks
    # (appserver.1.<taskid>@<node>), and says that `database` answered by name.
    served_by = re.compile(
        r"^Atsea Shop - served by appserver\.1\.([0-9a-z]{25})@(node[123])$", re.M
    )

    def served_everywhere() -> bool:
        for ip in NODES.values():
            answer = http_get(client, ip, 8080)
            if answer is None or " 200 " not in answer.splitlines()[0]:
                return False
            if "\ndatabase: answered on 1433" not in answer or not served_by.search(answer):
                return False
        return True

    assert wait_until(served_everywhere, CONVERGE)
    answer = http_get(client, NODES["node1"], 8080)
    assert answer is not None
    match = served_by.search(answer)
    assert match is not None, answer
    (cells,) = [
        line.split()
        for line in lab.ok("node1", "service", "ps", "--no-trunc", "appserver").splitlines()[1:]
    ]
    assert (match.group(1), match.group(2)) == (cells[0], cells[3])
    # 1433 answers only on the node that runs the database task.
    for node, ip in NODES.items():
        assert (ask(client, ip, 1433, b"") is not None) == (node == db_node), node
