"""The lane (`--lane fifo|nice`, issue 15) on real namespaces, TAPs and iperf3: pings are
answered while a TCP stream runs, the stream and a UDP transfer cross whole, the lane served
the urgent fds (its wake-ups are counted) and both threads' counts add up on the FDB entries."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.lab.testbed import Testbed
from tests.integration.dataplane.paths import TwoVteps, iperf3, ping

TIMEOUT = 30.0  # bounds a hang only


@pytest.fixture(scope="module", params=["fifo", "nice"])
def lab(request: pytest.FixtureRequest) -> Iterator[TwoVteps]:
    with Testbed(f"onet-ln{request.param[0]}-") as tb:
        yield TwoVteps(tb, ("--lane", request.param), (21, 22))


def test_pings_are_answered_by_the_lane_while_a_stream_runs(lab: TwoVteps) -> None:
    ping(lab.tb, lab.c1, lab.c2, count=2)  # ARP settled
    before = lab.stats(lab.h1)["counters"].get("lane_wakeups", 0)
    srv = lab.tb.popen("ip", "netns", "exec", lab.c2.ns, "iperf3", "-s", "-1", "-B", lab.c2.ip)
    client: subprocess.Popen[bytes] | None = None
    try:
        lab.tb.exec(lab.c2.ns, "sh", "-c", "for i in $(seq 100); do ss -ltn | grep -q :5201 "
                    "&& exit 0; sleep 0.05; done; exit 1")  # fmt: skip
        client = lab.tb.popen(
            "ip", "netns", "exec", lab.c1.ns, "iperf3", "-c", lab.c2.ip, "-t", "3"
        )
        out = lab.tb.exec(
            lab.c1.ns, "ping", "-c", "20", "-i", "0.05", "-W", "2", lab.c2.ip, timeout=TIMEOUT
        )
        assert client.wait(TIMEOUT) == 0
    finally:
        if client is not None and client.poll() is None:
            Testbed.stop(client)
        Testbed.stop(srv)
    assert " 0% packet loss" in out
    after = lab.stats(lab.h1)["counters"]
    assert after.get("lane_wakeups", 0) - before >= 20  # at least one per echo request


def _frames(doc: dict[str, Any], vni: str, key: str) -> int:
    """Frames sent (`key` tx_frames) or received (rx_frames) by the network: on the FDB
    entries, and flooded (one peer here) or from an unknown source."""
    network = doc["networks"][vni]
    extra = (
        ("tx_flood", "tx_unknown_unicast") if key == "tx_frames" else ("rx_frames_unknown_source",)
    )
    counters = network["counters"]
    return sum(int(r[key]) for r in network["fdb"]) + sum(int(counters.get(k, 0)) for k in extra)


def _settled(lab: TwoVteps, vni: str) -> tuple[int, int, int]:
    """h1's frames sent, h2's received and h1's lane wake-ups, read until two readings in a
    row agree: a frame in flight, or one sent between the two VTEPs' readings (iperf3's
    closing ACK, a neighbour solicitation), would show as a difference of one."""
    last: tuple[int, int, int] | None = None
    for _ in range(20):
        sent = lab.stats(lab.h1)
        now = (
            _frames(sent, vni, "tx_frames"),
            _frames(lab.stats(lab.h2), vni, "rx_frames"),
            int(sent["counters"].get("lane_wakeups", 0)),
        )
        if now[:2] == (last or (-1, -1, -1))[:2]:
            return now
        last = now
    raise AssertionError(f"the counters never settled: {last}")


def test_a_udp_transfer_crosses_through_the_lane_and_every_frame_is_counted_once(
    lab: TwoVteps,
) -> None:
    ping(lab.tb, lab.c1, lab.c2, count=1)
    vni = str(lab.tb.vni)
    tx0, rx0, wakeups0 = _settled(lab, vni)
    result = iperf3(lab.tb, lab.c1, lab.c2, extra=("-u", "-b", "50M", "-l", "1200"))
    packets = result["end"]["sum"]["packets"]
    tx, rx, wakeups = _settled(lab, vni)
    assert packets > 0
    # Everything h1 sent (the datagrams through its lane, iperf3's TCP control connection
    # through its main loop), counted by both threads, is what h2 counted: 50 Mb/s over
    # veths loses nothing.
    assert tx - tx0 > packets
    assert rx - rx0 == tx - tx0
    assert wakeups > wakeups0
