"""`network create -d overlay --opt encrypted` on a 3-host swarm (issue 18): containers on two
hosts ping each other, the underlay capture shows no ping payload (a plain overlay beside it
does), `network inspect` shows the key ids and never a key, and a datagram forged with a
member's source address delivers nothing (on the plain overlay it is delivered)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import wrpcap

from tests.integration.labs import Lab, wait_until

#: ping -p: the pad byte every request's payload is filled with (busybox takes one byte).
PAD = "ab"
FORGED = 50
TIMEOUT = 30.0  # bounds a hang only
NODE1, NODE2 = "192.168.0.11", "192.168.0.12"


def _gossip_names(lab: Lab, host: str, net: str) -> set[str]:
    out = lab.ok(host, "gossip", "endpoints", net)
    return {line.split()[1] for line in out.splitlines()[1:]}


def _two_containers(lab: Lab, net: str, a: str, b: str) -> None:
    lab.ok("node1", "run", "-dit", "--name", a, "--network", net, "alpine", "sh")
    lab.ok("node2", "run", "-dit", "--name", b, "--network", net, "alpine", "sh")
    assert wait_until(lambda: {a, b} <= _gossip_names(lab, "node1", net))


def _captured_ping(lab: Lab, src: str, dst: str, name: str) -> bytes:
    """Raw capture of node1's underlay port (VXLAN only) during a ping from src to dst."""
    pcap = f"/tmp/onet-{lab.name}-{name}.pcap"
    dump = subprocess.Popen(
        ["ip", "netns", "exec", lab.netns_of("node1"), "tcpdump", "-i", "eth0", "-U", "-n",
         "--immediate-mode", "-w", pcap, "udp", "port", "4789"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with open(pcap, "rb") as f:
                    if f.read(24):
                        break
            except FileNotFoundError:
                pass
            assert time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.05)
        out = lab.cli("node1", "exec", src, "ping", "-c", "3", "-s", "200", "-p", PAD, dst)
        assert out.returncode == 0, out.stdout + out.stderr
        time.sleep(0.2)  # the last reply reaches the capture
    finally:
        dump.terminate()
        dump.wait(10)
    with open(pcap, "rb") as f:
        data = f.read()
    subprocess.run(["rm", "-f", pcap], check=False)
    return data


def _inspect(lab: Lab, host: str, net: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lab.ok(host, "network", "inspect", net))[0]
    return doc


def _echo_requests(lab: Lab, container: str, host: str) -> int:
    out = lab.ok(host, "exec", container, "cat", "/proc/net/snmp")
    lines = [line.split()[1:] for line in out.splitlines() if line.startswith("Icmp:")]
    return dict(zip(lines[0], map(int, lines[1]), strict=True))["InEchos"]


def _forge_from_node3(lab: Lab, net: str, container: str, name: str) -> None:
    """Plain VXLAN datagrams sent from node3's underlay port with node1's source address,
    carrying pings to `container` on node2."""
    node2_mac = json.loads(
        subprocess.run(["ip", "-n", lab.netns_of("node2"), "-j", "link", "show", "eth0"],
                       capture_output=True, text=True, check=True).stdout
    )[0]["address"]  # fmt: skip
    vni = int(_inspect(lab, "node2", net)["Overlay"]["VNI"])
    settings = json.loads(lab.ok("node2", "inspect", container))[0]["NetworkSettings"]
    endpoint = settings["Networks"][net]
    frames = [
        Ether(dst=node2_mac)
        / IP(src=NODE1, dst=NODE2, flags="DF")
        / UDP(sport=50000 + i, dport=4789, chksum=0)
        / VXLAN(vni=vni, flags=0x08)
        / Ether(src="02:42:0a:00:00:99", dst=endpoint["MacAddress"])
        / IP(src="10.0.0.250", dst=endpoint["IPAddress"])
        / ICMP(id=0x4242, seq=i)
        / b"forged"
        for i in range(FORGED)
    ]
    path = f"/tmp/onet-{lab.name}-{name}-forged.pcap"
    wrpcap(path, frames)
    try:
        script = (
            "import sys; from scapy.all import rdpcap, sendp; "
            "sendp(rdpcap(sys.argv[1]), iface='eth0', verbose=False, inter=0.002)"
        )
        subprocess.run(["ip", "netns", "exec", lab.netns_of("node3"), sys.executable, "-c",
                        script, path], check=True, timeout=TIMEOUT)  # fmt: skip
    finally:
        subprocess.run(["rm", "-f", path], check=False)


def test_an_encrypted_overlay_is_unreadable_on_the_wire_and_refuses_forgeries(
    swarm3: Lab,
) -> None:
    lab = swarm3
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "--opt", "encrypted=",
           "secnet")  # fmt: skip
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "plainnet")
    _two_containers(lab, "secnet", "s1", "s2")
    _two_containers(lab, "plainnet", "p1", "p2")

    pattern = bytes.fromhex(PAD) * 64
    plain = _captured_ping(lab, "p1", "p2", "plain")
    sealed = _captured_ping(lab, "s1", "s2", "sealed")
    assert pattern in plain  # the capture works: a plain overlay shows the payload
    assert pattern not in sealed and len(sealed) > 6 * 200

    for host in ("node1", "node2"):
        overlay = _inspect(lab, host, "secnet")["Overlay"]
        assert overlay["Encrypted"] is True and overlay["KeyIds"] == [1]
        assert overlay["DataPlane"]["counters"].get("tx_drop_too_big", 0) == 0
    assert _inspect(lab, "node1", "plainnet")["Overlay"]["Encrypted"] is False
    managers_view = lab.ok("node1", "network", "inspect", "secnet")
    assert '"key"' not in managers_view and "data_keys" not in managers_view

    # Forged datagrams with node1's source address: delivered on the plain overlay...
    before = _echo_requests(lab, "p2", "node2")
    _forge_from_node3(lab, "plainnet", "p2", "plain")
    assert wait_until(lambda: _echo_requests(lab, "p2", "node2") - before >= FORGED)
    # ...and on the encrypted one dropped, counted, and nothing delivered.
    before = _echo_requests(lab, "s2", "node2")
    counters = _inspect(lab, "node2", "secnet")["Overlay"]["DataPlane"]["counters"]
    dropped = int(counters.get("rx_drop_unauthenticated", 0))

    def all_counted() -> bool:
        now = _inspect(lab, "node2", "secnet")["Overlay"]["DataPlane"]["counters"]
        return int(now.get("rx_drop_unauthenticated", 0)) - dropped >= FORGED

    _forge_from_node3(lab, "secnet", "s2", "sealed")
    assert wait_until(all_counted)
    assert _echo_requests(lab, "s2", "node2") == before
    out = lab.cli("node1", "exec", "s1", "ping", "-c", "2", "-W", "2", "s2")
    assert out.returncode == 0, out.stdout + out.stderr  # the overlay still works

    for host, name in (("node1", "s1"), ("node2", "s2"), ("node1", "p1"), ("node2", "p2")):
        lab.ok(host, "rm", "-f", name)
    lab.ok("node1", "network", "rm", "secnet")
    lab.ok("node1", "network", "rm", "plainnet")


