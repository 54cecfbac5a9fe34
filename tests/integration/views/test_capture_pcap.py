"""`lab capture` on a real 2-host swarm lab: inside a container (its inner frames), and `-w FILE`
pcaps that Debian's tshark decodes with its own VXLAN dissector, checked against the overlay's
VNI and the addresses of a cross-host ping."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.labs import Lab, make_lab

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark (tools/setup.sh) missing"),
]

NET = "capnet"
# A capture is bounded by its count and by this (the CLI's --seconds): the pings below keep
# going until the capture has its frames, so this is only the give-up point.
CAPTURE_SECONDS = "20"
# ICMP types as tshark prints them.
ECHO_REQUEST, ECHO_REPLY = "8", "0"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """node1 runs `server`, node2 `client`, both on the attachable overlay capnet."""
    for made in make_lab(2, swarm=True):
        made.ok("node1", "network", "create", "-d", "overlay", "--attachable", NET)
        made.ok("node1", "run", "-d", "--name", "server", "--network", NET, "alpine", "top")
        made.ok("node2", "run", "-d", "--name", "client", "--network", NET, "alpine", "top")
        yield made


def _address(lab: Lab, host: str, container: str) -> str:
    fmt = "{{.NetworkSettings.Networks." + NET + ".IPAddress}}"
    return lab.ok(host, "inspect", "-f", fmt, container).strip()


def _vni(lab: Lab) -> int:
    options = json.loads(lab.ok("node1", "network", "inspect", NET))[0]["Options"]
    return int(options["com.docker.network.driver.overlay.vxlanid_list"])


def _capture_while_pinging(lab: Lab, *capture_args: str) -> subprocess.CompletedProcess[str]:
    """Run `lab capture ARGS` and ping server from client (one probe at a time, at most 30)
    until the capture has returned."""
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab.name, "lab", "capture"]
    argv += ["--seconds", CAPTURE_SECONDS, *capture_args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(30):
            if proc.poll() is not None:
                break
            lab.cli("node2", "exec", "client", "ping", "-c", "1", "-W", "1", "server")
            time.sleep(0.2)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _tshark(pcap: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(pcap), "-d", "udp.port==4789,vxlan", "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line.strip()]


def test_underlay_pcap_decodes_in_tshark_with_the_overlays_vni_and_inner_icmp(
    lab: Lab, tmp_path: Path
) -> None:
    pcap = tmp_path / "underlay.pcap"
    done = _capture_while_pinging(lab, "-c", "4", "-w", str(pcap))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"4 frames from underlay written to {pcap}" in done.stdout
    server, client = _address(lab, "node1", "server"), _address(lab, "node2", "client")
    rows = _tshark(pcap, "vxlan.vni", "icmp.type", "ip.src", "ip.dst")
    assert len(rows) == 4
    # Outer then inner addresses: tshark's VXLAN dissector opened every datagram.
    assert all(vni == str(_vni(lab)) for vni, *_ in rows), rows
    requests = [r for r in rows if r[1] == ECHO_REQUEST]
    replies = [r for r in rows if r[1] == ECHO_REPLY]
    assert requests and replies, rows
    assert all(
        r[2] == f"192.168.0.12,{client}" and r[3] == f"192.168.0.11,{server}" for r in requests
    )
    assert all(
        r[2] == f"192.168.0.11,{server}" and r[3] == f"192.168.0.12,{client}" for r in replies
    )


def test_container_capture_shows_the_inner_frames_without_vxlan(lab: Lab) -> None:
    done = _capture_while_pinging(lab, "--container", "server", "-c", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    server, client = _address(lab, "node1", "server"), _address(lab, "node2", "client")
    assert "VXLAN" not in done.stdout and "UDP" not in done.stdout
    assert f"IPv4   {client} > {server}" in done.stdout
    assert "ICMP   echo-request" in done.stdout and "ICMP   echo-reply" in done.stdout


def test_container_pcap_on_a_named_host_decodes_in_tshark(lab: Lab, tmp_path: Path) -> None:
    pcap = tmp_path / "client.pcap"
    done = _capture_while_pinging(
        lab, "--container", "client", "-H", "node2", "-c", "2", "--filter", "icmp", "-w", str(pcap)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "container client on node2" in done.stdout
    server, client = _address(lab, "node1", "server"), _address(lab, "node2", "client")
    rows = _tshark(pcap, "vxlan.vni", "icmp.type", "ip.src", "ip.dst")
    assert rows == [["", ECHO_REQUEST, client, server], ["", ECHO_REPLY, server, client]]


def test_a_container_the_lab_lacks_is_one_clear_error(lab: Lab) -> None:
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab.name, "lab", "capture"]
    out = subprocess.run(
        [*argv, "--container", "server", "-H", "node2", "-c", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert out.stderr == "no container server on node2: see `overlaynet -H HOST ps`\n"
