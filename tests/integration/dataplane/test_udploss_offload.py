"""UDP through two offload-mode VTEPs on real namespaces (issue 15: `iperf3 -u` lost datagrams at
80 % of the sustained rate in offload mode).

Where they were lost, measured (benchmarks/profiles/udploss-offload.md): at the receiving
container's socket (UdpRcvbufErrors), while the receiving VTEP, at nice -10, spent its CPU
writing every datagram to the TAP on its own (one write, one trip through bridge and veth
each). Now consecutive datagrams of one flow reach the TAP as one GSO write that the kernel
cuts up at the receiving socket. The burst here waits in the sending TAP until its VTEP reads
it, so the sending VTEP batches it and the receiving one gets GRO buffers of many: every
datagram must arrive, intact and in order, and the receiving TAP must have taken fewer writes
than there were datagrams (on the code before: exactly one each).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.dataplane import offload
from overlaynet.lab.testbed import Host, Testbed
from tests.integration.dataplane.udp_burst import BURST, TIMEOUT, burst

#: The burst's UDP port (each test module its own).
PORT = 5999


class Pair:
    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.h1, self.h2 = tb.add_host("h1", 71), tb.add_host("h2", 72)
        self.c1 = tb.add_container(self.h1, "c1", 71)
        self.c2 = tb.add_container(self.h2, "c2", 72)
        self.vtep1 = tb.start_vtep(self.h1, [self.h2], extra=("--offload-peer", self.h2.ip))
        self.vtep2 = tb.start_vtep(self.h2, [self.h1], extra=("--offload-peer", self.h1.ip))

    def stats(self, host: Host, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        result: dict[str, Any] = self.tb.vtep_stats(host, process, TIMEOUT)
        return result

    def tap_rx_packets(self, host: Host) -> int:
        """Packets the host's TAP took from its VTEP (one per write)."""
        out = self.tb.exec(host.ns, "ip", "-s", "-j", "link", "show", "on-tap-tdp")
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with Testbed("onet-ul-") as tb:
        p = Pair(tb)
        p.tb.exec(p.c1.ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", p.c2.ip)
        yield p


@pytest.mark.skipif(not offload.USO_WRITES, reason="tun takes USO writes from Linux 6.2 on")
def test_a_udp_burst_through_offload_vteps_arrives_whole_in_merged_tap_writes(pair: Pair) -> None:
    before = pair.tap_rx_packets(pair.h2)
    got = burst(pair.tb, pair.c1, pair.c2, pair.vtep1, PORT)
    writes = pair.tap_rx_packets(pair.h2) - before
    assert got["bad"] == 0
    assert got["seqs"] == list(range(BURST)), f"{BURST - len(got['seqs'])} datagrams missing"
    # Far fewer TAP writes than datagrams: GRO buffers of them left in one GSO write each.
    assert writes < BURST // 2, f"{writes} TAP writes for {BURST} datagrams"
    merged = pair.stats(pair.h2, pair.vtep2)["offload_reassembly"]
    assert merged["offload_udp_merged"] > BURST // 2


def test_a_udp_burst_the_other_way_arrives_whole_too(pair: Pair) -> None:
    got = burst(pair.tb, pair.c2, pair.c1, pair.vtep2, PORT)
    assert got["bad"] == 0
    assert got["seqs"] == list(range(BURST))
