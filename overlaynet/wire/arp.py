"""ARP for IPv4 over Ethernet (RFC 826): a sans-IO codec and the local reply the VTEP sends."""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from overlaynet.wire.errors import MalformedFrame
from overlaynet.wire.ethernet import ETHERTYPE_ARP, MAC_LEN, encode_ethernet

#: htype Ethernet (1), ptype IPv4 (0x0800), hlen 6, plen 4 (RFC 826, IANA arp-parameters).
_FIXED = struct.Struct("!HHBBH")
HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800
#: Fixed part (8) + two MAC/IPv4 pairs (2 * (6 + 4)).
PACKET_LEN = 28


class ArpOp(enum.IntEnum):
    """ARP opcodes (RFC 826)."""

    REQUEST = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP packet; addresses are raw octets (6 for MACs, 4 for IPv4)."""

    op: ArpOp
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes

    @property
    def target_ip_text(self) -> str:
        """The target protocol address as dotted quad."""
        return str(ipaddress.IPv4Address(self.target_ip))


def decode_arp(payload: bytes) -> ArpPacket:
    """Decode the payload of an EtherType 0x0806 frame; trailing padding is ignored.

    MalformedFrame for anything that is not an Ethernet/IPv4 request or reply: the data plane
    only answers those, and RFC 826 says to discard packets for protocols one does not speak.
    """
    if len(payload) < PACKET_LEN:
        raise MalformedFrame("arp_short", f"{len(payload)} < {PACKET_LEN} octets")
    htype, ptype, hlen, plen, op = _FIXED.unpack_from(payload, 0)
    if htype != HTYPE_ETHERNET or hlen != MAC_LEN:
        raise MalformedFrame("arp_bad_hardware", f"htype {htype} hlen {hlen}")
    if ptype != PTYPE_IPV4 or plen != 4:
        raise MalformedFrame("arp_bad_protocol", f"ptype {ptype:#06x} plen {plen}")
    try:
        arp_op = ArpOp(op)
    except ValueError:
        raise MalformedFrame("arp_bad_op", f"op {op}") from None
    return ArpPacket(
        op=arp_op,
        sender_mac=bytes(payload[8:14]),
        sender_ip=bytes(payload[14:18]),
        target_mac=bytes(payload[18:24]),
        target_ip=bytes(payload[24:28]),
    )


def encode_arp(packet: ArpPacket) -> bytes:
    """The 28-octet ARP payload for `packet`."""
    for mac in (packet.sender_mac, packet.target_mac):
        if len(mac) != MAC_LEN:
            raise ValueError("MAC addresses are six octets")
    for ip in (packet.sender_ip, packet.target_ip):
        if len(ip) != 4:
            raise ValueError("IPv4 addresses are four octets")
    fixed = _FIXED.pack(HTYPE_ETHERNET, PTYPE_IPV4, MAC_LEN, 4, int(packet.op))
    return fixed + packet.sender_mac + packet.sender_ip + packet.target_mac + packet.target_ip


def reply_frame(request: ArpPacket, answer_mac: bytes) -> bytes:
    """The Ethernet frame answering `request` on behalf of the owner of `answer_mac`.

    RFC 826: swap sender and target, put the answering hardware address in the sender field,
    and send it unicast to the requester.
    """
    reply = ArpPacket(
        op=ArpOp.REPLY,
        sender_mac=answer_mac,
        sender_ip=request.target_ip,
        target_mac=request.sender_mac,
        target_ip=request.sender_ip,
    )
    return encode_ethernet(request.sender_mac, answer_mac, ETHERTYPE_ARP, encode_arp(reply))
