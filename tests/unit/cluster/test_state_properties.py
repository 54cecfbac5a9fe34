"""Random command sequences: no duplicate address, VNI or overlapping subnet; refusals change
nothing; replaying the recorded changes always rebuilds the same state."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.cluster.state import Change, ClusterError, ClusterState, Role

from .helpers import seeded_rand

HOSTS = ["h1", "h2", "h3", "h4"]
NETWORKS = ["ingress", "n1", "n1", "n2", "n3"]
ENDPOINTS = ["e1", "e2", "e3", "e4", "e5", "e6"]
# n1 (SETUP) is the first user overlay, 10.0.0.0/24; ingress is 10.255.0.0/16.
SUBNETS = [None, None, "10.0.0.0/24", "10.0.0.0/16", "10.255.1.0/24", "10.0.3.0/30", "10.0.4.0/29"]
IPS = [None, None, None, "10.0.0.2", "10.0.0.3", "10.0.3.1", "10.0.3.2", "10.0.4.6", "10.255.0.2"]

ALLOC = st.tuples(
    st.just("alloc"),
    st.sampled_from(NETWORKS),
    st.sampled_from(ENDPOINTS),
    st.sampled_from(HOSTS),
    st.sampled_from(IPS),
)
# Allocation is what most needs hammering, so it is drawn more often than the rest.
COMMANDS = st.one_of(
    ALLOC,
    ALLOC,
    ALLOC,
    st.tuples(st.just("join"), st.sampled_from(HOSTS), st.sampled_from(list(Role))),
    st.tuples(st.just("leave"), st.sampled_from(HOSTS), st.booleans(), st.booleans()),
    st.tuples(st.just("promote"), st.sampled_from(HOSTS)),
    st.tuples(st.just("demote"), st.sampled_from(HOSTS)),
    st.tuples(st.just("drain"), st.sampled_from(HOSTS), st.sampled_from(["active", "drain", "x"])),
    st.tuples(
        st.just("create"),
        st.sampled_from(NETWORKS),
        st.sampled_from(SUBNETS),
        st.sampled_from([None, None, 4097, 4100]),
    ),
    st.tuples(st.just("rm"), st.sampled_from(NETWORKS)),
    st.tuples(
        st.just("release"),
        st.sampled_from(NETWORKS),
        st.sampled_from(ENDPOINTS),
        st.sampled_from(HOSTS),
    ),
    st.tuples(st.just("rotate"), st.sampled_from(list(Role))),
)


SETUP: list[tuple[Any, ...]] = [
    ("join", "h1", Role.WORKER),
    ("join", "h2", Role.WORKER),
    ("join", "h3", Role.MANAGER),
    ("create", "n1", None, None),
    ("create", "n2", "10.0.3.0/30", None),
]


def _node_id(state: ClusterState, host: str) -> str:
    try:
        return state.find_node(host).id
    except ClusterError:
        return f"missing-{host}"


def run(state: ClusterState, cmd: tuple[Any, ...], rand: Any) -> None:
    op, *a = cmd
    if op == "join":
        state.join_node(
            hostname=a[0], addr=f"10.99.0.{HOSTS.index(a[0]) + 2}", role=a[1], now=1.0, rand=rand
        )
    elif op == "leave":
        state.remove_node(a[0], force=a[1], alive=a[2])
    elif op == "promote":
        state.promote(a[0], now=2.0)
    elif op == "demote":
        state.demote(a[0], now=2.0)
    elif op == "drain":
        state.update_node(a[0], now=3.0, availability=a[1])
    elif op == "create":
        state.create_network(a[0], now=4.0, rand=rand, subnet=a[1], vni=a[2], attachable=True)
    elif op == "rm":
        state.remove_network(a[0])
    elif op == "alloc":
        state.allocate_address(a[0], a[1], _node_id(state, a[2]), a[3])
    elif op == "release":
        state.release_address(a[0], a[1], _node_id(state, a[2]))
    elif op == "rotate":
        state.rotate_join_token(a[0], rand=rand)


def snapshot(state: ClusterState) -> tuple[list[Change], int]:
    return sorted(state.records(), key=lambda c: (c.kind, c.key)), state.index


def check_invariants(state: ClusterState) -> None:
    vnis = [n.vni for n in state.networks.values()]
    assert len(vnis) == len(set(vnis))
    subnets = [IPv4Network(n.subnet) for n in state.networks.values()]
    for i, a in enumerate(subnets):
        assert not any(a.overlaps(b) for b in subnets[i + 1 :])
    names = [n.name for n in state.networks.values()]
    assert len(names) == len(set(names))
    for net in state.networks.values():
        ips = [a.ip for a in state.allocations_on(net.id)]
        assert len(ips) == len(set(ips))
        assert net.gateway not in ips
        assert all(IPv4Address(ip) in IPv4Network(net.subnet) for ip in ips)
    for alloc in state.allocations.values():
        assert alloc.network_id in state.networks and alloc.node_id in state.nodes
    assert set(state.credentials) == set(state.nodes)
    assert state.leader is not None and state.managers()[0] == state.leader


@settings(max_examples=150, deadline=None)
@given(st.lists(COMMANDS, max_size=40))
def test_random_commands_keep_the_invariants(commands: list[tuple[Any, ...]]) -> None:
    rand = seeded_rand(7)
    state = ClusterState()
    state.init(hostname="h0", addr="10.99.0.1", now=0.0, rand=rand)
    # A populated start, so that most sampled commands act on something that exists.
    for cmd in SETUP:
        run(state, cmd, rand)
    log = state.take_changes()
    for cmd in commands:
        before = snapshot(state)
        try:
            run(state, cmd, rand)
        except ClusterError:
            assert snapshot(state) == before, f"refused {cmd} changed the state"
            assert state.take_changes() == []
        log += state.take_changes()
        check_invariants(state)
    replayed = ClusterState()
    for change in log:
        replayed.apply(change)
    assert snapshot(replayed) == snapshot(state)
