"""The tutorial, typed into overlaynet by `lab demo`, behaves the way the tutorial says."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from overlaynet import lab as labmod
from overlaynet.host import netns

DEMO = (sys.executable, "-m", "overlaynet", "lab", "demo")


def _svg_texts(path: Path) -> str:
    """Every text the picture shows, once it parsed as SVG."""
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
    return "\n".join("".join(el.itertext()) for el in root.iter())


def test_lab_demo_walks_through_the_tutorial_and_cleans_up(tmp_path: Path) -> None:
    name = "t" + secrets.token_hex(4)
    pictures = tmp_path / "pictures"
    try:
        out = subprocess.run(
            [*DEMO, "--name", name, "--out", str(pictures)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        labmod.down(name)
    text = out.stdout
    assert out.returncode == 0, text[-3000:] + out.stderr
    assert "Every step behaved as the tutorial says." in text
    # The commands are the tutorial's own, shown as typed, each followed by its output.
    part1, part2 = text.split("Part 2")
    assert (
        "$ overlaynet -H node1 run --detach --network bridge --name alpine_host alpine top" in part1
    )
    # Default bridge: no name resolution, in busybox's words.
    assert "ping: bad address 'alpine_host'" in part1
    assert "map[bridge:" in part1
    # User bridge: by name, through the embedded DNS.
    assert re.search(r"PING alpine_host \(172\.\d+\.0\.2\).*\n64 bytes from", part1)
    assert re.search(r"on-ve\w+\s+veth\s+on-br-\w+", part1)
    assert "container rm --force $(overlaynet -H node1 ps --all --quiet)" in part1
    # Overlay: alpine_host gets 10.0.0.2, myoverlay reaches node2 with its first container, the
    # ping crosses hosts and the underlay shows VXLAN with the network's VNI.
    assert "$ overlaynet -H node1 network create --attachable -d overlay myoverlay" in part2
    assert "\n10.0.0.2\n" in part2
    ls_before, ls_after = re.findall(r"\$ overlaynet -H node2 network ls\n(.*?)\n\n", part2, re.S)
    assert "myoverlay" not in ls_before and "myoverlay" in ls_after
    assert "5 packets transmitted, 5 packets received" in part2
    assert re.search(r"UDP\s+\d+ > 4789 .*\n\s+VXLAN\s+flags 0x08 vni 409\d", part2)
    assert re.search(r"ICMP\s+echo-request", part2) and re.search(r"ICMP\s+echo-reply", part2)
    # Services: the tutorial's commands, the task's page through the VIP, and under the hood
    # its tasks, DNS records, the VIP's and the mesh's nft rules.
    part3 = text.split("Part 3")[1]
    assert "$ overlaynet -H node1 service create --publish 8080:8080 --network atsea" in part3
    assert re.search(r"database\.1\.\w+@node\d    \| ", part3)
    assert re.search(r"served by appserver\.1\.\w{25}@node\d\n", part3)
    assert "database: answered on 1433" in part3
    assert "tasks.database" in part3 and '"VirtualIPs"' in part3
    assert re.search(r"dnat to 10\.0\.0\.\d+", part3) and re.search(r":8080/tcp", part3)
    # No step without output: every command line is followed by something it printed.
    steps = re.split(r"\n\$ ", text)[1:]
    assert all(len(step.strip().splitlines()) > 1 for step in steps), [
        step for step in steps if len(step.strip().splitlines()) <= 1
    ]
    assert [ns for ns in netns.list_names() if ns.startswith(f"onet-{name}-")] == []
    # A picture of the lab after each part, named in the output, showing that part's containers.
    assert f"A picture of the lab after each part goes to {pictures}/" in text
    bridge = _svg_texts(pictures / "demo-1-bridge.svg")
    assert "alpine_host" in bridge and "alpine_client" in bridge and "mybridge" in bridge
    overlay = _svg_texts(pictures / "demo-2-overlay.svg")
    assert "alpine_host" in overlay and "alpine_client" in overlay and "myoverlay" in overlay
    assert "node2" in overlay and "node3" in overlay
    services = _svg_texts(pictures / "demo-3-services.svg")
    assert re.search(r"appserver\.1\.\w+", services) and re.search(r"database\.1\.\w+", services)
    assert "atsea" in services
