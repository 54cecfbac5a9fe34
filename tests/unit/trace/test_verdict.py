"""Reading a trace (trace/verdict.py): the hops and the stopping point named from per-stage
records, for every stop the issue names. Pure: records written by hand as agents send them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from overlaynet.trace.model import Capture, PeerReport, Resolution, SourceReport
from overlaynet.trace.verdict import explain, table

N1, N2 = "192.168.0.11", "192.168.0.12"
MAC_B = "02:42:0a:00:00:03"


def _source(**changes: Any) -> SourceReport:
    base = SourceReport(
        host="node1",
        container="c1",
        src_ip="10.0.0.2",
        dst_ip="10.0.0.3",
        proto="icmp",
        ip_id=4242,
        size=84,
        network="ov",
        networks=["ov 10.0.0.0/24"],
        mtu=1450,
        sent_at=100.0,
        bridge="on-br-x",
        tap="on-tap-x",
        bridge_fdb={},
        captures=[
            Capture("container", "eth0", "probe", 100.0001),
            Capture("veth", "on-vea", "probe", 100.0002, "02:42:0a:00:00:02", MAC_B),
            Capture("port", "on-tap-x", "probe", 100.0003),
        ],
        vtep=[_egress("probe", "fdb_hit", [N2])],
        local_ip=N1,
    )
    return replace(base, **changes)


def _egress(kind: str, decision: str, targets: list[str], src: str = N1) -> dict[str, Any]:
    return {
        "stage": "vtep.egress",
        "t": 100.0004,
        "kind": kind,
        "vni": 4300,
        "inner_dst_mac": MAC_B,
        "length": 98,
        "mtu": 1450,
        "outer_src": src,
        "source_port": 50123,
        "decision": decision,
        "targets": targets,
    }


def _ingress(kind: str, decision: str = "to_tap", sender: str = N1) -> dict[str, Any]:
    return {
        "stage": "vtep.ingress",
        "t": 100.0005,
        "kind": kind,
        "vni": 4300,
        "outer_src": sender,
        "decision": decision,
    }


def _answered() -> tuple[SourceReport, list[PeerReport]]:
    source = _source(
        reply_at=100.001,
        reply="ICMP echo-reply id 777",
        vtep=[_egress("probe", "fdb_hit", [N2]), _ingress("reply", sender=N2)],
    )
    peer = PeerReport("node2", N2, None, [_ingress("probe"), _egress("reply", "fdb_hit", [N1], N2)])
    return source, [peer]


def test_the_happy_path_across_hosts_walks_every_stage_and_is_answered() -> None:
    source, peers = _answered()
    trace = explain(source, peers)
    assert trace.reached and trace.stop is None
    stages = [h.stage for h in trace.hops]
    assert stages[:6] == ["container", "veth", "bridge", "vtep", "underlay", "peer-vtep"]
    assert "destination" in stages and stages[-1] == "reply"
    underlay = next(h for h in trace.hops if h.stage == "underlay")
    assert "192.168.0.11:50123 > 192.168.0.12:4789" in underlay.decision
    assert "vni 4300" in underlay.decision
    assert "FDB hit" in next(h for h in trace.hops if h.stage == "vtep").decision
    assert "Result: answered" in table(trace)


def test_an_unresolvable_name_stops_at_dns_naming_the_network() -> None:
    res = Resolution("nobody", "127.0.0.11", "ov", None, "NXDOMAIN")
    trace = explain(None, [], res)
    assert trace.stop is not None and trace.stop.where == "dns"
    assert "name nobody not resolvable on network ov" in trace.stop.why


def test_a_resolved_name_is_the_first_hop() -> None:
    source, peers = _answered()
    res = Resolution("c2", "127.0.0.11", "ov", "10.0.0.3", "NOERROR", "c2 600 IN A 10.0.0.3")
    trace = explain(source, peers, res)
    assert trace.hops[0].stage == "dns" and "c2 600 IN A 10.0.0.3" in trace.hops[0].decision


def test_a_df_probe_over_the_mtu_stops_in_the_container() -> None:
    trace = explain(_source(size=1460, send_error="EMSGSIZE", captures=[], vtep=[]), [])
    assert trace.stop is not None and trace.stop.where == "container"
    assert "too big for the MTU 1450 with DF" in trace.stop.why


def test_a_destination_on_no_network_of_the_source_has_no_route() -> None:
    trace = explain(_source(network=None, send_error="ENETUNREACH", captures=[], vtep=[]), [])
    assert trace.stop is not None and trace.stop.where == "container"
    assert "not on a network of c1 (ov 10.0.0.0/24)" in trace.stop.why


def test_no_fdb_entry_and_no_peers_stops_at_the_vtep() -> None:
    trace = explain(_source(vtep=[_egress("probe", "drop_no_fdb_no_peers", [])]), [])
    assert trace.stop is not None and trace.stop.where == "vtep"
    assert f"no FDB entry for {MAC_B}" in trace.stop.why


def test_a_down_peer_is_named_as_down() -> None:
    trace = explain(_source(), [PeerReport("node2", N2, "its agent does not answer")])
    assert trace.stop is not None and trace.stop.host == "node2"
    assert "peer VTEP never received it; host node2 is Down" in trace.stop.why


def test_a_live_peer_without_the_probe_is_underlay_loss() -> None:
    trace = explain(_source(), [PeerReport("node2", N2, None, [])])
    assert trace.stop is not None and trace.stop.where == "peer-vtep"
    assert "never received it" in trace.stop.why and "Down" not in trace.stop.why


def test_a_non_member_sender_is_dropped_by_the_peer() -> None:
    peer = PeerReport("node2", N2, None, [_ingress("probe", "drop_not_member")])
    trace = explain(_source(), [peer])
    assert trace.stop is not None and "not a member" in trace.stop.why


def test_a_flood_is_delivered_by_the_peer_that_took_it() -> None:
    source, _ = _answered()
    source = replace(
        source, vtep=[_egress("probe", "flood", [N2, "192.168.0.13"]), *source.vtep[1:]]
    )
    peers = [
        PeerReport("node2", N2, None, [_ingress("probe"), _egress("reply", "fdb_hit", [N1], N2)]),
        PeerReport("node3", "192.168.0.13", None, []),
    ]
    trace = explain(source, peers)
    assert trace.reached
    assert "flooded" in next(h for h in trace.hops if h.stage == "vtep").decision


def test_the_bridge_not_forwarding_to_the_tap_stops_at_the_bridge() -> None:
    trace = explain(_source(captures=_source().captures[:2], vtep=[]), [])
    assert trace.stop is not None and trace.stop.where == "bridge"


def test_same_host_destination_that_does_not_answer() -> None:
    captures = [*_source().captures[:2], Capture("port", "on-veb", "probe", 100.0003)]
    source = _source(same_host=True, dst_container="c2", tap="on-veb", captures=captures, vtep=[])
    trace = explain(source, [])
    assert trace.stop is not None and trace.stop.where == "destination"
    assert "c2 received it and did not answer" in trace.stop.why


def test_source_report_round_trips_through_json() -> None:
    source, _ = _answered()
    assert SourceReport.from_json(source.to_json()) == source


def test_an_unanswered_arp_stops_in_the_container() -> None:
    captures = [Capture("container", "eth0", "arp-request", 100.0001)]
    trace = explain(_source(captures=captures, vtep=[]), [])
    assert trace.stop is not None and trace.stop.where == "container"
    assert "ARP for 10.0.0.3 unanswered" in trace.stop.why
