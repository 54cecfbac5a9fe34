"""Docker's bridge and overlay tutorials typed literally on a 3-host lab (issue 12).

Every command is the tutorial's own, in its order, with the `alpine` image (a busybox userland
in its own root): `alpine top` keeps running detached, `ping alpine_host` on the default bridge
says `bad address`, the first container of the first user overlay gets 10.0.0.2 and the overlay
reaches node2 only with a container there. Assertions are what the tutorial shows.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from overlaynet import lab as labmod
from overlaynet.host import netns
from tests.integration.labs import Lab, wait_until


@pytest.fixture(scope="module")
def swarm3() -> Iterator[Lab]:
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 3, swarm=True)
        yield Lab(name)
    finally:
        labmod.down(name)
    assert [ns for ns in netns.list_names() if ns.startswith(f"onet-{name}-")] == []


def _running(lab: Lab, host: str) -> set[str]:
    return set(lab.ok(host, "ps", "--format", "{{.Names}}").split())


def _rm_everything(lab: Lab, host: str) -> None:
    """`container rm --force $(ps --all --quiet)`, as the tutorial cleans up."""
    ids = lab.ok(host, "ps", "--all", "--quiet").split()
    assert ids, "nothing to clean up"
    removed = lab.ok(host, "container", "rm", "--force", *ids).split()
    assert removed == ids
    assert lab.ok(host, "ps", "--all", "--quiet") == ""


def test_bridge_tutorial_typed_literally(swarm3: Lab) -> None:
    lab = swarm3
    for name in ("alpine_host", "alpine_client"):
        lab.ok("node1", "run", "--detach", "--network", "bridge", "--name", name, "alpine", "top")
    # `top` of the image runs detached without a terminal and keeps running.
    assert wait_until(lambda: _running(lab, "node1") == {"alpine_host", "alpine_client"})
    out = lab.cli("node1", "exec", "alpine_client", "ping", "-c", "2", "alpine_host")
    assert out.returncode == 1 and "ping: bad address 'alpine_host'" in out.stderr, out
    nets = lab.ok("node1", "inspect", "-f", "{{.NetworkSettings.Networks}}", "alpine_host")
    assert nets.startswith("map[bridge:"), nets
    # The container sees the image's root, not the host's (the host has /work, /usr/lib/python3…).
    root = lab.ok("node1", "exec", "alpine_client", "ls", "/").split()
    assert "bin" in root and "etc" in root and "work" not in root
    assert lab.ok("node1", "exec", "alpine_client", "cat", "/etc/os-release").startswith("NAME=")
    _rm_everything(lab, "node1")

    lab.ok("node1", "network", "create", "--driver", "bridge", "mybridge")
    for name in ("alpine_host", "alpine_client"):
        lab.ok("node1", "run", "--detach", "--network", "mybridge", "--name", name, "alpine", "top")
    out = lab.cli("node1", "exec", "alpine_client", "ping", "-c", "2", "alpine_host")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PING alpine_host (172." in out.stdout
    assert "2 packets transmitted, 2 packets received" in out.stdout
    nets = lab.ok("node1", "inspect", "-f", "{{.NetworkSettings.Networks}}", "alpine_host")
    assert nets.startswith("map[mybridge:"), nets
    _rm_everything(lab, "node1")
    lab.ok("node1", "network", "rm", "mybridge")


def test_overlay_tutorial_typed_literally(swarm3: Lab) -> None:
    lab = swarm3
    assert " myoverlay " not in lab.ok("node2", "network", "ls")
    lab.ok("node1", "network", "create", "--attachable", "-d", "overlay", "myoverlay")
    lab.ok(
        "node1",
        "run",
        "--detach",
        "--network",
        "myoverlay",
        "--name",
        "alpine_host",
        "alpine",
        "top",
    )
    ip = lab.ok(
        "node1",
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.myoverlay.IPAddress}}",
        "alpine_host",
    ).strip()
    assert ip == "10.0.0.2"  # ingress is 10.255.0.0/16: the first user overlay is 10.0.0.0/24
    # No container of node2 is on myoverlay yet: it has not reached node2.
    assert " myoverlay " not in lab.ok("node2", "network", "ls")
    lab.ok(
        "node2",
        "run",
        "--detach",
        "--network",
        "myoverlay",
        "--name",
        "alpine_client",
        "alpine",
        "top",
    )
    assert " myoverlay " in lab.ok("node2", "network", "ls")
    out = lab.cli("node2", "exec", "alpine_client", "ping", "-c", "5", "alpine_host")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PING alpine_host (10.0.0.2)" in out.stdout
    assert "5 packets transmitted, 5 packets received" in out.stdout
    _rm_everything(lab, "node2")
    _rm_everything(lab, "node1")
    lab.ok("node1", "network", "rm", "myoverlay")
