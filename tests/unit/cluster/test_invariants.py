"""The address invariant helper: no IP and no MAC twice in one network, across all hosts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.cluster.invariants import AddressUse, allocated_uses, duplicate_addresses
from overlaynet.cluster.state import ClusterState, Role

from .helpers import seeded_rand


def use(endpoint: str, ip: str, mac: str, host: str = "node1", network: str = "net") -> AddressUse:
    return AddressUse(network, endpoint, ip, mac, host)


def test_one_endpoint_seen_by_several_observers_is_no_duplicate() -> None:
    uses = [
        use("ep1", "10.0.1.2", "02:42:0a:00:01:02", "node1"),
        use("ep1", "10.0.1.2", "02:42:0A:00:01:02", "managers"),
        use("ep2", "10.0.1.3", "02:42:0a:00:01:03", "node2"),
    ]
    assert duplicate_addresses(uses) == []


def test_the_same_ip_and_mac_on_two_hosts_is_reported_twice() -> None:
    uses = [
        use("ep1", "10.0.1.2", "02:42:0a:00:01:02", "node1"),
        use("ep2", "10.0.1.2", "02:42:0a:00:01:02", "node2"),
        use("ep3", "10.0.1.2", "02:42:0a:00:01:02", "node3", network="other"),
    ]
    found = duplicate_addresses(uses)
    assert [(d.network, d.field, d.value) for d in found] == [
        ("net", "IP", "10.0.1.2"),
        ("net", "MAC", "02:42:0a:00:01:02"),
    ]
    assert str(found[0]) == (
        "IP 10.0.1.2 is given twice on network net: ep1 on node1, ep2 on node2"
    )


def test_a_mac_given_twice_with_different_ips_is_found() -> None:
    uses = [
        use("ep1", "10.0.1.2", "02:42:0a:00:01:02"),
        use("ep2", "10.0.1.3", "02:42:0a:00:01:02"),
    ]
    assert [d.field for d in duplicate_addresses(uses)] == ["MAC"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), max_size=12))
def test_the_managers_allocations_never_duplicate(endpoints: list[str]) -> None:
    state = ClusterState()
    rand = seeded_rand(5)
    state.init(hostname="n1", addr="10.99.0.1", now=0.0, rand=rand)
    node, _ = state.join_node(hostname="n2", addr="10.99.0.2", role=Role.WORKER, now=0.0, rand=rand)
    state.create_network("o", now=0.0, rand=rand, attachable=True)
    for ep in endpoints:
        state.allocate_address("o", ep, node.id)
        if ep in "ace":
            state.release_address("o", ep, node.id)
    assert duplicate_addresses(allocated_uses(state)) == []
