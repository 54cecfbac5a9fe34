"""Impairments carried out by the hot loop (`Vtep.set_impairments`), on two loopback VTEPs
without root: drops, holds and duplicates toward the impaired peer only, and held datagrams
still leave after the impairment ends (late, never lost). Order, not timing, is asserted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from overlaynet.dataplane.impair import ALL_PEERS, Impairment
from tests.unit.dataplane.test_vtep_loopback import (
    HOST_B,
    MAC_A,
    MAC_B,
    TIMEOUT,
    VNI,
    Pair,
    frame_a_to_b,
)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with ExitStack() as stack:
        p = Pair(stack)
        p.a.start()
        p.b.start()
        yield p


def _counters(pair: Pair) -> dict[str, int]:
    return dict(pair.a.inspect(VNI)["counters"])


def _until_counted(pair: Pair, name: str, count: int) -> None:
    """Wait until the loop (another thread) has decided about the frames sent so far, so the
    control side does not change the impairment under frames still queued in the "TAP"."""
    deadline = time.monotonic() + TIMEOUT
    while _counters(pair).get(name, 0) < count:
        assert time.monotonic() < deadline, _counters(pair)
        time.sleep(0.005)


def test_loss_100_drops_every_datagram_to_the_impaired_peer(pair: Pair) -> None:
    pair.a.set_impairments({HOST_B: Impairment(loss=100)})
    for i in range(20):
        pair.bridge_a.send(frame_a_to_b(b"lost %d" % i))
    _until_counted(pair, "impair_drop_loss", 20)
    pair.a.set_impairments({})
    marker = frame_a_to_b(b"after heal")
    pair.bridge_a.send(marker)
    assert pair.bridge_b.recv(65536) == marker  # the first and only frame to arrive
    assert _counters(pair)["impair_drop_loss"] == 20
    assert pair.a.stats()["impairments"] == {}


def test_an_impairment_toward_another_peer_leaves_this_one_alone(pair: Pair) -> None:
    pair.a.set_impairments({"127.0.0.9": Impairment(loss=100)})
    frame = frame_a_to_b()
    pair.bridge_a.send(frame)
    assert pair.bridge_b.recv(65536) == frame
    assert "impair_drop_loss" not in _counters(pair)
    assert pair.a.stats()["impairments"] == {"127.0.0.9": Impairment(loss=100).to_doc()}


def test_a_delayed_datagram_is_held_and_still_leaves_after_heal(pair: Pair) -> None:
    pair.a.set_impairments({ALL_PEERS: Impairment(delay=300)})
    first = frame_a_to_b(b"held")
    pair.bridge_a.send(first)
    _until_counted(pair, "impair_delayed", 1)
    pair.a.set_impairments({})
    second = frame_a_to_b(b"not held")
    pair.bridge_a.send(second)
    # The second overtakes the held first one, which still arrives: late, never lost.
    assert pair.bridge_b.recv(65536) == second
    assert pair.bridge_b.recv(65536) == first
    assert _counters(pair)["impair_delayed"] == 1


def test_duplicate_100_sends_every_datagram_twice_batched_or_not(pair: Pair) -> None:
    pair.a.set_impairments({ALL_PEERS: Impairment(duplicate=100, seed=1)})
    # Equal-size segments of one TCP flow: the batching path (one GSO send) when they are read
    # in one drain, the lone-frame path otherwise; duplicated either way.
    frames = [
        bytes(
            Ether(src=MAC_A, dst=MAC_B)
            / IP(src="10.0.0.2", dst="10.0.0.3")
            / TCP(sport=4000, dport=5000, flags="A", seq=1000 + 100 * i)
            / (b"x" * 100)
        )
        for i in range(10)
    ]
    for frame in frames:
        pair.bridge_a.send(frame)
    got = [pair.bridge_b.recv(65536) for _ in range(20)]
    assert sorted(got) == sorted(frames * 2)
    _until_counted(pair, "impair_duplicated", 10)
    pair.a.set_impairments({})
    marker = frame_a_to_b(b"marker")
    pair.bridge_a.send(marker)
    assert pair.bridge_b.recv(65536) == marker  # no third copy of anything came before it
    assert _counters(pair)["impair_duplicated"] == 10


def test_no_impairment_holds_nothing(pair: Pair) -> None:
    pair.a.set_impairments({HOST_B: Impairment()})  # empty: installs no model
    frame = frame_a_to_b()
    pair.bridge_a.send(frame)
    assert pair.bridge_b.recv(65536) == frame
    assert not any(k.startswith("impair_") for k in _counters(pair))
    assert pair.a._loop.impaired == {}
