"""Encrypted overlays on real namespaces (`vtep_main --key`): containers talk across it, the
underlay capture shows no payload (a plain overlay beside it does), and a datagram forged with a
member's source address delivers nothing (on the plain overlay it is delivered).

Topology: h1, h2 run `vtep_main` with the same data key (the encrypted overlay), h3, h4 without
(the plain one, same VNI, FDB-isolated); h5 is on the underlay, no member: the forger. The
overlay MTU is the plain one minus the sealing overhead, as the managers set it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import wrpcap

from overlaynet.dataplane.seal import SEAL_OVERHEAD
from overlaynet.dataplane.switching import DEFAULT_MTU
from overlaynet.lab.testbed import Container, Host, Testbed

TIMEOUT = 30.0  # bounds a hang only
#: What `ping -p` fills each request's payload with: found in a capture only if readable.
PATTERN = "5ec2e7da7a5ec2e7da7a0b0c0d0e0f10"
FORGED = 100


class Lab:
    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.h1, self.h2 = tb.add_host("h1", 11), tb.add_host("h2", 12)
        self.h3, self.h4 = tb.add_host("h3", 13), tb.add_host("h4", 14)
        self.h5 = tb.add_host("h5", 15)
        self.c1, self.c2 = tb.add_container(self.h1, "c1", 2), tb.add_container(self.h2, "c2", 3)
        self.c3, self.c4 = tb.add_container(self.h3, "c3", 4), tb.add_container(self.h4, "c4", 5)
        key = ("--key", f"1={secrets.token_hex(16)}")
        self.vtep1 = tb.start_vtep(self.h1, [self.h2], extra=key)
        self.vtep2 = tb.start_vtep(self.h2, [self.h1], extra=key)
        self.vtep3 = tb.start_vtep(self.h3, [self.h4])
        self.vtep4 = tb.start_vtep(self.h4, [self.h3])

    def stats(self, host: Host, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        result: dict[str, Any] = self.tb.vtep_stats(host, process, TIMEOUT)["networks"][
            str(self.tb.vni)
        ]
        return result


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Testbed("onet-tde-", mtu=DEFAULT_MTU - SEAL_OVERHEAD) as tb:
        yield Lab(tb)


def ping(tb: Testbed, src: Container, dst: Container) -> str:
    return tb.exec(src.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-p", PATTERN, "-s", "600",
                   dst.ip)  # fmt: skip


def captured_ping(lab: Lab, src: Container, dst: Container, port: str) -> bytes:
    """The raw capture of the underlay port `port` during a ping from src to dst."""
    tb = lab.tb
    pcap = tb.workdir / f"{port}.pcap"
    dump = tb.popen("ip", "netns", "exec", tb.underlay, "tcpdump", "-i", port, "-U", "-n",
                    "--immediate-mode", "-w", str(pcap), "udp", "port", "4789")  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while not pcap.exists() or pcap.stat().st_size == 0:
            assert time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.05)
        assert " 0% packet loss" in ping(tb, src, dst)
        time.sleep(0.2)  # the last reply's datagram reaches the capture
    finally:
        Testbed.stop(dump)
    return pcap.read_bytes()


def test_tcp_crosses_the_encrypted_overlay_both_ways(lab: Lab) -> None:
    tb = lab.tb
    srv = tb.popen("ip", "netns", "exec", lab.c2.ns, "iperf3", "-s", "-B", lab.c2.ip)
    try:
        deadline = time.monotonic() + TIMEOUT
        while ":5201" not in tb.exec(lab.c2.ns, "ss", "-ltn"):
            assert time.monotonic() < deadline, "iperf3 server did not listen"
            time.sleep(0.05)
        for reverse in ([], ["-R"]):
            out = tb.exec(lab.c1.ns, "iperf3", "-c", lab.c2.ip, "-t", "1", "-J", *reverse,
                          timeout=TIMEOUT)  # fmt: skip
            assert json.loads(out)["end"]["sum_received"]["bytes"] > 0
    finally:
        Testbed.stop(srv)
    counters = lab.stats(lab.h1, lab.vtep1)["counters"]
    assert counters["tx_gso_batches"] > 0  # the sealed bulk left in GSO batches


def test_the_ping_payload_is_unreadable_on_the_underlay_and_readable_when_plain(lab: Lab) -> None:
    pattern = bytes.fromhex(PATTERN)
    sealed = captured_ping(lab, lab.c1, lab.c2, "p11")
    plain = captured_ping(lab, lab.c3, lab.c4, "p13")
    assert pattern in plain  # the capture works and a plain overlay shows the payload
    assert pattern not in sealed
    assert len(sealed) > 6 * 600  # six sealed datagrams at least: it captured the ping
    shown = lab.stats(lab.h1, lab.vtep1)
    assert shown["encrypted"] is True and shown["key_ids"] == [1]


def forged_pings(lab: Lab, src: Host, dst: Host, container: Container) -> list[Ether]:
    """Plain VXLAN datagrams from `src`'s address (a member) carrying pings to `container`."""
    dst_mac = json.loads(lab.tb.exec(dst.ns, "ip", "-j", "link", "show", "eth0"))[0]["address"]
    return [
        Ether(dst=dst_mac)
        / IP(src=src.ip, dst=dst.ip, flags="DF")
        / UDP(sport=50000 + i, dport=4789, chksum=0)
        / VXLAN(vni=lab.tb.vni, flags=0x08)
        / Ether(src="02:42:0a:00:00:09", dst=container.mac)
        / IP(src="10.0.0.9", dst=container.ip)
        / ICMP(id=0x4242, seq=i)
        / b"forged"
        for i in range(FORGED)
    ]


