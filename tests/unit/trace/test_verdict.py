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


def test_a_partitioned_peer_is_named_with_the_rule_that_drops_it() -> None:
    rule = "lab partition: table ip onet_impair on node1: ip saddr 192.168.0.12 drop"
    peer = PeerReport("node2", N2, None, [], partitioned=rule, gossip="alive")
    trace = explain(_source(), [peer])
    assert trace.stop is not None and trace.stop.host == "node2"
    assert trace.stop.where == "peer-vtep"
    want = f"peer VTEP never received it; node2 is partitioned from node1 ({rule})"
    assert trace.stop.why == want


def test_a_peer_gossip_has_dead_is_down_even_when_its_agent_answers() -> None:
    peer = PeerReport("node2", N2, None, [], partitioned="lab partition", gossip="dead")
    trace = explain(_source(), [peer])
    assert trace.stop is not None
    assert trace.stop.why.startswith("peer VTEP never received it; host node2 is Down")
    # Once the dead host's endpoints left the FDB, the VTEP has nowhere to send: it says why.
    source = _source(vtep=[_egress("probe", "drop_no_fdb_no_peers", [])])
    trace = explain(source, [peer])
    assert trace.stop is not None and trace.stop.where == "vtep"
    assert "host node2 is Down (gossip on node1, partitioned from node1" in trace.stop.why
    assert f"no FDB entry for {MAC_B}" in trace.stop.why


def test_an_encrypted_overlay_names_the_sealing_and_opening_key() -> None:
    source, peers = _answered()
    out = {**source.vtep[0], "encrypted": True, "key_id": 3}
    source = replace(source, vtep=[out, *source.vtep[1:]])
    got = {**peers[0].vtep[0], "encrypted": True, "key_id": 3}
    peers = [replace(peers[0], vtep=[got, *peers[0].vtep[1:]])]
    trace = explain(source, peers)
    assert trace.reached
    decisions = {h.stage: h.decision for h in trace.hops if h.stage != "reply"}
    assert decisions["vtep"].endswith("VNI 4300, sealed with key 3")
    assert "AES-GCM sealed" in decisions["underlay"]
    assert "opened with key 3" in decisions["peer-vtep"]


def test_a_reset_is_an_answer_that_says_nothing_listens() -> None:
    source, peers = _answered()
    source = replace(source, proto="tcp:81", reply="TCP RST from port 81 (closed)")
    trace = explain(source, peers)
    assert trace.reached and trace.stop is None
    assert trace.outcome == "reset by the destination 10.0.0.3: nothing listens on tcp/81"
    assert "Result: answered: reset by the destination" in table(trace)


def test_a_vip_the_service_rule_rejects_is_filtered_not_answered() -> None:
    lb = {"sandbox": "lb_ov", "key": "10.0.0.9:*/tcp", "service": "web", "table": "onet_lb",
          "rule": "reject", "backends": []}  # fmt: skip
    source = _source(
        dst_ip="10.0.0.9",
        proto="tcp:80",
        same_host=True,
        dst_container="lb_ov",
        tap="on-velb",
        captures=[
            Capture("container", "eth0", "probe", 100.0001),
            Capture("veth", "on-vea", "probe", 100.0002, "02:42:0a:00:00:02", MAC_B),
            Capture("port", "on-velb", "probe", 100.0003),
        ],
        reply_at=100.001,
        reply="TCP RST from port 80 (closed)",
        lb=lb,
    )
    trace = explain(source, [])
    assert not trace.reached and trace.stop is not None
    assert trace.stop.where == "destination"
    assert trace.stop.why.startswith("filtered by a service rule: VIP 10.0.0.9:*/tcp")
    assert "service web" in trace.stop.why and "table ip onet_lb in lb_ov" in trace.stop.why
    # The same RST with backends behind the VIP is the destination's own answer.
    trace = explain(replace(source, lb={**lb, "rule": "dnat", "backends": ["10.0.0.7"]}), [])
    assert trace.reached and trace.outcome.startswith("reset by the destination lb_ov")


def test_a_probe_seen_on_no_port_never_left_the_container() -> None:
    # The kernel held it (neighbour not resolved in time): the container is named, not the veth.
    trace = explain(_source(captures=[]), [])
    assert trace.stop is not None and trace.stop.where == "container"
    assert trace.stop.why.startswith("the probe never left c1 eth0")


def test_a_probe_on_the_sources_second_network_names_its_eth1() -> None:
    # trace FROM TO --network NET2 (or a TO only NET2 reaches): the probe leaves FROM's eth1,
    # and the hops said eth0, the interface of its other network.
    source, peers = _answered()
    second = replace(
        source,
        ifname="eth1",
        captures=[
            replace(c, port="eth1") if c.stage == "container" else c for c in source.captures
        ],
    )
    trace = explain(second, peers)
    assert trace.hops[0].where == "c1 eth1" and trace.hops[-1].where == "c1 eth1"
    too_big = explain(_source(ifname="eth1", size=1460, send_error="EMSGSIZE", captures=[]), [])
    assert too_big.stop is not None and too_big.stop.why.startswith("c1 eth1: too big")
