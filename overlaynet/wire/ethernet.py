"""Ethernet II framing (IEEE 802.3): MAC address helpers and a sans-IO header codec."""

from __future__ import annotations

import re
from dataclasses import dataclass

from overlaynet.wire.errors import MalformedFrame

#: Destination + source MAC + EtherType (IEEE 802.3 clause 3.1.1, Ethernet II framing).
HEADER_LEN = 14
#: A MAC address is six octets (IEEE 802).
MAC_LEN = 6
#: ff:ff:ff:ff:ff:ff reaches every station on the segment.
BROADCAST = b"\xff" * MAC_LEN
#: EtherTypes the data plane looks at (IANA "ieee-802-numbers").
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD
#: An 802.1Q tag adds four octets before the real EtherType.
VLAN_TAG_LEN = 4

_MAC_TEXT = re.compile(r"^[0-9a-fA-F]{2}([:-])(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}$")


def mac_to_bytes(text: str) -> bytes:
    """Parse "02:42:0a:00:00:02" (or dash-separated) into six octets; ValueError if not a MAC."""
    if not _MAC_TEXT.match(text):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes.fromhex(text.replace(":", "").replace("-", ""))


def mac_to_str(mac: bytes) -> str:
    """Six octets as lower-case colon-separated text, the way `ip link` prints them."""
    if len(mac) != MAC_LEN:
        raise ValueError(f"a MAC address is {MAC_LEN} octets, got {len(mac)}")
    return mac.hex(":")


def is_group(mac: bytes) -> bool:
    """True for broadcast and multicast: the I/G bit, the lowest bit of the first octet."""
    return bool(mac[0] & 0x01)


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    """The first 14 octets of a frame; `ethertype` is the outer one (0x8100 for a tagged frame)."""

    dst: bytes
    src: bytes
    ethertype: int


def decode_ethernet(frame: bytes) -> tuple[EthernetHeader, bytes]:
    """Split a frame into its header and payload; MalformedFrame if it is shorter than a header."""
    if len(frame) < HEADER_LEN:
        raise MalformedFrame("ethernet_short", f"{len(frame)} < {HEADER_LEN} octets")
    header = EthernetHeader(
        dst=bytes(frame[0:6]),
        src=bytes(frame[6:12]),
        ethertype=int.from_bytes(frame[12:14], "big"),
    )
    return header, bytes(frame[HEADER_LEN:])


def encode_ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    """Build a frame; the kernel pads short frames, so no padding is added here."""
    if len(dst) != MAC_LEN or len(src) != MAC_LEN:
        raise ValueError("MAC addresses are six octets")
    if not 0 <= ethertype <= 0xFFFF:
        raise ValueError(f"EtherType out of range: {ethertype}")
    return dst + src + ethertype.to_bytes(2, "big") + payload
