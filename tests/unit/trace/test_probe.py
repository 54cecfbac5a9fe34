"""The probe as bytes (trace/probe.py, trace/requests.py): scapy builds it with the fields the
VTEP's matcher looks for, the agent reads them back, refuses anything else, and describes
replies from the bytes. Pure: no sockets."""

from __future__ import annotations

import argparse

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

from overlaynet.cli.trace_cmd import parse_proto
from overlaynet.dataplane.tracing import Matcher, TraceMatch
from overlaynet.errors import InvalidArgument
from overlaynet.trace.probe import arp_kind, build, describe, match_of
from overlaynet.trace.requests import TraceArm, TraceProbe

A, B = "10.0.0.2", "10.0.0.3"


@pytest.mark.parametrize(
    "match",
    [
        TraceMatch(A, B, "icmp", 4242, 777),
        TraceMatch(A, B, "tcp", 9, 40000, 8080),
        TraceMatch(A, B, "udp", 10, 40001, 53),
    ],
)
def test_a_built_probe_reads_back_as_its_match_with_df_and_its_size(match: TraceMatch) -> None:
    packet = build(match, 1460)
    assert len(packet) == 1460 and match_of(packet) == match
    assert IP(packet).flags.DF
    frame = bytes(Ether(type=0x0800)) + packet
    assert Matcher(match).classify(frame) == "probe"


def test_the_agent_refuses_a_probe_that_is_not_one() -> None:
    good = build(TraceMatch(A, B, "icmp", 1, 2), 84)
    with pytest.raises(InvalidArgument, match="hex"):
        TraceProbe("c1", "zz").probe()
    with pytest.raises(InvalidArgument, match="total length"):
        TraceProbe("c1", (good + b"x").hex()).probe()
    with pytest.raises(InvalidArgument, match="echo request"):
        TraceProbe("c1", bytes(IP(src=A, dst=B) / ICMP(type=0)).hex()).probe()
    with pytest.raises(InvalidArgument, match="reply_wait"):
        TraceProbe("c1", good.hex(), reply_wait=3600)
    assert TraceProbe("c1", good.hex()).probe() == (good, TraceMatch(A, B, "icmp", 1, 2))


def test_arming_refuses_bad_matches_and_times() -> None:
    with pytest.raises(InvalidArgument):
        TraceArm("10.0.0.2", "nope").match()
    with pytest.raises(InvalidArgument):
        TraceArm(A, B, seconds=0)
    assert TraceArm(A, B, "tcp", 1, 2, 3).match() == TraceMatch(A, B, "tcp", 1, 2, 3)


def test_replies_are_described_from_their_bytes() -> None:
    synack = bytes(Ether() / IP(src=B, dst=A) / TCP(sport=8080, dport=40000, flags="SA"))
    rst = bytes(Ether() / IP(src=B, dst=A) / TCP(sport=8081, dport=40000, flags="RA"))
    echo = bytes(Ether() / IP(src=B, dst=A) / ICMP(type=0, id=777))
    assert describe(synack) == "TCP SYN-ACK from port 8080 (listening)"
    assert describe(rst) == "TCP RST from port 8081 (closed)"
    assert describe(echo) == "ICMP echo-reply id 777"
    assert describe(b"short") == "a frame"


def test_proto_option() -> None:
    assert parse_proto("icmp") == ("icmp", 0)
    assert parse_proto("tcp:8080") == ("tcp", 8080)
    for bad in ("tcp", "udp:0", "icmp:1", "sctp:5", "tcp:99999"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_proto(bad)


def test_arp_for_the_destination_is_told_apart() -> None:
    from scapy.layers.l2 import ARP

    target = bytes([10, 0, 0, 3])
    who_has = bytes(Ether() / ARP(op=1, psrc=A, pdst=B))
    is_at = bytes(Ether() / ARP(op=2, psrc=B, pdst=A))
    other = bytes(Ether() / ARP(op=1, psrc=A, pdst="10.0.0.9"))
    assert arp_kind(who_has, target) == "arp-request"
    assert arp_kind(is_at, target) == "arp-reply"
    assert arp_kind(other, target) is None
