"""The trio shell on loopback: hosts join, share entries and leave; anything untrustworthy
that arrives is counted and dropped while the service keeps working."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from overlaynet.gossip.config import LAB_CONFIG
from overlaynet.gossip.keyring import MAX_FUTURE_SKEW, Keyring
from overlaynet.gossip.service import GossipService
from overlaynet.gossip.swim import MemberChange
from overlaynet.wire.gossip import Ack, MemberState, encode

K1, K2, K3 = (bytes([i]) * 32 for i in range(1, 4))
HOST = "127.0.0.1"
# Bounds the wait for convergence; well above what loopback needs, so never a speed assertion.
PATIENCE = 15.0
TABLE = "endpoint_table"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((HOST, 0))
        port: int = udp.getsockname()[1]
    return port


async def eventually(check: Callable[[], bool]) -> None:
    with trio.fail_after(PATIENCE):
        while not check():
            await trio.sleep(0.05)


@asynccontextmanager
async def cluster(*rings: Keyring) -> AsyncIterator[list[GossipService]]:
    services = [
        GossipService(f"h{i}", HOST, ring, port=free_port(), config=LAB_CONFIG)
        for i, ring in enumerate(rings)
    ]
    async with trio.open_nursery() as nursery:
        for service in services:
            await nursery.start(service.run)
        yield services
        nursery.cancel_scope.cancel()


def state(service: GossipService, name: str) -> MemberState | None:
    return next((m.state for m in service.members() if m.name == name), None)


async def test_services_join_share_entries_and_see_a_leave() -> None:
    async with cluster(Keyring([K1]), Keyring([K1]), Keyring([K1])) as (a, b, c):
        events = b.subscribe()
        assert await b.join([f"{HOST}:{a.addr[1]}"]) == 1
        assert await c.join([f"{HOST}:{a.addr[1]}"]) == 1
        await eventually(lambda: all(len(s.members()) == 3 for s in (a, b, c)))
        for service in (a, b, c):
            service.join_network("net1")
        a.set_entry(TABLE, "net1", "ep-a", b'{"ip": "10.0.0.2"}')
        await eventually(lambda: "ep-a" in c.entries(TABLE, "net1"))
        assert c.entries(TABLE, "net1")["ep-a"].owner == "h0"
        await c.leave()
        await eventually(lambda: state(a, "h2") == MemberState.LEFT)
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except trio.WouldBlock:
                break
        assert any(isinstance(e, MemberChange) and e.name == "h2" for e in seen)


async def test_garbage_is_counted_and_dropped_and_the_service_keeps_working() -> None:
    async with cluster(Keyring([K1]), Keyring([K1])) as (a, b):
        good = Keyring([K1])
        target = a.addr
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(Keyring([K3]).seal(encode([Ack(1, "x")]), time.time()), target)
            raw.sendto(b"\x01" + b"\x00" * 1500, target)
            raw.sendto(good.seal(b"\x01\x63garbage", time.time()), target)
            raw.sendto(good.seal(encode([Ack(1, "x")]), time.time() + MAX_FUTURE_SKEW * 2), target)
        await eventually(lambda: sum(a.stats().get(k, 0) for k in _DROPS) == 4)
        stats = a.stats()
        assert [stats.get(k) for k in _DROPS] == [1, 1, 1, 1]
        assert await b.join([f"{HOST}:{a.addr[1]}"]) == 1
        await eventually(lambda: state(a, "h1") == MemberState.ALIVE)


_DROPS = ("dropped_unauthenticated", "dropped_oversized", "dropped_malformed", "dropped_future")


async def test_keys_rotate_without_losing_members_and_strangers_stay_out() -> None:
    async with cluster(Keyring([K1, K2]), Keyring([K2, K1]), Keyring([K3])) as (a, b, c):
        assert await b.join([f"{HOST}:{a.addr[1]}"]) == 1
        await eventually(lambda: state(a, "h1") == MemberState.ALIVE)
        assert await c.join([f"{HOST}:{a.addr[1]}"]) == 0
        assert state(a, "h2") is None
        assert a.stats().get("dropped_unauthenticated", 0) >= 1
