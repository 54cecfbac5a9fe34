"""The VXLAN header codec against RFC 7348 section 5, scapy as an independent decoder, and fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from overlaynet.wire import vxlan
from overlaynet.wire.errors import MalformedFrame

INNER = bytes.fromhex("02420a00000302420a0000020800") + b"payload"


def test_header_sets_only_the_i_flag_and_the_vni() -> None:
    assert vxlan.encode_header(0x123456) == bytes.fromhex("0800000012345600")


def test_vni_is_24_bits() -> None:
    assert vxlan.encode_header(vxlan.VNI_MAX)[4:7] == b"\xff\xff\xff"
    with pytest.raises(ValueError):
        vxlan.encode_header(1 << 24)
    with pytest.raises(ValueError):
        vxlan.encode_header(-1)


def test_scapy_decodes_our_header() -> None:
    packet = VXLAN(vxlan.encapsulate(4097, INNER))
    assert packet.flags == 0x08
    assert packet.vni == 4097
    assert bytes(packet[Ether]) == INNER


def test_decode_round_trips_scapy_built_datagram() -> None:
    datagram = bytes(VXLAN(flags=0x08, vni=77) / Ether(INNER))
    assert vxlan.decode(datagram) == (77, INNER)


def test_reserved_bits_are_ignored_by_default() -> None:
    datagram = bytes.fromhex("ffffffff000fa0ff") + INNER
    assert vxlan.decode(datagram) == (0x000FA0, INNER)


def test_strict_mode_drops_reserved_bits_like_linux() -> None:
    for header in ("0c00000000000100", "0800010000000100", "0800000000000101"):
        with pytest.raises(MalformedFrame) as caught:
            vxlan.decode(bytes.fromhex(header) + INNER, strict=True)
        assert caught.value.reason == "vxlan_reserved_bits"
    assert vxlan.decode(bytes.fromhex("0800000000000100") + INNER, strict=True) == (1, INNER)


def test_missing_i_flag_is_malformed_in_both_modes() -> None:
    for strict in (False, True):
        with pytest.raises(MalformedFrame) as caught:
            vxlan.decode(bytes.fromhex("0000000000000100") + INNER, strict=strict)
        assert caught.value.reason == "vxlan_no_i_flag"


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "vxlan_short"),
        (b"\x08\x00\x00", "vxlan_short"),
        (vxlan.encode_header(5), "vxlan_inner_short"),
        (vxlan.encode_header(5) + INNER[:13], "vxlan_inner_short"),
    ],
)
def test_short_input_raises_a_counted_reason(datagram: bytes, reason: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        vxlan.decode(datagram)
    assert caught.value.reason == reason


@given(st.integers(0, vxlan.VNI_MAX), st.binary(min_size=14, max_size=1600))
def test_encapsulate_then_decode_is_identity(vni: int, inner: bytes) -> None:
    assert vxlan.decode(vxlan.encapsulate(vni, inner), strict=True) == (vni, inner)


@given(st.binary(max_size=64), st.booleans())
def test_random_datagrams_only_ever_raise_malformed_frame(data: bytes, strict: bool) -> None:
    try:
        vni, inner = vxlan.decode(data, strict=strict)
    except MalformedFrame:
        return
    assert 0 <= vni <= vxlan.VNI_MAX
    assert inner == data[8:]