def echo_requests(tb: Testbed, container: Container) -> int:
    """Echo requests the container's kernel received (/proc/net/snmp, Icmp InEchos)."""
    lines = [line.split()[1:] for line in tb.exec(container.ns, "cat", "/proc/net/snmp")
             .splitlines() if line.startswith("Icmp:")]  # fmt: skip
    return dict(zip(lines[0], map(int, lines[1]), strict=True))["InEchos"]


def send_from_h5(lab: Lab, frames: list[Ether], name: str) -> None:
    path = lab.tb.workdir / f"{name}.pcap"
    wrpcap(str(path), frames)
    script = (
        "import sys; from scapy.all import rdpcap, sendp; "
        "sendp(rdpcap(sys.argv[1]), iface='eth0', verbose=False, inter=0.001)"
    )
    lab.tb.exec(lab.h5.ns, sys.executable, "-c", script, str(path), timeout=TIMEOUT)


def test_a_members_spoofed_source_address_delivers_nothing_on_the_encrypted_overlay(
    lab: Lab,
) -> None:
    tb = lab.tb
    # Control: on the plain overlay, every forgery with h3's address reaches c4.
    before = echo_requests(tb, lab.c4)
    send_from_h5(lab, forged_pings(lab, lab.h3, lab.h4, lab.c4), "plain")
    deadline = time.monotonic() + TIMEOUT
    while echo_requests(tb, lab.c4) - before < FORGED:
        assert time.monotonic() < deadline, echo_requests(tb, lab.c4) - before
        time.sleep(0.05)
    # Encrypted: the same forgeries with h1's address reach nothing, and are counted.
    before = echo_requests(tb, lab.c2)
    dropped = lab.stats(lab.h2, lab.vtep2)["counters"].get("rx_drop_unauthenticated", 0)
    send_from_h5(lab, forged_pings(lab, lab.h1, lab.h2, lab.c2), "sealed")
    deadline = time.monotonic() + TIMEOUT
    while lab.stats(lab.h2, lab.vtep2)["counters"]["rx_drop_unauthenticated"] - dropped < FORGED:
        assert time.monotonic() < deadline, "the forgeries were not all counted"
        time.sleep(0.05)
    assert echo_requests(tb, lab.c2) == before
    assert " 0% packet loss" in ping(tb, lab.c1, lab.c2)  # and the overlay still works
