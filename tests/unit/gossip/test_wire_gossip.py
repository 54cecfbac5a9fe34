"""The gossip codec round-trips every message and turns any bad input into MalformedGossip."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.wire.gossip import (
    PROTOCOL_VERSION,
    Ack,
    Alive,
    Dead,
    FutureGossip,
    MalformedGossip,
    MemberRecord,
    MemberState,
    Message,
    Nack,
    NetworkEvent,
    Ping,
    PingReq,
    PushPullHeader,
    Suspect,
    TableEvent,
    decode,
    encode,
)

ALL: list[Message] = [
    Ping(7, "h2", "h1", ("192.168.0.11", 7946)),
    PingReq(8, "h3", ("192.168.0.13", 7946), "h1", ("192.168.0.11", 7946), True),
    Ack(7, "h2"),
    Nack(8, "h2"),
    Alive(3, "h1", ("192.168.0.11", 7946)),
    Suspect(3, "h1", "h2"),
    Dead(4, "h1", "h1"),
    NetworkEvent("h1", "net-a", 2**40, True),
    TableEvent("endpoint_table", "net-a", "ep1", "h1", 12, False, b'{"ip": "10.0.0.2"}'),
    TableEvent("endpoint_table", "net-a", "ep1", "h1", 13, True, b""),
    MemberRecord("h2", ("192.168.0.12", 7946), 9, MemberState.SUSPECT),
    PushPullHeader("h1", True),
]


def test_every_message_type_round_trips_in_one_packet() -> None:
    assert decode(encode(ALL)) == ALL


def test_newer_protocol_version_is_from_the_future() -> None:
    data = bytes([PROTOCOL_VERSION + 1]) + encode([Ack(1, "h1")])[1:]
    with pytest.raises(FutureGossip):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([0]),
        bytes([PROTOCOL_VERSION, 99, 0, 0]),
        bytes([PROTOCOL_VERSION, 3, 0, 10, 0]),
    ],
    ids=["empty", "old-version", "unknown-type", "truncated"],
)
def test_bad_packets_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedGossip):
        decode(data)


def test_every_truncation_of_a_packet_is_malformed() -> None:
    data = encode(ALL)
    for cut in range(1, len(data)):
        try:
            decode(data[:cut])
        except MalformedGossip:
            continue
        # A cut on a message boundary is a valid shorter packet, never a garbled one.
        assert decode(data[:cut]) == ALL[: len(decode(data[:cut]))]


def test_trailing_bytes_inside_a_message_are_malformed() -> None:
    body = encode([Ack(1, "h1")])
    grown = body[:1] + bytes([body[1], 0, body[3] + 1]) + body[4:] + b"x"
    with pytest.raises(MalformedGossip):
        decode(grown)


def test_bad_flag_and_state_values_are_malformed() -> None:
    data = bytearray(encode([PushPullHeader("h1", True)]))
    data[-1] = 2
    with pytest.raises(MalformedGossip):
        decode(bytes(data))
    rec = bytearray(encode([MemberRecord("h", ("1.2.3.4", 1), 0, MemberState.ALIVE)]))
    rec[-1] = 9
    with pytest.raises(MalformedGossip):
        decode(bytes(rec))


def test_names_longer_than_255_bytes_are_refused_on_encode() -> None:
    with pytest.raises(ValueError):
        encode([Ack(1, "x" * 256)])


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedGossip):
        decode(bytes([PROTOCOL_VERSION]) + data)


@given(st.lists(st.sampled_from(ALL), max_size=20), st.data())
def test_flipping_a_byte_never_raises_anything_but_malformed(
    messages: list[Message], data: st.DataObject
) -> None:
    packet = bytearray(encode(messages))
    index = data.draw(st.integers(0, len(packet) - 1))
    packet[index] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(MalformedGossip):
        decode(bytes(packet))


def test_counters_with_no_room_left_are_malformed() -> None:
    with pytest.raises(MalformedGossip):
        decode(encode([Alive(2**32 - 1, "h1", ("10.0.0.1", 7946))]))
    with pytest.raises(MalformedGossip):
        decode(encode([NetworkEvent("h1", "n", 2**64 - 1, True)]))
