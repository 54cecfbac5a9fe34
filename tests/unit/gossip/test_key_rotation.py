"""Gossip key rotation on a live 3-host loopback cluster, memberlist's three steps driven
one host at a time (as a manager would, over the network): install the new key everywhere,
use it everywhere, remove the old one everywhere. Nobody is ever suspected; a host that was
not given the new key is cut off once the old one is removed (`node rm`, issue 18)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from overlaynet.gossip.keyring import Keyring
from overlaynet.gossip.service import GossipService
from overlaynet.wire.gossip import MemberState
from tests.unit.gossip.loopback import (
    HOST,
    K1,
    K2,
    alive,
    drain,
    eventually,
    joined_cluster,
    state,
    suspicions,
)

# Datagrams each host must receive after a step before the next: a few probe rounds (a probe
# and an ack each way every 0.4 s in the lab profile) sealed under the new ring, so a step
# that broke anything would show as a missed ack, and a suspicion.
TRAFFIC_PER_STEP = 10


async def traffic(services: list[GossipService]) -> None:
    """Wait until every host has received TRAFFIC_PER_STEP more datagrams than now."""
    marks = [s.stats().get("datagrams_received", 0) for s in services]
    await eventually(
        lambda: all(
            s.stats().get("datagrams_received", 0) >= mark + TRAFFIC_PER_STEP
            for s, mark in zip(services, marks, strict=True)
        )
    )


async def each(services: list[GossipService], step: Callable[[GossipService], None]) -> None:
    """One host after the other, with traffic in between: steps are never simultaneous."""
    for service in services:
        step(service)
        await traffic(services)


@pytest.mark.slow
async def test_three_hosts_rotate_the_key_and_nobody_is_ever_suspected() -> None:
    async with joined_cluster(Keyring([K1]), Keyring([K1]), Keyring([K1])) as hosts:
        feeds = [h.subscribe() for h in hosts]
        for host in hosts:
            host.install_key(K2)  # harmless alone: it only adds a key that opens
        await traffic(hosts)
        await each(hosts, lambda h: h.use_key(K2))
        await each(hosts, lambda h: h.remove_key(K1))
        for host in hosts:
            assert host.keyring.keys == (K2,)
            assert alive(host) == {"h0", "h1", "h2"}
            assert host.stats()["dropped_unauthenticated"] == 0
        events = [e for feed in feeds for e in drain(feed)]
        assert suspicions(events) == []


@pytest.mark.slow
async def test_a_host_not_given_the_new_key_is_cut_off_when_the_old_one_goes() -> None:
    async with joined_cluster(Keyring([K1]), Keyring([K1]), Keyring([K1])) as hosts:
        kept, removed = hosts[:2], hosts[2]
        for host in kept:
            host.install_key(K2)
        await traffic(kept)
        await each(kept, lambda h: h.use_key(K2))
        for host in kept:
            host.remove_key(K1)
        await eventually(lambda: all(state(h, "h2") == MemberState.DEAD for h in kept))
        await traffic(kept)
        assert all(alive(h) == {"h0", "h1"} for h in kept)
        # It cannot talk its way back in: its push-pull is refused, unauthenticated.
        refused = kept[0].stats()["dropped_unauthenticated"]
        assert await removed.join([f"{HOST}:{kept[0].addr[1]}"]) == 0
        assert kept[0].stats()["dropped_unauthenticated"] > refused
        assert all(state(h, "h2") == MemberState.DEAD for h in kept)
