"""A UDP burst through two VTEPs whose C ingress drain delivers the frames it does not merge
(`accel/ingress.c` IN_FRAMES), on real namespaces: the burst, queued in the sending TAP while
that VTEP is stopped so it leaves in GSO trains and arrives in GRO buffers of many, must reach
the receiving container whole, intact and in order, counted on the receiving VTEP (the frames
on the sender's FDB entry, the C drains in `rx_accel_drains`); pings (the latency queue, the
lone-frame socket) pass both ways.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.dataplane import accel
from overlaynet.dataplane.fastingress import DRAIN_COUNTER
from overlaynet.lab.testbed import Host, Testbed
from tests.integration.dataplane.udp_burst import BURST, TIMEOUT, burst

#: The burst's UDP port (each test module its own).
PORT = 5998


class Pair:
    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.h1, self.h2 = tb.add_host("h1", 86), tb.add_host("h2", 87)
        self.c1 = tb.add_container(self.h1, "c1", 86)
        self.c2 = tb.add_container(self.h2, "c2", 87)
        self.vtep1 = tb.start_vtep(self.h1, [self.h2])
        self.vtep2 = tb.start_vtep(self.h2, [self.h1])

    def stats(self, host: Host, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        result: dict[str, Any] = self.tb.vtep_stats(host, process, TIMEOUT)
        return result


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    if accel.load("ingress") is None:
        pytest.skip(f"C helper unavailable: {accel.why_not('ingress')}")
    saved = os.environ.get(accel.ENV_SWITCH)
    os.environ[accel.ENV_SWITCH] = "on"  # the VTEPs inherit it
    try:
        with Testbed("onet-cf-") as tb:
            p = Pair(tb)
            p.tb.exec(p.c1.ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", p.c2.ip)
            yield p
    finally:
        if saved is None:
            os.environ.pop(accel.ENV_SWITCH, None)
        else:
            os.environ[accel.ENV_SWITCH] = saved


def _frames_from(stats: dict[str, Any], tb: Testbed) -> int:
    """Frames the receiving VTEP counted on its FDB entries and as from unknown sources."""
    net = stats["networks"][str(tb.vni)]
    known = sum(int(e.get("rx_frames", 0)) for e in net.get("fdb", []) if isinstance(e, dict))
    return known + int(net["counters"].get("rx_frames_unknown_source", 0))


def test_a_udp_burst_arrives_whole_through_the_c_drain(pair: Pair) -> None:
    before = pair.stats(pair.h2, pair.vtep2)
    got = burst(pair.tb, pair.c1, pair.c2, pair.vtep1, PORT)
    after = pair.stats(pair.h2, pair.vtep2)
    assert got["bad"] == 0
    assert got["seqs"] == list(range(BURST)), f"{BURST - len(got['seqs'])} datagrams missing"
    assert after["counters"][DRAIN_COUNTER] > before["counters"].get(DRAIN_COUNTER, 0)
    assert _frames_from(after, pair.tb) - _frames_from(before, pair.tb) >= BURST


def test_pings_pass_both_ways(pair: Pair) -> None:
    for src, dst in ((pair.c1, pair.c2), (pair.c2, pair.c1)):
        out = pair.tb.exec(src.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", dst.ip)
        assert " 0% packet loss" in out