def test_an_encrypted_overlay_needs_a_swarm_and_a_valid_option(swarm3: Lab) -> None:
    out = swarm3.cli("node1", "network", "create", "-d", "overlay", "--opt", "encrypted=maybe",
                     "badnet")  # fmt: skip
    assert out.returncode != 0 and "encrypted" in out.stderr
    assert " badnet " not in swarm3.ok("node1", "network", "ls")


def _task_container(lab: Lab, host: str, service: str) -> str | None:
    names = lab.ok(host, "ps", "--format", "{{.Names}}").split()
    return next((n for n in names if n.startswith(f"{service}.")), None)


def test_service_tasks_on_an_encrypted_overlay_never_send_plain(swarm3: Lab) -> None:
    # Tasks attach through the task runner, not `run`: their network must get the keys and the
    # sealing's lower MTU before they start, or they would talk plain (issue 18).
    lab = swarm3
    lab.ok("node1", "network", "create", "-d", "overlay", "--opt", "encrypted", "sealsvc")
    lab.ok("node1", "service", "create", "--name", "sealed", "--replicas", "2",
           "--network", "sealsvc", "--detach", "alpine", "top")  # fmt: skip
    placed: dict[str, str] = {}

    def both_running() -> bool:
        for host in ("node1", "node2", "node3"):
            name = _task_container(lab, host, "sealed")
            if name is not None:
                placed[host] = name
        return len(placed) >= 2

    assert wait_until(both_running, TIMEOUT), placed
    (h1, c1), (h2, c2) = sorted(placed.items())[:2]
    mtu = lab.ok(h1, "exec", c1, "cat", "/sys/class/net/eth0/mtu").strip()
    assert int(mtu) < 1450, mtu  # the sealing's overhead comes off the overlay MTU
    assert _inspect(lab, h1, "sealsvc")["Overlay"]["Encrypted"] is True
    peer = json.loads(lab.ok(h2, "inspect", c2))[0]["NetworkSettings"]["Networks"]["sealsvc"]
    out = lab.cli(h1, "exec", c1, "ping", "-c", "3", "-s", "200", "-p", PAD, peer["IPAddress"])
    assert out.returncode == 0, out.stdout + out.stderr
    lab.ok("node1", "service", "rm", "sealed")
