"""The VTEP's trace flag (dataplane/tracing.py): which frames it matches, what it records for
each decision, and its bounds (records, time). Pure: frames built with scapy, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.l2 import Ether

from overlaynet.dataplane.fdb import FdbEntry
from overlaynet.dataplane.seal import DataKey, Sealer
from overlaynet.dataplane.switching import Network
from overlaynet.dataplane.tracing import MAX_RECORDS, Matcher, TraceMatch, Tracer
from overlaynet.wire import vxlan

A, B = "10.0.0.2", "10.0.0.3"
MAC_A, MAC_B = "02:42:0a:00:00:02", "02:42:0a:00:00:03"
PING = TraceMatch(A, B, "icmp", ip_id=4242, sport=777)
SYN = TraceMatch(A, B, "tcp", ip_id=99, sport=40000, dport=8080)


def frame(pkt: object, src: str = MAC_A, dst: str = MAC_B) -> bytes:
    return bytes(Ether(src=src, dst=dst) / pkt)


def test_the_probe_and_its_echo_reply_are_matched_and_nothing_else() -> None:
    m = Matcher(PING)
    assert m.classify(frame(IP(src=A, dst=B, id=4242) / ICMP(id=777))) == "probe"
    assert m.classify(frame(IP(src=B, dst=A, id=1) / ICMP(type=0, id=777), MAC_B, MAC_A)) == (
        "reply"
    )
    # Another ping of the same pair (other IP id), another echo id, another pair: not ours.
    assert m.classify(frame(IP(src=A, dst=B, id=4243) / ICMP(id=777))) is None
    assert m.classify(frame(IP(src=B, dst=A) / ICMP(type=0, id=778))) is None
    assert m.classify(frame(IP(src=A, dst="10.0.0.9", id=4242) / ICMP(id=777))) is None


def test_a_tcp_reply_is_matched_by_its_reversed_ports() -> None:
    m = Matcher(SYN)
    assert m.classify(frame(IP(src=A, dst=B, id=99, proto=6) / TCP(sport=40000, dport=8080)))
    synack = IP(src=B, dst=A) / TCP(sport=8080, dport=40000, flags="SA")
    assert m.classify(frame(synack)) == "reply"
    assert m.classify(frame(IP(src=B, dst=A) / TCP(sport=8080, dport=40001, flags="SA"))) is None


def test_an_icmp_error_quoting_the_probe_is_its_reply() -> None:
    m = Matcher(TraceMatch(A, B, "udp", ip_id=7, sport=5000, dport=53))
    error = IP(src=B, dst=A) / ICMP(type=3, code=3) / IPerror(src=A, dst=B, id=7) / UDPerror()
    assert m.classify(frame(error)) == "reply"
    other = IP(src=B, dst=A) / ICMP(type=3, code=3) / IPerror(src=A, dst=B, id=8) / UDPerror()
    assert m.classify(frame(other)) is None


@given(st.binary(max_size=80))
def test_any_bytes_are_classified_without_raising(data: bytes) -> None:
    assert Matcher(PING).classify(data) in (None, "probe", "reply")


def _net(mtu: int = 1450) -> Network:
    return Network(4300, -1, mtu, {})


def _tracer(now: list[float], limit: int = MAX_RECORDS) -> Tracer:
    return Tracer(PING, "192.168.0.11", [50000, 50001], 5.0, limit=limit, clock=lambda: now[0])


PROBE = frame(IP(src=A, dst=B, id=4242) / ICMP(id=777))


def test_egress_records_an_fdb_hit_with_the_outer_addresses_and_source_port() -> None:
    net = _net()
    net.fdb[bytes.fromhex(MAC_B.replace(":", ""))] = FdbEntry("192.168.0.12")
    tracer = _tracer([100.0])
    tracer.egress(net, PROBE)
    (rec,) = tracer.records
    assert rec["decision"] == "fdb_hit" and rec["targets"] == ["192.168.0.12"]
    assert rec["vni"] == 4300 and rec["outer_src"] == "192.168.0.11"
    assert rec["source_port"] in (50000, 50001) and rec["kind"] == "probe"


def test_egress_without_fdb_entry_floods_to_peers_or_drops_without_any() -> None:
    net = _net()
    tracer = _tracer([100.0])
    tracer.egress(net, PROBE)
    net.peers = ("192.168.0.12", "192.168.0.13")
    tracer.egress(net, PROBE)
    assert [r["decision"] for r in tracer.records] == ["drop_no_fdb_no_peers", "flood"]
    assert tracer.records[1]["targets"] == ["192.168.0.12", "192.168.0.13"]


def test_unmatched_frames_leave_no_record() -> None:
    tracer = _tracer([100.0])
    tracer.egress(_net(), frame(IP(src=A, dst=B, id=1) / ICMP(id=777)))
    assert tracer.records == []


def _datagram(inner: bytes, vni: int = 4300) -> bytes:
    return vxlan.encode_header(vni) + inner


def test_ingress_records_member_and_vni_checks() -> None:
    net = _net()
    networks = {net.vni_key: net}
    tracer = _tracer([100.0])
    members = frozenset({"192.168.0.12"})
    tracer.ingress(_datagram(PROBE), "192.168.0.12", members, networks, False)
    tracer.ingress(_datagram(PROBE), "192.168.0.99", members, networks, False)
    tracer.ingress(_datagram(PROBE, vni=77), "192.168.0.12", members, networks, False)
    assert [r["decision"] for r in tracer.records] == [
        "to_tap",
        "drop_not_member",
        "drop_unknown_vni",
    ]
    assert tracer.records[0]["member"] and not tracer.records[1]["member"]


def test_records_are_bounded_in_count_and_time() -> None:
    now = [100.0]
    tracer = _tracer(now, limit=3)
    for _ in range(10):
        tracer.egress(_net(), PROBE)
    assert len(tracer.records) == 3
    late = _tracer(now)
    now[0] += 5.0  # the deadline: armed for 5 s
    late.egress(_net(), PROBE)
    assert late.records == []


def test_arming_is_bounded() -> None:
    with pytest.raises(ValueError):
        Tracer(PING, "192.168.0.11", [], 3600.0)
    with pytest.raises(ValueError):
        TraceMatch(A, B, "sctp", 1)
    with pytest.raises(ValueError):
        TraceMatch(A, "not-an-ip", "icmp", 1)


def test_probe_udp_reply_is_not_the_probe() -> None:
    m = Matcher(TraceMatch(A, B, "udp", ip_id=7, sport=5000, dport=53))
    assert m.classify(frame(IP(src=A, dst=B, id=7) / UDP(sport=5000, dport=53))) == "probe"
    assert m.classify(frame(IP(src=B, dst=A) / UDP(sport=53, dport=5000))) == "reply"


def test_a_plain_datagram_offered_again_after_opening_is_recorded_once() -> None:
    # With an encrypted network on the host the loop offers each datagram before and after
    # opening: a plain network's datagram is the same bytes both times.
    net = _net()
    networks = {net.vni_key: net}
    tracer = _tracer([100.0])
    members = frozenset({"192.168.0.12"})
    tracer.ingress(_datagram(PROBE), "192.168.0.12", members, networks, True)
    tracer.ingress(_datagram(PROBE), "192.168.0.12", members, networks, False)
    assert len(tracer.records) == 1


def test_an_encrypted_network_records_the_sealing_key_and_matches_after_opening() -> None:
    # Real sealing both ways: the sender's record names the key it seals with, the receiver's
    # the key id the datagram carried (opening clears that octet), and the probe is matched
    # only once it is opened.
    key = DataKey(7, bytes(range(16)))
    sender, receiver = _net(), _net()
    sender.seal = Sealer([key], 7, "192.168.0.11")
    receiver.seal = Sealer([key], 7, "192.168.0.12")
    out = _tracer([100.0])
    out.egress(sender, PROBE)
    assert out.records[0]["encrypted"] and out.records[0]["key_id"] == 7
    head, body = sender.seal.seal(vxlan.encode_header(4300), PROBE)
    wire = head + body
    networks = {receiver.vni_key: receiver}
    members = frozenset({"192.168.0.11"})
    into = _tracer([100.0])
    into.ingress(wire, "192.168.0.11", members, networks, True)
    assert into.records == []  # sealed: nothing to match yet
    opened = receiver.seal.open(wire, "192.168.0.11")
    assert opened is not None
    into.ingress(opened, "192.168.0.11", members, networks, False)
    (rec,) = into.records
    assert rec["kind"] == "probe" and rec["decision"] == "to_tap"
    assert rec["encrypted"] and rec["key_id"] == 7
