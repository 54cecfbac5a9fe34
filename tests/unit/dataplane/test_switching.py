"""The VTEP's per-frame decisions: unicast, flooding, local ARP answers, drops and counters."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from overlaynet.dataplane.fdb import ForwardingDatabase
from overlaynet.dataplane.switching import (
    Network,
    Verdict,
    egress,
    flow_hash,
    ingress,
    source_port,
)
from overlaynet.wire import vxlan
from overlaynet.wire.ethernet import mac_to_bytes

VNI = 4097
LOCAL_MAC, REMOTE_MAC = "02:42:0a:00:00:02", "02:42:0a:00:00:03"
REMOTE_HOST, OTHER_HOST = "192.168.0.12", "192.168.0.13"


def make_network(mtu: int = 1450) -> tuple[Network, ForwardingDatabase]:
    fdb = ForwardingDatabase()
    net = Network(VNI, tap_fd=-1, mtu=mtu, fdb=fdb.table(VNI))
    net.peers = (REMOTE_HOST, OTHER_HOST)
    fdb.add(VNI, REMOTE_MAC, REMOTE_HOST)
    net.arp[bytes([10, 0, 0, 3])] = mac_to_bytes(REMOTE_MAC)
    return net, fdb


def ping_frame(dst: str = REMOTE_MAC, size: int = 56) -> bytes:
    return bytes(
        Ether(src=LOCAL_MAC, dst=dst) / IP(src="10.0.0.2", dst="10.0.0.3") / ICMP() / (b"x" * size)
    )


def arp_request(target: str, sender: str = "10.0.0.2") -> bytes:
    return bytes(
        Ether(src=LOCAL_MAC, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=LOCAL_MAC, psrc=sender, pdst=target)
    )


def test_known_unicast_goes_to_its_host_only_and_is_counted() -> None:
    net, fdb = make_network()
    frame = ping_frame()
    verdict, data, targets = egress(net, frame)
    assert (verdict, targets) == (Verdict.UNICAST, (REMOTE_HOST,))
    assert data == vxlan.encapsulate(VNI, frame)
    entry = fdb.lookup(VNI, REMOTE_MAC)
    assert entry is not None
    assert (entry.tx_frames, entry.tx_bytes) == (1, len(frame))
    assert "tx_flood" not in net.counters


def test_unknown_unicast_and_broadcast_are_replicated_to_every_peer() -> None:
    net, _ = make_network()
    verdict, data, targets = egress(net, ping_frame(dst="02:42:0a:00:00:99"))
    assert data[:8] == vxlan.encode_header(VNI)
    assert (verdict, targets) == (Verdict.FLOOD, (REMOTE_HOST, OTHER_HOST))
    verdict, _, targets = egress(net, ping_frame(dst="ff:ff:ff:ff:ff:ff"))
    assert (verdict, targets) == (Verdict.FLOOD, (REMOTE_HOST, OTHER_HOST))
    assert net.counters["tx_unknown_unicast"] == 1
    assert net.counters["tx_flood"] == 1


def test_flooding_without_peers_is_a_counted_drop() -> None:
    net, _ = make_network()
    net.peers = ()
    assert egress(net, ping_frame(dst="ff:ff:ff:ff:ff:ff"))[0] is Verdict.DROP
    assert net.counters["tx_drop_no_peers"] == 1


def test_arp_request_for_known_remote_endpoint_is_answered_locally() -> None:
    net, _ = make_network()
    verdict, reply, targets = egress(net, arp_request("10.0.0.3"))
    assert (verdict, targets) == (Verdict.REPLY, ())
    answer = Ether(reply)
    assert answer.dst == LOCAL_MAC
    assert (answer[ARP].op, answer[ARP].hwsrc, answer[ARP].psrc) == (2, REMOTE_MAC, "10.0.0.3")
    assert net.counters["arp_answered"] == 1


def test_arp_for_unknown_ip_and_gratuitous_arp_are_flooded() -> None:
    net, _ = make_network()
    assert egress(net, arp_request("10.0.0.77"))[0] is Verdict.FLOOD
    assert egress(net, arp_request("10.0.0.3", sender="10.0.0.3"))[0] is Verdict.FLOOD
    assert net.counters["arp_answered"] == 0


def test_frame_over_the_network_mtu_is_dropped_not_fragmented() -> None:
    net, _ = make_network(mtu=1450)
    fits = ping_frame(size=1450 - 28)
    assert len(fits) == 1450 + 14
    assert egress(net, fits)[0] is Verdict.UNICAST
    assert egress(net, ping_frame(size=1450 - 27))[0] is Verdict.DROP
    assert net.counters["tx_drop_too_big"] == 1


def test_short_frame_from_tap_is_counted() -> None:
    net, _ = make_network()
    assert egress(net, b"\x02" * 13)[0] is Verdict.DROP
    assert net.counters["tx_drop_malformed"] == 1


def test_flow_hash_keeps_a_tcp_flow_on_one_source_port_and_spreads_flows() -> None:
    def segment(sport: int, payload: bytes) -> bytes:
        return bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.3") / TCP(sport=sport) / payload)

    assert flow_hash(segment(40000, b"a")) == flow_hash(segment(40000, b"bbbb"))
    ports = {source_port(segment(sport, b"")) for sport in range(40000, 40064)}
    assert len(ports) > 32
    assert all(vxlan.SOURCE_PORT_MIN <= p <= vxlan.SOURCE_PORT_MAX for p in ports)


@given(st.binary(max_size=80))
def test_source_port_is_in_the_rfc_range_for_any_frame(frame: bytes) -> None:
    udp = bytes(Ether() / IP() / UDP())
    for candidate in (frame, udp[:14] + frame, udp + frame):
        assert vxlan.SOURCE_PORT_MIN <= source_port(candidate) <= vxlan.SOURCE_PORT_MAX


def test_ingress_from_member_lands_in_its_network_and_counts_the_sender_entry() -> None:
    net, fdb = make_network()
    counters: Counter[str] = Counter()
    inner = bytes(Ether(src=REMOTE_MAC, dst=LOCAL_MAC) / IP() / ICMP())
    target, frame = ingress(
        {net.vni_key: net}, frozenset({REMOTE_HOST}), vxlan.encapsulate(VNI, inner),
        REMOTE_HOST, counters,
    )  # fmt: skip
    assert target is net
    assert frame == inner
    entry = fdb.lookup(VNI, REMOTE_MAC)
    assert entry is not None
    assert entry.rx_frames == 1


def test_ingress_drops_and_counts_strangers_unknown_vnis_and_garbage() -> None:
    net, _ = make_network()
    networks, members = {net.vni_key: net}, frozenset({REMOTE_HOST})
    counters: Counter[str] = Counter()
    inner = ping_frame()
    cases = [
        (vxlan.encapsulate(VNI, inner), "10.9.9.9"),
        (vxlan.encapsulate(VNI + 1, inner), REMOTE_HOST),
        (b"\x00" * 30, REMOTE_HOST),
        (b"\x08", REMOTE_HOST),
    ]
    for datagram, sender in cases:
        assert ingress(networks, members, datagram, sender, counters) == (None, b"")
    assert counters["rx_drop_not_member"] == 1
    assert counters["rx_drop_unknown_vni"] == 1
    assert counters["rx_drop_malformed"] == 2
    assert counters["rx_drop_vxlan_no_i_flag"] == 1
    assert counters["rx_drop_vxlan_short"] == 1


@pytest.mark.parametrize("offset", [0, 1, 3, 7])
def test_ingress_strict_mode_counts_reserved_bits(offset: int) -> None:
    net, _ = make_network()
    counters: Counter[str] = Counter()
    datagram = bytearray(vxlan.encapsulate(VNI, ping_frame()))
    datagram[offset] |= 0x04
    networks, members = {net.vni_key: net}, frozenset({REMOTE_HOST})
    assert ingress(networks, members, bytes(datagram), REMOTE_HOST, counters)[0] is net
    dropped = ingress(networks, members, bytes(datagram), REMOTE_HOST, counters, strict=True)
    assert dropped == (None, b"")
    assert counters["rx_drop_vxlan_reserved_bits"] == 1
    clean = vxlan.encapsulate(VNI, ping_frame())
    assert ingress(networks, members, clean, REMOTE_HOST, counters, strict=True)[0] is net


@given(st.binary(max_size=100))
def test_random_datagrams_from_a_member_never_raise(data: bytes) -> None:
    net, _ = make_network()
    counters: Counter[str] = Counter()
    target, inner = ingress({net.vni_key: net}, frozenset({REMOTE_HOST}), data, REMOTE_HOST,
                            counters)  # fmt: skip
    assert (target is None) == (sum(counters.values()) > 0)
    if target is not None:
        assert inner == data[8:]


def test_every_echo_request_of_one_ping_keeps_one_outer_source_port() -> None:
    """Issue 15: the ICMP checksum and sequence number change with every request of one
    `ping`; they were hashed as if they were ports, so the outer source port changed between
    requests. The flow is addresses, type, code and the echo identifier."""

    def echo(seq: int, ident: int = 0x1234, kind: int = 8) -> bytes:
        return bytes(
            Ether(src=LOCAL_MAC, dst=REMOTE_MAC)
            / IP(src="10.0.0.2", dst="10.0.0.3")
            / ICMP(type=kind, id=ident, seq=seq)
            / (b"%d" % seq * 7)
        )

    ports = {source_port(echo(seq)) for seq in range(1, 50)}
    assert len(ports) == 1
    replies = {source_port(echo(seq, kind=0)) for seq in range(1, 50)}
    assert len(replies) == 1
    # Another ping (another identifier) is another flow: over many, they spread.
    assert len({source_port(echo(1, ident=i)) for i in range(64)}) > 32


def test_non_port_protocols_hash_by_addresses_and_protocol() -> None:
    def packet(proto: int, body: bytes) -> bytes:
        return bytes(
            Ether(src=LOCAL_MAC, dst=REMOTE_MAC) / IP(src="10.0.0.2", dst="10.0.0.3", proto=proto)
            / body
        )  # fmt: skip

    # GRE (47): what follows the IP header is not ports, so it must not move the hash.
    assert flow_hash(packet(47, b"\x00\x00\x08\x00abcd")) == flow_hash(packet(47, b"\xff" * 8))
    assert flow_hash(packet(47, b"x" * 8)) != flow_hash(packet(50, b"x" * 8))
