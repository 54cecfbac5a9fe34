"""A live service on loopback takes each sealed message once, only while fresh, and only from
members: captures replayed later, or replayed inside the window, over UDP or the TCP
push-pull, are counted and dropped, and a stranger never gets a single datagram back
(issue 18: 141 replays accepted, 67 sealed replies to the replayer)."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from overlaynet.gossip.config import LAB_CONFIG
from overlaynet.gossip.keyring import Keyring
from overlaynet.gossip.node import GossipNode
from overlaynet.wire.gossip import Ack, Alive, Message, Ping, decode, encode
from tests.unit.gossip.loopback import HOST, K1, eventually, free_port, joined_cluster

RING = Keyring([K1])
_FRAME = struct.Struct("!I")


class Stranger:
    """A UDP socket on loopback that no member knows; keeps what the cluster sends it."""

    def __init__(self, udp: socket.socket) -> None:
        self.udp = udp
        self.addr: tuple[str, int] = udp.getsockname()
        self.got: list[Message] = []

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.udp.sendto(data, to)

    def collect(self) -> list[Message]:
        while True:
            try:
                data = self.udp.recv(2048)
            except BlockingIOError:
                return self.got
            self.got.extend(decode(RING.open(data).plaintext))


@contextmanager
def stranger() -> Iterator[Stranger]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setblocking(False)
        udp.bind((HOST, 0))
        yield Stranger(udp)


# Once the service has counted a datagram, its answer (if any) is already on our socket: the
# receive loop counts and sends in one step, with no checkpoint in between (service._flush).


async def test_a_capture_replayed_after_the_window_is_stale_and_unanswered() -> None:
    async with joined_cluster(RING, RING) as (a, b):
        with stranger() as s:
            # What b sent to a 20 s ago, exactly as captured: the send time is sealed with it.
            # Sent from b's address it would have been taken today; here from the replayer's.
            captured = RING.seal(encode([Ping(7, "h0", "h1", b.addr)]), time.time() - 20)
            s.send(captured, a.addr)
            await eventually(lambda: a.stats()["dropped_stale"] == 1)
            assert s.collect() == []


async def test_a_replay_inside_the_window_is_taken_once() -> None:
    async with joined_cluster(RING, RING) as (a, _b):
        with stranger() as s:
            # A key holder introducing itself is answered, as a joiner must be...
            hello = encode([Ping(7, "h0", "x", s.addr), Alive(0, "x", s.addr)])
            sealed = RING.seal(hello, time.time())
            s.send(sealed, a.addr)
            await eventually(lambda: Ack(7, "h0") in s.collect())
            # ...and the same bytes again are a replay: counted, and no second answer.
            s.send(sealed, a.addr)
            await eventually(lambda: a.stats()["dropped_replayed"] == 1)
            assert s.collect().count(Ack(7, "h0")) == 1


async def test_a_strangers_datagram_is_dropped_as_non_member_and_unanswered() -> None:
    async with joined_cluster(RING, RING) as (a, b):
        with stranger() as s:
            # Fresh and authenticated (a key holder), but from no member's address.
            s.send(RING.seal(encode([Ping(7, "h0", "h1", b.addr)]), time.time()), a.addr)
            await eventually(lambda: a.stats()["dropped_non_member"] == 1)
            assert s.collect() == []


async def exchange(addr: tuple[str, int], request: bytes) -> bytes:
    """Send one framed push-pull and read whatever comes back until the server closes."""
    stream = await trio.open_tcp_stream(*addr)
    async with stream:
        await stream.send_all(request)
        reply = bytearray()
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return bytes(reply)


def frame(payload: bytes) -> bytes:
    sealed = RING.seal(payload, time.time())
    return _FRAME.pack(len(sealed)) + sealed


async def test_a_replayed_push_pull_gets_no_state_back() -> None:
    async with joined_cluster(RING, RING) as (a, _b):
        joiner = GossipNode("x", (HOST, free_port()), LAB_CONFIG, random.Random(1), 0.0)
        request = frame(joiner.push_pull_payload(True))
        assert await exchange(a.addr, request) != b""  # the genuine exchange is answered
        assert await exchange(a.addr, request) == b""  # its replay: closed, nothing sent
        assert a.stats()["dropped_replayed"] == 1


async def test_a_push_pull_from_an_address_not_the_senders_gets_nothing() -> None:
    async with joined_cluster(RING, RING) as (a, _b):
        liar = GossipNode("y", ("10.9.9.9", 7946), LAB_CONFIG, random.Random(1), 0.0)
        assert await exchange(a.addr, frame(liar.push_pull_payload(True))) == b""
        assert a.stats()["dropped_non_member"] == 1
        assert "y" not in {m.name for m in a.members()}
