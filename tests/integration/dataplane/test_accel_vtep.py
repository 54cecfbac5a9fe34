"""The C egress drain (`fastegress`) between two `vtep_main` hosts on real namespaces, with
accel on and off: four interleaved TCP streams (the case its parking exists for) arrive whole
both ways, leave in GSO batches, and the VTEP says which drain served it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.dataplane import accel
from overlaynet.lab.testbed import Testbed
from tests.integration.dataplane.paths import TwoVteps, iperf3


@pytest.fixture(scope="module", params=["off", "on"])
def lab(request: pytest.FixtureRequest) -> Iterator[tuple[TwoVteps, str]]:
    mode: str = request.param
    if mode == "on" and accel.load("egress") is None:
        pytest.skip(f"C egress unavailable: {accel.why_not('egress')}")
    with Testbed(f"onet-ca{mode}-") as tb:
        yield TwoVteps(tb, ("--accel", mode), (11, 12)), mode


def iperf(lab: TwoVteps, *, streams: int, reverse: bool) -> dict[str, Any]:
    return iperf3(lab.tb, lab.c1, lab.c2, streams=streams, reverse=reverse)


def test_the_vtep_says_which_egress_drain_serves_the_network(lab: tuple[TwoVteps, str]) -> None:
    the_lab, mode = lab
    shown = the_lab.network(the_lab.h1)["accel"]
    if mode == "on":
        assert shown == "c egress; c ingress"
    else:
        assert shown == "python (--accel off); python ingress (off)"


def test_ping_crosses_both_ways(lab: tuple[TwoVteps, str]) -> None:
    the_lab, _mode = lab
    for src, dst in ((the_lab.c1, the_lab.c2), (the_lab.c2, the_lab.c1)):
        out = the_lab.tb.exec(src.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", dst.ip)
        assert " 0% packet loss" in out


@pytest.mark.parametrize("reverse", [False, True])
def test_four_interleaved_streams_arrive_whole_in_gso_batches(
    lab: tuple[TwoVteps, str], reverse: bool
) -> None:
    the_lab, _mode = lab
    sender = the_lab.h2 if reverse else the_lab.h1
    before = the_lab.network(sender)["counters"]
    result = iperf(the_lab, streams=4, reverse=reverse)
    streams = result["end"]["streams"]
    assert len(streams) == 4
    assert all(s["receiver"]["bytes"] > 0 for s in streams)
    after = the_lab.network(sender)["counters"]
    assert after.get("tx_gso_batches", 0) > before.get("tx_gso_batches", 0)
    assert after.get("tx_error", 0) == before.get("tx_error", 0)
    assert after.get("tx_gso_fallback", 0) == before.get("tx_gso_fallback", 0)
