"""Ethernet and ARP codecs: round trips, scapy agreement, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from overlaynet.wire import arp, ethernet
from overlaynet.wire.errors import MalformedFrame

MAC_A = ethernet.mac_to_bytes("02:42:0a:00:00:02")
MAC_B = ethernet.mac_to_bytes("02:42:0a:00:00:03")


def test_mac_text_round_trips_and_rejects_garbage() -> None:
    assert ethernet.mac_to_str(MAC_A) == "02:42:0a:00:00:02"
    assert ethernet.mac_to_bytes("02-42-0A-00-00-02") == MAC_A
    for bad in ("02:42:0a:00:00", "02:42:0a:00:00:0g", "0242.0a00.0002", "02:42-0a:00:00:02"):
        with pytest.raises(ValueError):
            ethernet.mac_to_bytes(bad)


def test_group_bit_marks_broadcast_and_multicast() -> None:
    assert ethernet.is_group(ethernet.BROADCAST)
    assert ethernet.is_group(bytes.fromhex("333300000001"))
    assert not ethernet.is_group(MAC_A)


def test_ethernet_short_frame_is_malformed() -> None:
    with pytest.raises(MalformedFrame) as caught:
        ethernet.decode_ethernet(b"\x00" * 13)
    assert caught.value.reason == "ethernet_short"


@given(st.binary(min_size=6, max_size=6), st.integers(0, 0xFFFF), st.binary(max_size=100))
def test_ethernet_round_trip(dst: bytes, ethertype: int, payload: bytes) -> None:
    header, body = ethernet.decode_ethernet(
        ethernet.encode_ethernet(dst, MAC_A, ethertype, payload)
    )
    assert (header.dst, header.src, header.ethertype, body) == (dst, MAC_A, ethertype, payload)


def test_arp_request_from_scapy_decodes() -> None:
    frame = Ether(src="02:42:0a:00:00:02", dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc="02:42:0a:00:00:02", psrc="10.0.0.2", pdst="10.0.0.3"
    )
    packet = arp.decode_arp(bytes(frame)[14:])
    assert packet.op is arp.ArpOp.REQUEST
    assert packet.sender_mac == MAC_A
    assert packet.target_ip_text == "10.0.0.3"


def test_reply_frame_answers_the_requester_as_scapy_reads_it() -> None:
    request = arp.ArpPacket(arp.ArpOp.REQUEST, MAC_A, bytes([10, 0, 0, 2]), b"\0" * 6,
                            bytes([10, 0, 0, 3]))  # fmt: skip
    reply = Ether(arp.reply_frame(request, MAC_B))
    assert reply.dst == "02:42:0a:00:00:02"
    assert reply.src == "02:42:0a:00:00:03"
    assert reply[ARP].op == 2
    assert (reply[ARP].hwsrc, reply[ARP].psrc) == ("02:42:0a:00:00:03", "10.0.0.3")
    assert (reply[ARP].hwdst, reply[ARP].pdst) == ("02:42:0a:00:00:02", "10.0.0.2")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\x01\x08\x00\x06\x04", "arp_short"),
        (bytes.fromhex("000608000604" + "0001") + b"\0" * 20, "arp_bad_hardware"),
        (bytes.fromhex("000186dd0604" + "0001") + b"\0" * 20, "arp_bad_protocol"),
        (bytes.fromhex("000108000604" + "0009") + b"\0" * 20, "arp_bad_op"),
    ],
)
def test_malformed_arp_names_its_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        arp.decode_arp(payload)
    assert caught.value.reason == reason


@given(st.binary(max_size=40))
def test_random_arp_payloads_only_raise_malformed_frame(data: bytes) -> None:
    try:
        packet = arp.decode_arp(data)
    except MalformedFrame:
        return
    assert arp.encode_arp(packet) == data[: arp.PACKET_LEN]
