"""The README's swarm sections as a new user walks them on a two-host swarm lab: what failed,
each now a clear answer (no traceback, nothing lost)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.labs import Lab, make_lab


@pytest.fixture(scope="module")
def swarm2() -> Iterator[Lab]:
    """Two hosts in a swarm: node1 the manager, node2 a worker."""
    yield from make_lab(2, swarm=True)


def test_network_vtep_on_a_host_the_overlay_has_not_reached_says_so(swarm2: Lab) -> None:
    # `network vtep NET` on a manager with no container on NET yet (the README's walk, after
    # `node promote`): the overlay is known there (inspect answers) but has no VTEP.
    swarm2.ok("node1", "network", "create", "-d", "overlay", "--attachable", "far-net")
    out = swarm2.cli("node1", "network", "vtep", "far-net")
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        "network far-net has no VTEP on this host yet: a swarm overlay reaches a host with its "
        "first container there (`run --network far-net …` here, or look with -H on a host "
        "that runs one)"
    ]
    # Where a container runs, the view is there.
    swarm2.ok("node1", "run", "-d", "--name", "v1", "--network", "far-net", "alpine", "top")
    view = swarm2.ok("node1", "network", "vtep", "far-net")
    assert view.startswith("VNI ") and "VTEP 192.168.0.11:4789" in view, view


def test_a_swarm_overlay_keeps_the_vni_asked_for_and_refuses_what_it_would_drop(
    swarm2: Lab,
) -> None:
    # The README's `--opt vni=4200` on a swarm host gave the next free VNI without a word.
    swarm2.ok("node1", "network", "create", "-d", "overlay", "--opt", "vni=4200", "ov42")
    vni = swarm2.ok("node1", "network", "inspect", "-f", "{{.Overlay.VNI}}", "ov42").strip()
    assert vni == "4200"
    taken = swarm2.cli("node1", "network", "create", "-d", "overlay", "--opt", "vni=4200", "o2")
    assert taken.returncode == 1 and "4200" in taken.stderr, taken.stderr
    # --ip-range and options the managers do not keep: refused, one line, nothing made.
    for extra, says in (
        (("--subnet", "10.0.9.0/24", "--ip-range", "10.0.9.128/25"), "--ip-range"),
        (("--opt", "learning=on"), "--opt learning"),
        (("--opt", "com.docker.network.driver.mtu=1400"), "--opt com.docker.network.driver.mtu"),
    ):
        out = swarm2.cli("node1", "network", "create", "-d", "overlay", *extra, "dropped")
        assert out.returncode == 1, out.stdout
        assert says in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    names = swarm2.ok("node1", "network", "ls", "--format", "{{.Name}}").split()
    assert "dropped" not in names and "o2" not in names and "ov42" in names


def test_node_inspect_answers_dockers_templates(swarm2: Lab) -> None:
    # docker's `node inspect --format '{{ .Status.Addr }}' NODE` printed <nil>: the document
    # had the manager's own lowercase keys.
    out = swarm2.ok("node1", "node", "inspect", "-f", "{{.Status.Addr}} {{.Spec.Role}}", "node2")
    assert out == "192.168.0.12 worker\n"
    leader = swarm2.ok("node1", "node", "inspect", "-f", "{{.ManagerStatus.Leader}}", "self")
    assert leader == "true\n"


def test_network_peer_on_a_swarm_overlay_says_what_it_is(swarm2: Lab) -> None:
    # The README's static-peer section run on a swarm lab: `network peer add ov …` answered
    # "network ov not found" for a network `network inspect ov` shows.
    swarm2.ok("node1", "network", "create", "-d", "overlay", "peerless")
    for args in (
        ("network", "peer", "add", "peerless", "192.168.0.12"),
        ("network", "fdb", "add", "peerless", "02:42:0a:00:09:80", "192.168.0.12"),
    ):
        out = swarm2.cli("node1", *args)
        assert out.returncode == 1, out.stdout
        assert "network peerless is a swarm overlay" in out.stderr, out.stderr
    out = swarm2.cli("node1", "network", "peer", "add", "nosuch", "192.168.0.12")
    assert out.returncode == 1 and "network nosuch not found" in out.stderr, out.stderr


def test_network_rm_ingress_asks_first_and_no_keeps_it(swarm2: Lab) -> None:
    # `network rm ingress` removed the routing mesh at once, for good (it cannot be made
    # again here): docker asks first.
    argv = [sys.executable, "-m", "overlaynet", "--lab", swarm2.name, "-H", "node1"]
    for answer in ("n\n", ""):
        out = subprocess.run(
            [*argv, "network", "rm", "ingress"],
            input=answer,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "WARNING! This is the routing mesh's network" in out.stdout
        assert out.stdout.endswith("Are you sure you want to continue? [y/N] ")
        names = swarm2.ok("node1", "network", "ls", "--format", "{{.Name}}").split()
        assert "ingress" in names
    # Other networks go without a question, as before.
    swarm2.ok("node1", "network", "create", "-d", "overlay", "gone")
    assert swarm2.ok("node1", "network", "rm", "gone") == "gone\n"
