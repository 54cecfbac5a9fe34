"""Hostile TCP peers against a live service on loopback: a reset mid-frame, a garbage length,
a slow sender and an authenticated peer naming an address that is not one each end their own
connection, are counted once under their reason, and the service keeps serving members."""

from __future__ import annotations

import random
import socket
import struct
import time

import trio

from overlaynet.gossip.config import LAB_CONFIG
from overlaynet.gossip.keyring import Keyring
from overlaynet.gossip.node import GossipNode
from overlaynet.gossip.service import GossipService
from overlaynet.wire.gossip import MemberRecord, MemberState, PushPullHeader, encode
from tests.unit.gossip.loopback import HOST, K1, alive, cluster, eventually, free_port

RING = Keyring([K1])
_FRAME = struct.Struct("!I")
# How often the slow sender trickles a byte: well inside any per-read timeout.
TRICKLE = 0.2


async def still_serves(a: GossipService, b: GossipService) -> None:
    """The positive control after each attack: a member joins and both see each other."""
    assert await b.join([f"{HOST}:{a.addr[1]}"]) == 1
    await eventually(lambda: alive(a) == alive(b) == {"h0", "h1"})


async def nothing_back(stream: trio.SocketStream) -> bool:
    """The server closed without a byte of reply (a close with our bytes unread is a RST)."""
    try:
        return await stream.receive_some(100) == b""
    except trio.BrokenResourceError:
        return True


def reset_mid_frame(addr: tuple[str, int]) -> None:
    """Announce 1000 bytes, send 10, then close with SO_LINGER 0: the server sees a RST."""
    with socket.create_connection(addr) as raw:
        raw.sendall(_FRAME.pack(1000) + b"x" * 10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_a_reset_mid_frame_ends_only_its_connection() -> None:
    async with cluster(RING, RING) as (a, b):
        reset_mid_frame(a.addr)
        await eventually(lambda: a.stats().get("push_pull_errors") == 1)
        await still_serves(a, b)
        assert a.stats().get("push_pull_crashes", 0) == 0


async def test_a_garbage_length_is_counted_once_as_oversized() -> None:
    """Issue 18: an oversized frame was counted twice (oversized and malformed)."""
    async with cluster(RING, RING) as (a, b):
        stream = await trio.open_tcp_stream(*a.addr)
        async with stream:
            await stream.send_all(_FRAME.pack(0xFFFFFFFF) + b"junk")
            assert await nothing_back(stream)
        stats = a.stats()
        assert (stats["dropped_oversized"], stats["dropped_malformed"]) == (1, 0)
        await still_serves(a, b)


async def test_a_frame_shorter_than_its_envelope_is_malformed() -> None:
    async with cluster(RING, RING) as (a, b):
        stream = await trio.open_tcp_stream(*a.addr)
        async with stream:
            await stream.send_all(_FRAME.pack(5) + b"12345")
            assert await nothing_back(stream)
        assert a.stats()["dropped_malformed"] == 1
        await still_serves(a, b)


async def test_a_slow_sender_is_cut_at_the_deadline_for_its_whole_frame_and_counted() -> None:
    """One byte every TRICKLE keeps any per-read timer alive; the deadline is per exchange."""
    async with cluster(RING, RING) as (a, b):
        stream = await trio.open_tcp_stream(*a.addr)
        async with stream:
            await stream.send_all(_FRAME.pack(100))  # a plausible length, then a trickle
            closed = False
            # Bounded: far more bytes than the deadline lets through, never an endless loop.
            for _ in range(200):
                try:
                    await stream.send_all(b"\x00")
                except trio.BrokenResourceError:
                    closed = True
                    break
                with trio.move_on_after(TRICKLE):
                    if await stream.receive_some(100) == b"":
                        closed = True
                        break
            assert closed
        assert a.stats()["dropped_idle_timeout"] == 1
        await still_serves(a, b)


async def test_an_authenticated_peer_naming_a_bad_address_cannot_end_the_service() -> None:
    """A key holder's push-pull lists a member at "bad\\0host": sending to it raised TypeError
    (not OSError) and took the whole service down; now the record is malformed."""
    async with cluster(RING, RING) as (a, b):
        evil = GossipNode("evil", (HOST, free_port()), LAB_CONFIG, random.Random(1), 0.0)
        payload = encode(
            [
                PushPullHeader("evil", True),
                *evil.membership.records(),
                MemberRecord("victim", ("bad\0host", 7946), 1, MemberState.ALIVE),
            ]
        )
        sealed = RING.seal(payload, time.time())
        stream = await trio.open_tcp_stream(*a.addr)
        async with stream:
            await stream.send_all(_FRAME.pack(len(sealed)) + sealed)
            assert await nothing_back(stream)
        assert a.stats()["dropped_malformed"] == 1
        assert "victim" not in {m.name for m in a.members()}
        await still_serves(a, b)
