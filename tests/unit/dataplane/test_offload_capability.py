"""Offload mode is negotiated: `--opt offload=on` parsed and checked like `learning`, the
capability carried in a host's gossip participation event (one optional trailing octet, so an
event without it is byte-for-byte what it was), and only advertising hosts are listed."""

from __future__ import annotations

import pytest

from overlaynet.dataplane.options import OptionError, check_overlay_options, offload_wanted
from overlaynet.gossip.tables import LamportClock, NetworkTables
from overlaynet.wire.gossip import NetworkEvent, decode_message, encode_message


@pytest.mark.parametrize(("value", "wanted"), [("on", True), ("OFF", False), ("1", True)])
def test_offload_option_values(value: str, wanted: bool) -> None:
    assert offload_wanted({"offload": value}) is wanted


def test_offload_option_absent_is_off_and_bad_values_are_named() -> None:
    assert offload_wanted({}) is False
    with pytest.raises(OptionError, match="offload=maybe"):
        check_overlay_options({"offload": "maybe"})
    with pytest.raises(OptionError, match="encrypted"):
        check_overlay_options({"offload": "on", "encrypted": ""})
    check_overlay_options({"offload": "off", "encrypted": ""})


def test_participation_event_carries_offload_and_stays_compatible_without() -> None:
    plain = NetworkEvent("node1", "net", 7, True)
    capable = NetworkEvent("node1", "net", 7, True, offload=True)
    assert decode_message(encode_message(capable)) == capable
    assert decode_message(encode_message(plain)) == plain
    # Without the capability the bytes are those an older agent sends and expects.
    assert encode_message(capable) != encode_message(plain)
    assert len(encode_message(capable)) == len(encode_message(plain)) + 1


def tables(me: str, *, offload: bool) -> NetworkTables:
    t = NetworkTables(me, LamportClock(), 60.0, lambda _node: True)
    t.advertise_offload = offload
    return t


def test_only_hosts_that_advertised_offload_are_offload_participants() -> None:
    a, b, c = tables("a", offload=True), tables("b", offload=True), tables("c", offload=False)
    here = tables("me", offload=True)
    for t in (a, b, c):
        event = decode_message(encode_message(t.join_network("net")))
        assert isinstance(event, NetworkEvent)
        here.apply_network_event(event, 0.0)
    assert here.participants("net") == {"a", "b", "c"}
    assert here.offload_participants("net") == {"a", "b"}
    # A host that leaves is no longer listed, capability or not.
    here.apply_network_event(a.leave_network("net"), 0.0)
    assert here.offload_participants("net") == {"b"}
