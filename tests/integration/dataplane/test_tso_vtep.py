"""A plain RFC 7348 network whose TAP hands over TCP super-frames (TSO, partial checksums) to
the C egress drain, which cuts them (`accel/egress.c`), on real namespaces: the TAP's offloads
are on while the C drain serves it, super-frames are cut in C and nothing is left to Python, the
underlay carries only RFC 7348 datagrams (each within 1500 octets, flags 0x08, a valid inner TCP
checksum) as a NIC would send them, a stream arrives octet for octet both ways, and with accel
off the TAP's offloads stay off."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

from overlaynet.dataplane import accel
from overlaynet.lab.testbed import Host, Testbed
from tests.integration.dataplane.paths import TwoVteps, iperf3
from tests.integration.dataplane.test_fastingress import checked_stream, expected_stream

TIMEOUT = 30.0  # bounds a hang only
TAP = "on-tap-tdp"  # Testbed.start_vtep's TAP
#: Segments of the capture: a few GSO batches' worth.
CAPTURED = 300


class Lab(TwoVteps):
    def __init__(self, tb: Testbed, mode: str) -> None:
        super().__init__(tb, ("--accel", mode), (11, 12))
        self.mode = mode

    def counters(self, host: Host) -> dict[str, int]:
        counters: dict[str, int] = self.network(host)["counters"]
        return counters

    def tso(self, host: Host) -> str:
        """The TAP's tcp-segmentation-offload state as ethtool shows it."""
        out = self.tb.exec(host.ns, "ethtool", "-k", TAP)
        line = next(x for x in out.splitlines() if x.startswith("tcp-segmentation-offload:"))
        return line.split(":", 1)[1].strip()


@pytest.fixture(scope="module", params=["on", "off"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    mode: str = request.param
    if mode == "on" and accel.load("egress") is None:
        pytest.skip(f"C egress unavailable: {accel.why_not('egress')}")
    with Testbed(f"onet-ts{mode}-") as tb:
        yield Lab(tb, mode)


def delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def test_the_tap_hands_over_super_frames_only_to_the_c_drain(lab: Lab) -> None:
    before = lab.counters(lab.h1)
    result = iperf3(lab.tb, lab.c1, lab.c2)
    after = lab.counters(lab.h1)
    assert result["end"]["sum_received"]["bytes"] > 0
    assert lab.tso(lab.h1) == ("on" if lab.mode == "on" else "off")
    if lab.mode == "on":
        assert delta(before, after, "tx_tso_segmented") > 0
        assert delta(before, after, "tx_tso_segments") > delta(before, after, "tx_tso_segmented")
        assert delta(before, after, "tx_gso_batches") > 0
        # Everything was cut in C: nothing fell back to the Python segmentation.
        assert delta(before, after, "tx_offload_finished") == 0
    else:
        assert delta(before, after, "tx_tso_segmented") == 0


def test_super_frames_cross_as_rfc7348_datagrams_as_a_nic_would_send_them(lab: Lab) -> None:
    """With UDP segmentation and checksum offload off on h1's underlay port, the kernel cuts
    every GSO batch in software, as a NIC would on the wire: each datagram at most 1500
    octets, flags 0x08, and an inner TCP segment within the overlay MTU whose checksum is
    correct (C finished it)."""
    tb = lab.tb
    offloads = ("tx", "tx-udp-segmentation")
    tb.exec(lab.h1.ns, "ethtool", "-K", "eth0", *(f for o in offloads for f in (o, "off")))
    pcap = tb.workdir / "tso.pcap"
    try:
        dump = tb.popen("ip", "netns", "exec", tb.underlay, "tcpdump", "-i", "p11", "-U", "-n",
                        "-c", str(CAPTURED), "-w", str(pcap), "udp", "port", "4789", "and",
                        "src", "host", lab.h1.ip, "and", "greater", "1000")  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while not pcap.exists() or pcap.stat().st_size == 0:
            assert time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.05)
        before = lab.counters(lab.h1)
        iperf3(tb, lab.c1, lab.c2)
        after = lab.counters(lab.h1)
        dump.wait(TIMEOUT)
    finally:
        tb.exec(lab.h1.ns, "ethtool", "-K", "eth0", *(f for o in offloads for f in (o, "on")))
    if lab.mode == "on":
        assert delta(before, after, "tx_tso_segmented") > 0
    packets = list(rdpcap(str(pcap)))
    assert len(packets) == CAPTURED
    for packet in packets:
        assert packet[IP].len <= 1500 and packet[IP].flags.DF
        assert packet[VXLAN].flags == 0x08 and packet[VXLAN].vni == tb.vni
        inner = packet[VXLAN].payload
        assert isinstance(inner, Ether) and inner.haslayer(TCP)
        assert inner[IP].len <= tb.mtu
        reference = inner[IP].copy()
        del reference[IP].chksum
        del reference[TCP].chksum
        rebuilt = IP(bytes(reference))
        assert rebuilt[IP].chksum == inner[IP].chksum
        assert rebuilt[TCP].chksum == inner[TCP].chksum


@pytest.mark.parametrize("direction", ["h1->h2", "h2->h1"])
def test_a_stream_arrives_octet_for_octet(lab: Lab, direction: str) -> None:
    sender, receiver, host = (
        (lab.c1, lab.c2, lab.h1) if direction == "h1->h2" else (lab.c2, lab.c1, lab.h2)
    )
    before = lab.counters(host)
    assert checked_stream(lab.tb, sender, receiver) == expected_stream()
    after = lab.counters(host)
    if lab.mode == "on":
        assert delta(before, after, "tx_tso_segmented") > 0
