"""The tutorial, typed into overlaynet by `lab demo`, behaves the way the tutorial says."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

from overlaynet import lab as labmod
from overlaynet.host import netns


def test_lab_demo_walks_through_the_tutorial_and_cleans_up() -> None:
    name = "t" + secrets.token_hex(4)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "overlaynet", "lab", "demo", "--name", name],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        labmod.down(name)
    text = out.stdout
    assert out.returncode == 0, text[-3000:] + out.stderr
    assert "Every step behaved as the tutorial says." in text
    # The commands are shown as a user types them, each followed by its output.
    assert "$ overlaynet -H node1 network create --driver bridge alpine-net" in text
    # Default bridge: by address yes, by name no.
    part1 = text.split("Part 2")[0]
    assert re.search(r"ping -c 2 -W 2 172\.17\.0\.3\n.*\n64 bytes from 172\.17\.0\.3", part1)
    assert "ping: alpine2:" in part1
    # User-defined bridge: by name, through the embedded DNS.
    part2 = text.split("Part 2")[1]
    assert re.search(r"64 bytes from alpine2\.alpine-net \(172\.18\.0\.\d+\)", part2)
    assert "ping: alpine3:" in part2
    # Under the hood: the bridge of alpine-net with the containers' veths on it.
    assert re.search(r"on-ve\w+\s+veth\s+on-br-\w+", part2)
    # Overlay across hosts: test-net reaches node2 with its first container there, alpine1
    # pings alpine2 by name, and the underlay shows it as VXLAN with the network's VNI.
    part3 = text.split("Part 3")[1]
    ls_before, ls_after = re.findall(r"\$ overlaynet -H node2 network ls\n(.*?)\n\n", part3, re.S)
    assert "test-net" not in ls_before and "test-net" in ls_after
    assert re.search(r"64 bytes from alpine2\.test-net \(10\.0\.\d+\.\d+\)", part3)
    assert re.search(r"UDP\s+\d+ > 4789 .*\n\s+VXLAN\s+flags 0x08 vni 409\d", part3)
    assert re.search(r"ICMP\s+echo-request", part3) and re.search(r"ICMP\s+echo-reply", part3)
    assert [ns for ns in netns.list_names() if ns.startswith(f"onet-{name}-")] == []
