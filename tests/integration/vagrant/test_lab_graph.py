"""`overlaynet lab graph` on a real 2-host swarm lab: the SVG graphviz draws from the agents'
answers has every host, network and container, and the VXLAN tunnel between the two VTEPs of
the overlay they share. (Here, beside the Vagrant tests, because it is the same tutorial.)"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlaynet import lab as labmod
from tests.integration.labs import Lab, wait_until

SVG = "{http://www.w3.org/2000/svg}"

pytestmark = pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz's dot is not installed (apt-get install graphviz)"
)


@pytest.fixture(scope="module")
def swarm2() -> Iterator[Lab]:
    """Two hosts in a swarm, overlay `gnet` with container g1 on node1 and g2 on node2."""
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 2, swarm=True)
        lab = Lab(name)
        lab.ok("node1", "network", "create", "--driver", "overlay", "--attachable", "gnet")
        lab.ok("node1", "run", "-d", "--name", "g1", "--network", "gnet", "alpine", "top")
        lab.ok("node2", "run", "-d", "--name", "g2", "--network", "gnet", "alpine", "top")
        yield lab
    finally:
        labmod.down(name)


def graph_cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab.name, "lab", "graph", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def overlay_id(lab: Lab, host: str) -> str:
    return lab.ok(host, "network", "inspect", "-f", "{{.Id}}", "gnet").strip()


def peers_each_other(lab: Lab) -> bool:
    """Both VTEPs list the other host: the tunnel is up both ways in the data plane."""
    p1 = lab.ok("node1", "network", "inspect", "-f", "{{json .Overlay.Peers}}", "gnet")
    p2 = lab.ok("node2", "network", "inspect", "-f", "{{json .Overlay.Peers}}", "gnet")
    return "192.168.0.12" in p1 and "192.168.0.11" in p2


def test_the_svg_has_every_host_network_container_and_the_tunnel(
    swarm2: Lab, tmp_path: Path
) -> None:
    assert wait_until(lambda: peers_each_other(swarm2)), "the VTEPs never peered"
    out = tmp_path / "topology.svg"
    done = graph_cli(swarm2, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)

    root = ET.parse(out).getroot()
    words = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    titles = {t.text or "" for t in root.iter(f"{SVG}title")}
    for host in ("node1", "node2"):
        assert f"{host}/eth0" in titles and host in words
        # Every network with a kernel object of its own on that host is drawn there.
        listed = swarm2.ok(host, "network", "ls", "--format", "{{.Name}} {{.Driver}}")
        for line in listed.splitlines():
            net, driver = line.split()
            if driver not in ("host", "null"):
                assert f"{net} ({driver})" in words, (host, net)
    for container in ("g1", "g2"):
        assert container in words
    assert "underlay 192.168.0.0/24" in words
    gnet = overlay_id(swarm2, "node1")
    assert gnet == overlay_id(swarm2, "node2"), "a swarm overlay has one id on every host"
    # One edge between the two VTEPs, drawn both ways (no "one way" label).
    assert f"node1/vtep/{gnet}--node2/vtep/{gnet}" in titles
    assert "one way" not in words


def test_dot_text_on_stdout_and_a_host_whose_agent_is_down(swarm2: Lab) -> None:
    """Runs last in this module: it stops node2's agent."""
    dot = graph_cli(swarm2, "-o", "-")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith(f'graph "lab {swarm2.name}" {{')
    labmod.stop_agent(swarm2.name, "node2")
    down = graph_cli(swarm2, "-o", "-")
    assert down.returncode == 0, down.stderr
    assert "AGENT DOWN" in down.stdout
    assert "overlaynet: node2: the agent does not answer" in down.stderr
    # node1 still peers with node2: the tunnel now ends at node2's underlay port, one way.
    assert '-- "node2/eth0" [label="VXLAN VNI' in down.stdout


def test_a_lab_that_does_not_exist_is_one_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "overlaynet", "lab", "graph", "--name", "nosuchlab", "-o", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "lab nosuchlab has no hosts: see `overlaynet lab ls`, or build it first"
    )
