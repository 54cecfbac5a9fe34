"""The view built from the agents' answers: host states, networks, containers, tables."""

from __future__ import annotations

from overlaynet.web.model import HostState, build_view, host_state
from tests.unit.web.reports import OVERLAY, report, silent


def test_three_answering_hosts_with_alive_gossip_are_ready() -> None:
    reports = [report("node1"), report("node2"), report("node3")]
    view = build_view("lab", reports, {})
    assert [view[f"host/node{i}"]["state"] for i in (1, 2, 3)] == ["Ready"] * 3
    assert view["underlay"]["kind"] == "underlay"


def test_a_host_a_peer_declared_dead_is_down_even_while_its_agent_answers() -> None:
    reports = [report("node1", gossip={"node1": "alive", "node3": "dead"}), report("node3")]
    assert host_state(reports[1], reports) == HostState.DOWN


def test_a_suspected_host_is_suspect() -> None:
    reports = [
        report("node1", gossip={"node1": "alive", "node3": "suspect"}),
        report("node2"),
        report("node3"),
    ]
    assert host_state(reports[2], reports) == HostState.SUSPECT


def test_a_silent_agent_is_unreachable_until_gossip_declares_it_dead() -> None:
    before = [report("node1"), report("node2"), silent("node3")]
    assert host_state(before[2], before) == HostState.UNREACHABLE
    after = [
        report("node1", gossip={"node1": "alive", "node2": "alive", "node3": "dead"}),
        report("node2"),
        silent("node3"),
    ]
    assert host_state(after[2], after) == HostState.DOWN


def test_the_silent_hosts_own_stale_gossip_view_does_not_count() -> None:
    # node3's last word (everyone alive) is not asked: only answering hosts vote.
    reports = [report("node1", gossip={"node1": "alive", "node3": "dead"}), silent("node3")]
    assert host_state(reports[1], reports) == HostState.DOWN


def test_a_silent_agent_without_any_gossip_is_down() -> None:
    alone = report("node1", gossip={})
    reports = [alone, silent("node2")]
    assert host_state(reports[1], reports) == HostState.DOWN


def test_an_overlay_is_one_node_listing_the_hosts_that_joined_it() -> None:
    reports = [report("node1"), report("node2"), report("node3", on_overlay=False)]
    view = build_view("lab", reports, {})
    net = view[f"net/{OVERLAY}"]
    assert net["hosts"] == ["node1", "node2"]
    assert net["vni"] == 4097
    assert net["subnet"] == "10.0.1.0/24"


def test_bridges_are_per_host_and_host_networks_are_not_drawn() -> None:
    view = build_view("lab", [report("node1"), report("node2")], {})
    assert "net/node1/brnode1" in view and "net/node2/brnode2" in view
    assert not any(k.startswith("net/") and "hostnode" in k for k in view)


def test_containers_carry_their_networks_and_exit_code() -> None:
    rep = report("node2", containers=[("web", "running"), ("old", "exited")])
    view = build_view("lab", [rep], {})
    web = view["ctr/node2/node2-web"]
    assert web["state"] == "running" and web["exit_code"] is None
    assert web["networks"] == [{"key": f"net/{OVERLAY}", "name": "webnet", "ip": "10.0.1.2/24"}]
    assert view["ctr/node2/node2-old"]["exit_code"] == 137


def test_a_containers_age_does_not_change_the_view() -> None:
    # Docker's status says "Up 5 seconds", then "Up 6 seconds": no patch every round for that.
    a = build_view("lab", [report("node1", containers=[("c", "running")])], {})
    b = build_view(
        "lab", [report("node1", containers=[("c", "running")], status="Up 6 seconds")], {}
    )
    assert a == b


def test_member_and_endpoint_tables_name_hosts_not_node_ids() -> None:
    rep = report("node1", containers=[("web", "running")])
    view = build_view("lab", [rep, report("node2"), silent("node3")], {})
    rows = view["members/node1"]["rows"]
    assert [r["host"] for r in rows] == ["node1", "node2", "node3"]
    (entry,) = view["endpoints/node1"]["tables"]["webnet"]
    assert (entry["name"], entry["host"], entry["owner"]) == ("web", "node1", "node1")


def test_a_silent_host_keeps_its_last_known_records_marked_stale() -> None:
    first = build_view("lab", [report("node1"), report("node2", containers=[("c", "running")])], {})
    second = build_view("lab", [report("node1"), silent("node2")], first)
    ctr = second["ctr/node2/node2-c"]
    assert ctr["stale"] is True and ctr["state"] == "running"
    assert second["members/node2"]["stale"] is True
    assert "node2" in second[f"net/{OVERLAY}"]["hosts"]
    assert second["host/node2"]["agent"] == "down"
    # Back again: fresh records replace the stale ones.
    third = build_view("lab", [report("node1"), report("node2")], second)
    assert "ctr/node2/node2-c" not in third
    assert "stale" not in third["members/node2"]


def test_a_host_that_never_answered_has_no_records_but_its_own() -> None:
    view = build_view("lab", [report("node1"), silent("node2")], {})
    assert not [k for k in view if "node2" in k and k != "host/node2"]
