"""Whole-cluster behaviour on the deterministic simulator: failure detection, withdrawal of a
dead host's entries, leaves, partitions and network scoping."""

from __future__ import annotations

from overlaynet.gossip.config import LAB_CONFIG
from overlaynet.gossip.sim import LinkModel, Simulator
from overlaynet.wire.gossip import MemberState

CONFIG = LAB_CONFIG.with_changes(push_pull_interval=5.0, reconnect_interval=3.0)


def cluster(n: int, link: LinkModel | None = None, seed: int = 1) -> Simulator:
    sim = Simulator(CONFIG, seed=seed, link=link)
    for i in range(n):
        sim.add_node(f"h{i}")
    for i in range(1, n):
        sim.join(f"h{i}", ["h0"])
    sim.run_for(5.0)
    return sim


def states(sim: Simulator, observer: str) -> dict[str, MemberState]:
    return {m.name: m.state for m in sim.node(observer).members()}


def all_in_network(sim: Simulator, network: str) -> None:
    for name in sim.live_names():
        sim.act(name, lambda node, now: node.join_network(network, now))


def test_joined_nodes_all_see_each_other_alive() -> None:
    sim = cluster(8)
    for name in sim.live_names():
        assert set(states(sim, name).values()) == {MemberState.ALIVE}
        assert len(states(sim, name)) == 8


def test_a_crashed_host_is_declared_dead_and_its_entries_withdrawn_everywhere() -> None:
    sim = cluster(6)
    all_in_network(sim, "net")
    sim.act("h3", lambda node, now: node.set_entry("ep", "net", "e3", b"v", now))
    sim.run_for(3.0)
    assert all("e3" in sim.node(n).entries("ep", "net") for n in sim.live_names())
    sim.crash("h3")
    sim.run_for(20.0)
    for name in sim.live_names():
        assert states(sim, name)["h3"] == MemberState.DEAD
        assert sim.node(name).entries("ep", "net") == {}


def test_a_graceful_leave_is_seen_as_left_not_dead() -> None:
    sim = cluster(5)
    sim.act("h2", lambda node, now: node.leave(now))
    sim.run_for(1.0)
    sim.crash("h2")
    sim.run_for(10.0)
    assert all(states(sim, n)["h2"] == MemberState.LEFT for n in sim.live_names())


def test_updates_reach_everyone_through_loss_and_duplication() -> None:
    sim = cluster(20, LinkModel(loss=0.1, duplicate=0.1))
    all_in_network(sim, "net")
    sim.run_for(2.0)
    sim.act("h7", lambda node, now: node.set_entry("ep", "net", "k", b"v", now))
    sim.run_for(3.0)
    assert all("k" in sim.node(n).entries("ep", "net") for n in sim.live_names())


def test_tables_stay_inside_the_network_until_a_host_attaches() -> None:
    sim = cluster(4)
    for name in ("h0", "h1"):
        sim.act(name, lambda node, now: node.join_network("net", now))
    sim.act("h0", lambda node, now: node.set_entry("ep", "net", "k", b"v", now))
    sim.run_for(3.0)
    assert "net" not in sim.node("h3").networks()
    assert sim.node("h3").entries("ep", "net") == {}
    sim.act("h3", lambda node, now: node.join_network("net", now))
    sim.run_for(1.0)
    assert "k" in sim.node("h3").entries("ep", "net")


def test_a_healed_partition_merges_back_with_identical_tables() -> None:
    sim = cluster(6)
    all_in_network(sim, "net")
    sim.run_for(1.0)
    sim.partition({"h0", "h1", "h2"}, {"h3", "h4", "h5"})
    sim.act("h1", lambda node, now: node.set_entry("ep", "net", "left", b"1", now))
    sim.act("h4", lambda node, now: node.set_entry("ep", "net", "right", b"2", now))
    sim.run_for(30.0)
    assert states(sim, "h0")["h4"] == MemberState.DEAD
    sim.heal()
    sim.run_for(40.0)
    views = [sim.node(n).entries("ep", "net") for n in sim.live_names()]
    assert all(v == views[0] for v in views)
    assert set(views[0]) == {"left", "right"}
    for name in sim.live_names():
        assert set(states(sim, name).values()) == {MemberState.ALIVE}


def test_the_same_seed_gives_the_same_run() -> None:
    runs = []
    for _ in range(2):
        sim = cluster(10, LinkModel(loss=0.1), seed=7)
        sim.run_for(10.0)
        runs.append([s.bytes_sent for s in sim.nodes.values()])
    assert runs[0] == runs[1]
