"""Offload mode's receive path with the C drain (`fastoffload`) on (the default when it builds)
and off (OVERLAYNET_ACCEL=off), on real namespaces: the drain in use is the one asked for, TCP
and UDP (merged into GSO writes) cross both ways, and a TCP stream arrives octet for octet both
ways (a super-frame is written with its virtio-net header, NEEDS_CSUM: the kernel does not check
its payload again, so a reassembly that mixed up chunks would go unnoticed by TCP).

Topology (one per mode): h1 and h2 run `vtep_main --offload`, offload peers of each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.dataplane.fastoffload import DRAIN_COUNTER
from overlaynet.lab.testbed import Host, Testbed
from tests.integration.dataplane.paths import iperf3, ping
from tests.integration.dataplane.test_fastingress import (
    accel_switch,
    checked_stream,
    expected_stream,
)

TIMEOUT = 30.0  # bounds a hang only


class Lab:
    def __init__(self, tb: Testbed, mode: str) -> None:
        self.tb, self.mode = tb, mode
        self.h1, self.h2 = tb.add_host("h1", 11), tb.add_host("h2", 12)
        self.c1 = tb.add_container(self.h1, "c1", 2)
        self.c2 = tb.add_container(self.h2, "c2", 3)
        self.vtep1 = tb.start_vtep(self.h1, [self.h2], extra=("--offload",))
        self.vtep2 = tb.start_vtep(self.h2, [self.h1], extra=("--offload",))

    def stats(self, host: Host) -> dict[str, Any]:
        process = self.vtep1 if host is self.h1 else self.vtep2
        result: dict[str, Any] = self.tb.vtep_stats(host, process, TIMEOUT)
        return result

    def counters(self, host: Host) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Host, network and reassembly counters."""
        stats = self.stats(host)
        net = stats["networks"][str(self.tb.vni)]["counters"]
        return stats["counters"], net, stats["offload_reassembly"]


@pytest.fixture(scope="module", params=["c", "python"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    mode: str = request.param
    with accel_switch(mode, "offload"), Testbed("onet-ofc-" if mode == "c" else "onet-ofp-") as tb:
        yield Lab(tb, mode)


def test_the_offload_drain_in_use_is_the_one_asked_for(lab: Lab) -> None:
    assert " 0% packet loss" in ping(lab.tb, lab.c1, lab.c2)
    result = iperf3(lab.tb, lab.c2, lab.c1)
    assert result["end"]["sum_received"]["bytes"] > 0
    host, net, reassembly = lab.counters(lab.h1)
    assert net["rx_offload_frames"] > 0 and reassembly["offload_frames"] > 0
    if lab.mode == "c":
        assert host.get(DRAIN_COUNTER, 0) > 0
    else:
        assert DRAIN_COUNTER not in host


@pytest.mark.parametrize("reverse", [False, True])
def test_tcp_crosses_whole_both_ways(lab: Lab, reverse: bool) -> None:
    _h, before, _r = lab.counters(lab.h1)
    result = iperf3(lab.tb, lab.c2, lab.c1, reverse=reverse)
    assert result["end"]["sum_received"]["bytes"] > 0
    _h, after, _r = lab.counters(lab.h1)
    assert after["rx_offload_frames"] > before.get("rx_offload_frames", 0)


def test_udp_datagrams_arrive_and_runs_are_merged(lab: Lab) -> None:
    _h, _n, before = lab.counters(lab.h1)
    result = iperf3(lab.tb, lab.c2, lab.c1, extra=("-u", "-b", "200M", "-l", "1400"))
    summary = result["end"]["sum"]
    assert summary["packets"] > 0
    assert summary["lost_packets"] <= summary["packets"] // 10  # a paced stream, not a flood
    _h, _n, after = lab.counters(lab.h1)
    assert after["offload_frames"] > before.get("offload_frames", 0)
    assert after.get("offload_udp_merged_writes", 0) > before.get("offload_udp_merged_writes", 0)


@pytest.mark.parametrize("direction", ["h2->h1", "h1->h2"])
def test_a_stream_arrives_octet_for_octet(lab: Lab, direction: str) -> None:
    sender, receiver, host = (
        (lab.c2, lab.c1, lab.h1) if direction == "h2->h1" else (lab.c1, lab.c2, lab.h2)
    )
    _h, before, _r = lab.counters(host)
    assert checked_stream(lab.tb, sender, receiver) == expected_stream()
    _h, after, _r = lab.counters(host)
    assert after["rx_offload_frames"] > before.get("rx_offload_frames", 0)
    assert after.get("rx_drop_tap_error", 0) == before.get("rx_drop_tap_error", 0)


def test_no_vtep_died(lab: Lab) -> None:
    for process in (lab.vtep1, lab.vtep2):
        assert process.poll() is None, (process.stderr.read() if process.stderr else b"")[-2000:]
