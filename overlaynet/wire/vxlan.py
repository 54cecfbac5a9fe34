"""The VXLAN header (RFC 7348 section 5): a sans-IO codec for the 8 octets before the inner frame.

0                   1                   2                   3
|R|R|R|R|I|R|R|R|            Reserved                           |
|                VXLAN Network Identifier (VNI) |   Reserved    |
"""

from __future__ import annotations

from overlaynet.wire.errors import MalformedFrame
from overlaynet.wire.ethernet import HEADER_LEN as ETHERNET_HEADER_LEN

#: IANA-assigned destination port for VXLAN (RFC 7348 section 5, "Outer UDP Header").
VXLAN_PORT = 4789
#: Flags (1) + reserved (3) + VNI (3) + reserved (1).
HEADER_LEN = 8
#: "The I flag MUST be set to 1 for a valid VXLAN Network ID (VNI)" (RFC 7348 section 5).
FLAG_I = 0x08
#: The VNI is a 24-bit value (RFC 7348 section 5).
VNI_MAX = (1 << 24) - 1
#: Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): why overlays run at 1500 - 50.
OVERHEAD = 20 + 8 + HEADER_LEN + ETHERNET_HEADER_LEN
#: RFC 7348 section 5: source port "in the dynamic/private port range 49152-65535".
SOURCE_PORT_MIN = 49152
SOURCE_PORT_MAX = 65535


def check_vni(vni: int) -> int:
    """Return `vni` if it fits in 24 bits, else ValueError (a configuration mistake, not wire)."""
    if not 0 <= vni <= VNI_MAX:
        raise ValueError(f"VNI must be within 0..{VNI_MAX}, got {vni}")
    return vni


def encode_header(vni: int) -> bytes:
    """The 8-octet header for `vni`: I flag set, every reserved bit zero (RFC 7348: "MUST be set
    to zero on transmission"). It is constant per network, so the hot path computes it once."""
    return bytes((FLAG_I, 0, 0, 0)) + check_vni(vni).to_bytes(3, "big") + b"\x00"


def encapsulate(vni: int, inner_frame: bytes) -> bytes:
    """A UDP payload carrying `inner_frame` on `vni`."""
    return encode_header(vni) + inner_frame


def decode(datagram: bytes, *, strict: bool = False) -> tuple[int, bytes]:
    """Split a UDP payload into (VNI, inner Ethernet frame).

    Lenient (default): reserved bits are ignored, as RFC 7348 says receivers MUST ("ignored on
    receipt"). Strict: any reserved bit set drops the datagram, which is what Linux does
    (vxlan_rcv refuses unknown flags and a non-zero reserved VNI byte). Both require the I flag
    and a whole inner Ethernet header; failures raise MalformedFrame with a counter reason.
    """
    if len(datagram) < HEADER_LEN:
        raise MalformedFrame("vxlan_short", f"{len(datagram)} < {HEADER_LEN} octets")
    flags = datagram[0]
    if not flags & FLAG_I:
        raise MalformedFrame("vxlan_no_i_flag", f"flags {flags:#04x}")
    if strict and (flags != FLAG_I or any(datagram[1:4]) or datagram[7]):
        raise MalformedFrame("vxlan_reserved_bits", datagram[:HEADER_LEN].hex())
    if len(datagram) < HEADER_LEN + ETHERNET_HEADER_LEN:
        raise MalformedFrame("vxlan_inner_short", f"{len(datagram) - HEADER_LEN} octets inside")
    vni = int.from_bytes(datagram[4:7], "big")
    return vni, bytes(datagram[HEADER_LEN:])
