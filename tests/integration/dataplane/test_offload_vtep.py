"""Offload mode on real namespaces (issue 15): h1 and h2 run `vtep_main` in offload mode toward
each other, h3 is a Linux kernel vxlan device that h5 (offload mode, h2 its offload peer) has as
a static peer (RFC 7348).

- h1 <-> h2: ping and TCP both ways; the bulk crosses as offload datagrams on udp/4799, each at
  most 1500 octets on an underlay port without UDP segmentation (as a NIC would send them), no
  IP fragments, never on 4789; written to the TAP whole on the far side.
- h5 <-> h3 (kernel VTEP): ping and TCP both ways on the RFC wire, the kernel's inner checksums
  all good; h5's TAP has its offloads off while that RFC-only peer is there (the kernel
  segments and checksums before the TAP: no super-frame is finished in Python).
- An offload datagram sent to the kernel VTEP's port 4789 is dropped by it, never delivered.
- h4 runs `--offload` with the kernel VTEP as its peer (a mistake): the kernel host answers
  port unreachable, h4 gives that peer RFC 7348 and TCP works.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

from overlaynet.dataplane import accel
from overlaynet.dataplane.fastoffload import DRAIN_COUNTER
from overlaynet.lab.testbed import Container, Host, Testbed
from overlaynet.wire import chunks
from tests.integration.dataplane.paths import iperf3, ping
from tests.integration.dataplane.test_fastingress import accel_switch

TIMEOUT = 30.0  # bounds a hang only


class Offload:
    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.mode = "c"
        self.h1, self.h2, self.h3 = (tb.add_host(f"h{i}", 10 + i) for i in (1, 2, 3))
        self.c1 = tb.add_container(self.h1, "c1", 2)
        self.c2 = tb.add_container(self.h2, "c2", 3)
        self.c3 = tb.add_container(self.h3, "c3", 4)
        # h4: `--offload` toward the kernel VTEP by mistake: refused, it falls back to RFC.
        self.h4 = tb.add_host("h4", 14)
        self.c4 = tb.add_container(self.h4, "c4", 5)
        # h5: offload mode with one offload peer (h2) and the kernel VTEP as a static peer.
        self.h5 = tb.add_host("h5", 15)
        self.c5 = tb.add_container(self.h5, "c5", 6)
        tb.kernel_vxlan(self.h3, [self.h4, self.h5])
        self.vtep1 = tb.start_vtep(self.h1, [self.h2], extra=("--offload-peer", self.h2.ip))
        self.vtep5 = tb.start_vtep(
            self.h5, [self.h2, self.h3], extra=("--offload-peer", self.h2.ip)
        )
        self.vtep2 = tb.start_vtep(self.h2, [self.h1], extra=("--offload",))
        self.vtep4 = tb.start_vtep(self.h4, [self.h3], extra=("--offload",))

    def stats(self, host: Host, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        result: dict[str, Any] = self.tb.vtep_stats(host, process, TIMEOUT)
        return result

    def counters(self, host: Host, process: subprocess.Popen[bytes]) -> dict[str, int]:
        doc = self.stats(host, process)["networks"][str(self.tb.vni)]
        result: dict[str, int] = doc["counters"]
        return result


@pytest.fixture(scope="module", params=["c", "python"])
def offload(request: pytest.FixtureRequest) -> Iterator[Offload]:
    """The lab with the VTEPs' C drains (the default when they build) or, OVERLAYNET_ACCEL=off
    (inherited by the VTEPs), the Python ones: every test here holds for both."""
    mode: str = request.param
    with accel_switch(mode, "offload"), Testbed("onet-of-" if mode == "c" else "onet-ofpy-") as tb:
        lab = Offload(tb)
        lab.mode = mode
        yield lab


def test_the_offload_drain_in_use_is_the_one_asked_for(offload: Offload) -> None:
    # TCP: a ping's frames take the RFC wire (nothing for the TAP's offloads to do).
    assert iperf(offload.tb, offload.c1, offload.c2) > 0
    host = offload.stats(offload.h2, offload.vtep2)["counters"]
    if offload.mode == "c":
        assert host.get(DRAIN_COUNTER, 0) > 0
    else:
        assert DRAIN_COUNTER not in host


def iperf(tb: Testbed, client: Container, server: Container) -> int:
    """Octets a one-second iperf3 TCP transfer delivered."""
    return int(iperf3(tb, client, server)["end"]["sum_received"]["bytes"])


def test_the_offload_vtep_says_which_wire_each_peer_gets(offload: Offload) -> None:
    doc = offload.stats(offload.h5, offload.vtep5)["networks"][str(offload.tb.vni)]
    assert doc["offload"]["enabled"] is True
    assert doc["offload"]["wire"] == {offload.h2.ip: "offload", offload.h3.ip: "rfc7348"}
    tap = f"segmented by the kernel for rfc7348 peers {offload.h3.ip}"
    assert doc["offload"]["tap"] == tap
    doc = offload.stats(offload.h1, offload.vtep1)["networks"][str(offload.tb.vni)]
    assert doc["offload"]["wire"] == {offload.h2.ip: "offload"}
    assert doc["offload"]["tap"] == "tso"


def test_ping_and_tcp_both_ways_between_offload_vteps_cross_whole(offload: Offload) -> None:
    tb = offload.tb
    before1 = offload.counters(offload.h1, offload.vtep1)
    before2 = offload.counters(offload.h2, offload.vtep2)
    assert " 0% packet loss" in ping(tb, offload.c1, offload.c2)
    assert " 0% packet loss" in ping(tb, offload.c2, offload.c1)
    assert iperf(tb, offload.c1, offload.c2) > 0
    assert iperf(tb, offload.c2, offload.c1) > 0
    after1 = offload.counters(offload.h1, offload.vtep1)
    after2 = offload.counters(offload.h2, offload.vtep2)
    for before, after in ((before1, after1), (before2, after2)):
        assert after.get("tx_offload_frames", 0) > before.get("tx_offload_frames", 0)
        assert after.get("rx_offload_frames", 0) > before.get("rx_offload_frames", 0)


def test_ping_and_tcp_both_ways_with_the_kernel_vtep_on_the_rfc_wire(offload: Offload) -> None:
    tb = offload.tb
    snmp_before = _tcp_counters(tb, offload.c3)
    assert " 0% packet loss" in ping(tb, offload.c5, offload.c3)
    assert " 0% packet loss" in ping(tb, offload.c3, offload.c5)
    assert iperf(tb, offload.c5, offload.c3) > 0
    assert iperf(tb, offload.c3, offload.c5) > 0
    for client, server in ((offload.c5, offload.c3), (offload.c3, offload.c5)):
        assert udp_datagrams(tb, client, server) > 0
    after = offload.counters(offload.h5, offload.vtep5)
    # h5's TAP had its offloads off: the kernel finished every frame, Python none.
    assert after["tap_tso_off"] >= 1
    assert after.get("tx_offload_finished", 0) == 0
    assert _tcp_counters(tb, offload.c3)["InCsumErrors"] == snmp_before["InCsumErrors"]


def udp_datagrams(tb: Testbed, client: Container, server: Container) -> int:
    """UDP datagrams a one-second iperf3 -u at 20 Mbit/s delivered (their checksums left
    partial by the container and finished by the VTEP on the way to a kernel VTEP)."""
    end = iperf3(tb, client, server, extra=("-u", "-b", "20M"))["end"]["sum"]
    return int(end["packets"]) - int(end["lost_packets"])


def _tcp_counters(tb: Testbed, c: Container) -> dict[str, int]:
    lines = [line.split()[1:] for line in tb.exec(c.ns, "cat", "/proc/net/snmp").splitlines()
             if line.startswith("Tcp:")]  # fmt: skip
    return dict(zip(lines[0], map(int, lines[1]), strict=True))


def test_bulk_crosses_as_offload_datagrams_within_the_mtu(offload: Offload) -> None:
    """With UDP segmentation off on h1's underlay port (what a NIC puts on the wire), the
    bulk toward h2 is offload datagrams of at most 1500 octets, not fragmented, with the
    chunk header (I flag clear), and no TCP bulk crosses as VXLAN."""
    tb = offload.tb
    offloads = ("tx", "tx-udp-segmentation")
    tb.exec(offload.h1.ns, "ethtool", "-K", "eth0", *(f for o in offloads for f in (o, "off")))
    pcap = tb.workdir / "offload.pcap"
    try:
        dump = tb.popen("ip", "netns", "exec", tb.underlay, "tcpdump", "-i", "p11", "-U", "-n",
                        "-c", "300", "-w", str(pcap), "udp", "and", "src", "host",
                        offload.h1.ip, "and", "dst", "host", offload.h2.ip, "and",
                        "greater", "1000")  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while not pcap.exists() or pcap.stat().st_size == 0:
            assert time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.05)
        iperf(tb, offload.c1, offload.c2)
        dump.wait(TIMEOUT)
    finally:
        tb.exec(offload.h1.ns, "ethtool", "-K", "eth0", *(f for o in offloads for f in (o, "on")))
    packets = list(rdpcap(str(pcap)))
    assert len(packets) == 300
    cut = 0
    for packet in packets:
        assert packet[IP].len <= 1500 and packet[IP].flags.DF and not packet[IP].frag
        assert packet[UDP].dport == chunks.OFFLOAD_PORT, packet.summary()
        payload = bytes(packet[UDP].payload)
        assert payload[:4] == chunks.PREFIX
        chunk = chunks.decode(payload)
        assert chunk.vni == tb.vni and chunk.index < chunk.count
        cut += chunk.count > 1
    # The bulk is super-frames cut into chunks; a lone TCP segment of 1000 octets or more that
    # the TAP handed over by itself (the transfer's tail, a small window) is one chunk, as it
    # should be: seen once in 300 in a full run.
    assert cut >= 0.9 * len(packets), cut


def test_an_offload_datagram_sent_to_a_kernel_vtep_is_dropped(offload: Offload) -> None:
    """Even sent to 4789, an offload chunk is not VXLAN to Linux (I flag clear): the kernel
    VTEP decapsulates none of it (nor of those sent to the offload port)."""
    tb = offload.tb
    frame = bytes(
        Ether(src="02:42:0a:00:00:02", dst="ff:ff:ff:ff:ff:ff")
        / IP(src=offload.c1.ip, dst=offload.c3.ip)
        / UDP(sport=9, dport=9)
        / b"offload chunk"
    )
    datagram = chunks.encode_header(tb.vni, 1, 0, 1) + frame
    script = (
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"[s.sendto(bytes.fromhex(sys.argv[1]), ('{offload.h3.ip}', int(p))) "
        "for p in sys.argv[2:] for _ in range(5)]"
    )
    before = _rx_packets(tb, offload.h3)
    tb.exec(offload.h1.ns, "python3", "-c", script, datagram.hex(), "4789",
            str(chunks.OFFLOAD_PORT))  # fmt: skip
    time.sleep(0.3)  # anything delivered would be counted by now
    assert _rx_packets(tb, offload.h3) == before
    # The same frame as VXLAN is delivered: the count can move.
    vxlan = bytes(VXLAN(vni=tb.vni, flags=0x08)) + frame
    tb.exec(offload.h1.ns, "python3", "-c", script, vxlan.hex(), "4789")
    deadline = time.monotonic() + TIMEOUT
    while _rx_packets(tb, offload.h3) < before + 5:
        assert time.monotonic() < deadline, "the VXLAN copies were not delivered"
        time.sleep(0.05)


def _rx_packets(tb: Testbed, host: Host) -> int:
    """Frames the kernel VTEP decapsulated and handed to its bridge."""
    doc = json.loads(tb.exec(host.ns, "ip", "-s", "-j", "link", "show", "vx0"))
    return int(doc[0]["stats64"]["rx"]["packets"])


def test_offload_toward_a_kernel_vtep_by_mistake_falls_back_to_the_rfc_wire(
    offload: Offload,
) -> None:
    tb = offload.tb
    assert " 0% packet loss" in ping(tb, offload.c4, offload.c3)
    assert iperf(tb, offload.c4, offload.c3) > 0  # its first SYN went as offload, refused
    assert iperf(tb, offload.c3, offload.c4) > 0
    doc = offload.stats(offload.h4, offload.vtep4)
    assert doc["counters"]["offload_peer_refused"] >= 1
    wire = doc["networks"][str(tb.vni)]["offload"]["wire"]
    assert wire == {offload.h3.ip: "rfc7348 (offload refused)"}
    assert _tcp_counters(tb, offload.c3)["InCsumErrors"] == 0


def test_accel_off_flag_keeps_offload_mode_in_python() -> None:
    """`vtep_main --accel off` (not only OVERLAYNET_ACCEL=off) keeps the offload drain in
    Python, and the network says so: the flag reaches the offload helper too."""
    saved = os.environ.pop(accel.ENV_SWITCH, None)
    try:
        with Testbed("onet-ofoff-") as tb:
            h1, h2 = tb.add_host("h1", 11), tb.add_host("h2", 12)
            c1, c2 = tb.add_container(h1, "c1", 2), tb.add_container(h2, "c2", 3)
            tb.start_vtep(h1, [h2], extra=("--offload",))
            vtep2 = tb.start_vtep(h2, [h1], extra=("--offload", "--accel", "off"))
            assert iperf(tb, c1, c2) > 0
            stats = tb.vtep_stats(h2, vtep2, TIMEOUT)
            assert DRAIN_COUNTER not in stats["counters"]
            assert "python offload (off)" in stats["networks"][str(tb.vni)]["accel"]
    finally:
        if saved is not None:
            os.environ[accel.ENV_SWITCH] = saved
