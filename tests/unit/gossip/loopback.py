"""Helpers for gossip services on loopback: a cluster of live GossipServices, bounded waits,
and a stranger's raw sockets. No root needed: everything stays on 127.0.0.1."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from overlaynet.gossip.config import LAB_CONFIG
from overlaynet.gossip.keyring import Keyring
from overlaynet.gossip.service import GossipService
from overlaynet.gossip.swim import MemberChange
from overlaynet.wire.gossip import MemberState

K1, K2, K3 = (bytes([i]) * 32 for i in range(1, 4))
HOST = "127.0.0.1"
# Bounds the wait for convergence; well above what loopback needs, so never a speed assertion.
PATIENCE = 15.0
TABLE = "endpoint_table"


# Below Linux's default ephemeral range (32768-60999): a port picked here is never handed to
# an outgoing connection meanwhile, which made "address in use" failures under load.
_PORTS = range(20000, 32000)
_picker = random.Random()


def free_port() -> int:
    """A port free for both UDP and TCP on loopback (gossip binds both)."""
    while True:
        port = _picker.choice(_PORTS)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((HOST, port))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind((HOST, port))
        except OSError:
            continue
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


@asynccontextmanager
async def joined_cluster(*rings: Keyring) -> AsyncIterator[list[GossipService]]:
    """A cluster whose members all joined through the first and see each other alive."""
    async with cluster(*rings) as services:
        seed = f"{HOST}:{services[0].addr[1]}"
        for service in services[1:]:
            assert await service.join([seed]) == 1
        names = {s.node.name for s in services}
        await eventually(lambda: all(alive(s) == names for s in services))
        yield services


def alive(service: GossipService) -> set[str]:
    return {m.name for m in service.members() if m.state == MemberState.ALIVE}


def state(service: GossipService, name: str) -> MemberState | None:
    return next((m.state for m in service.members() if m.name == name), None)


def drain(channel: trio.MemoryReceiveChannel[object]) -> list[object]:
    seen = []
    while True:
        try:
            seen.append(channel.receive_nowait())
        except trio.WouldBlock:
            return seen


def suspicions(events: list[object]) -> list[MemberChange]:
    """Every time a member was seen as anything but alive."""
    return [e for e in events if isinstance(e, MemberChange) and e.new != MemberState.ALIVE]
