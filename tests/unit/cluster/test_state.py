"""The swarm's desired state: nodes, overlay networks, VNIs, subnets and addresses, refusals."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from overlaynet.cluster import ipam, tokens
from overlaynet.cluster.state import (
    INGRESS_SUBNET,
    Availability,
    Change,
    ClusterError,
    ClusterState,
    ErrorKind,
    ManagerStatus,
    Role,
    allocation_doc,
)

from .helpers import seeded_rand

NOW = 1_700_000_000.0


def snapshot(state: ClusterState) -> tuple[list[Change], int]:
    return sorted(state.records(), key=lambda c: (c.kind, c.key)), state.index


@pytest.fixture
def swarm() -> ClusterState:
    state = ClusterState()
    rand = seeded_rand()
    state.init(hostname="node1", addr="192.168.0.11", now=NOW, rand=rand)
    state.join_node(hostname="node2", addr="192.168.0.12", role=Role.WORKER, now=NOW, rand=rand)
    state.join_node(hostname="node3", addr="192.168.0.13", role=Role.WORKER, now=NOW, rand=rand)
    state.take_changes()
    return state


def refused(state: ClusterState, kind: ErrorKind, match: str, call, *args, **kw):  # type: ignore[no-untyped-def]
    """Assert `call` raises ClusterError of `kind` and leaves the state exactly as it was."""
    state.take_changes()
    before = snapshot(state)
    with pytest.raises(ClusterError, match=match) as info:
        call(*args, **kw)
    assert info.value.kind is kind
    assert snapshot(state) == before
    assert state.take_changes() == []
    return info.value


def node(state: ClusterState, hostname: str) -> str:
    return state.find_node(hostname).id


# ----- init and tokens -----


def test_init_makes_this_host_the_leader_with_an_ingress_overlay() -> None:
    state = ClusterState()
    leader = state.init(hostname="node1", addr="192.168.0.11", now=NOW, rand=seeded_rand())
    assert leader.role is Role.MANAGER
    assert leader.manager_status is ManagerStatus.LEADER
    assert leader.manager_addr == "192.168.0.11:2377"
    assert leader.id in state.credentials and len(state.credentials[leader.id]) == 32
    ingress = state.find_network("ingress")
    assert (ingress.subnet, ingress.gateway, ingress.vni) == ("10.255.0.0/16", "10.255.0.1", 4096)
    assert ingress.ingress and not ingress.attachable and ingress.scope == "swarm"
    assert state.cluster is not None and len(bytes.fromhex(state.cluster.gossip_key)) == 32


def test_worker_and_manager_tokens_share_the_digest_and_differ_in_the_secret(
    swarm: ClusterState,
) -> None:
    assert swarm.cluster is not None
    worker = tokens.parse_token(swarm.cluster.token(Role.WORKER))
    manager = tokens.parse_token(swarm.cluster.token(Role.MANAGER))
    assert worker.digest == manager.digest == swarm.cluster.digest
    assert worker.secret != manager.secret


def test_init_twice_is_refused(swarm: ClusterState) -> None:
    refused(
        swarm,
        ErrorKind.CONFLICT,
        "already part of a swarm",
        swarm.init,
        hostname="node1",
        addr="192.168.0.11",
        now=NOW,
        rand=seeded_rand(),
    )


def test_commands_before_init_say_there_is_no_swarm() -> None:
    state = ClusterState()
    refused(
        state,
        ErrorKind.UNAVAILABLE,
        "not a swarm manager",
        state.join_node,
        hostname="n",
        addr="10.1.1.1",
        role=Role.WORKER,
        now=NOW,
        rand=seeded_rand(),
    )


# ----- nodes -----


def test_join_records_role_and_credential(swarm: ClusterState) -> None:
    new, credential = swarm.join_node(
        hostname="node4", addr="192.168.0.14", role=Role.MANAGER, now=NOW + 1, rand=seeded_rand(9)
    )
    assert new.role is Role.MANAGER and new.manager_status is ManagerStatus.REACHABLE
    assert new.manager_addr == "192.168.0.14:2377"
    assert swarm.credentials[new.id] == credential
    assert [n.hostname for n in swarm.managers()] == ["node1", "node4"]
    worker = swarm.find_node("node2")
    assert worker.role is Role.WORKER and worker.manager_status is None


def test_joining_twice_from_the_same_address_is_refused_clearly(swarm: ClusterState) -> None:
    err = refused(
        swarm,
        ErrorKind.CONFLICT,
        "already in the swarm",
        swarm.join_node,
        hostname="node2",
        addr="192.168.0.12",
        role=Role.WORKER,
        now=NOW,
        rand=seeded_rand(5),
    )
    assert "node2" in err.message and "swarm leave" in err.message


@pytest.mark.parametrize("addr", ["", "node2", "192.168.0.300", "::1", "192.168.0.12:2377"])
def test_bad_advertise_address_is_refused(swarm: ClusterState, addr: str) -> None:
    refused(
        swarm,
        ErrorKind.INVALID,
        "invalid advertise address",
        swarm.join_node,
        hostname="x",
        addr=addr,
        role=Role.WORKER,
        now=NOW,
        rand=seeded_rand(5),
    )


@pytest.mark.parametrize("hostname", ["", "-x", "a b", "x" * 254])
def test_bad_hostname_is_refused(swarm: ClusterState, hostname: str) -> None:
    refused(
        swarm,
        ErrorKind.INVALID,
        "invalid hostname",
        swarm.join_node,
        hostname=hostname,
        addr="10.9.9.9",
        role=Role.WORKER,
        now=NOW,
        rand=seeded_rand(5),
    )


def test_nodes_are_found_by_id_hostname_or_unique_prefix(swarm: ClusterState) -> None:
    n2 = swarm.find_node("node2")
    assert swarm.find_node(n2.id) == n2
    assert swarm.find_node(n2.id[:6]) == n2
    refused(swarm, ErrorKind.NOT_FOUND, "node nodeX not found", swarm.find_node, "nodeX")


def test_duplicate_hostnames_must_be_named_by_id(swarm: ClusterState) -> None:
    swarm.join_node(
        hostname="node2", addr="192.168.0.22", role=Role.WORKER, now=NOW, rand=seeded_rand(7)
    )
    refused(swarm, ErrorKind.INVALID, "ambiguous", swarm.find_node, "node2")


def test_update_availability(swarm: ClusterState) -> None:
    updated = swarm.update_node("node2", now=NOW + 5, availability="drain")
    assert updated.availability is Availability.DRAIN and updated.updated == NOW + 5
    assert swarm.find_node("node2").availability is Availability.DRAIN
    assert len(swarm.take_changes()) == 1
    swarm.update_node("node2", now=NOW + 6, availability="drain")
    assert swarm.take_changes() == []
    refused(
        swarm,
        ErrorKind.INVALID,
        "use active, pause or drain",
        swarm.update_node,
        "node2",
        now=NOW,
        availability="sleep",
    )


def test_promote_then_demote(swarm: ClusterState) -> None:
    promoted = swarm.promote("node2", now=NOW + 1)
    assert promoted.role is Role.MANAGER and promoted.manager_status is ManagerStatus.REACHABLE
    assert promoted.manager_addr == "192.168.0.12:2377"
    demoted = swarm.demote("node2", now=NOW + 2)
    assert demoted.role is Role.WORKER
    assert demoted.manager_status is None and demoted.manager_addr is None


def test_the_last_manager_cannot_be_demoted(swarm: ClusterState) -> None:
    refused(swarm, ErrorKind.CONFLICT, "last manager", swarm.demote, "node1", now=NOW)


def test_the_leader_cannot_be_demoted_because_there_is_no_election(swarm: ClusterState) -> None:
    swarm.promote("node2", now=NOW)
    refused(swarm, ErrorKind.CONFLICT, "Raft leader", swarm.demote, "node1", now=NOW)


def test_removing_a_dead_worker_frees_its_addresses_and_credential(swarm: ClusterState) -> None:
    net = swarm.create_network("myoverlay", now=NOW, rand=seeded_rand(3), attachable=True)
    n2 = node(swarm, "node2")
    swarm.allocate_address("myoverlay", "ep1", n2)
    swarm.allocate_address("myoverlay", "ep2", node(swarm, "node3"))
    swarm.remove_node("node2", alive=False)
    assert n2 not in swarm.nodes and n2 not in swarm.credentials
    assert [a.endpoint_id for a in swarm.allocations_on(net.id)] == ["ep2"]


def test_a_live_node_holding_addresses_cannot_be_removed_even_by_force(
    swarm: ClusterState,
) -> None:
    """Issue 18: `node rm --force` of a live node freed addresses its containers still used."""
    swarm.create_network("myoverlay", now=NOW, rand=seeded_rand(3), attachable=True)
    n2 = node(swarm, "node2")
    held = swarm.allocate_address("myoverlay", "ep1", n2)
    for force in (False, True):
        refused(
            swarm,
            ErrorKind.CONFLICT,
            r"node2 is up and its containers hold 1 overlay address\(es\) on myoverlay",
            swarm.remove_node,
            "node2",
            force=force,
        )
    # The address stays reserved: the next endpoint elsewhere gets another one.
    n3 = node(swarm, "node3")
    assert swarm.allocate_address("myoverlay", "ep2", n3).ip != held.ip
    # Once its own node released it, a live node without addresses may go, credential and all.
    swarm.release_address("myoverlay", "ep2", n3)
    swarm.remove_node("node3", force=True)
    assert n3 not in swarm.nodes and n3 not in swarm.credentials


def test_only_the_owner_releases_an_address(swarm: ClusterState) -> None:
    """Issue 18: a manager freeing another node's endpoint hands its IP and MAC out twice."""
    swarm.create_network("myoverlay", now=NOW, rand=seeded_rand(3), attachable=True)
    held = swarm.allocate_address("myoverlay", "ep1", node(swarm, "node2"))
    refused(
        swarm,
        ErrorKind.FORBIDDEN,
        "belongs to node2",
        swarm.release_address,
        "myoverlay",
        "ep1",
        node(swarm, "node1"),
    )
    assert swarm.allocate_address("myoverlay", "ep2", node(swarm, "node1")).ip != held.ip


def test_rotating_a_join_token_changes_only_that_secret(swarm: ClusterState) -> None:
    assert swarm.cluster is not None
    before = swarm.cluster
    after = swarm.rotate_join_token(Role.WORKER, rand=seeded_rand(9))
    assert after.worker_secret != before.worker_secret
    assert after.manager_secret == before.manager_secret and after.digest == before.digest
    assert swarm.take_changes()[0].kind == "cluster"
    again = swarm.rotate_join_token(Role.MANAGER, rand=seeded_rand(10))
    assert again.manager_secret != before.manager_secret
    assert again.worker_secret == after.worker_secret


def test_gossip_key_rotation_keeps_a_keyring_of_three_then_retires(swarm: ClusterState) -> None:
    assert swarm.cluster is not None
    first = swarm.cluster.gossip_key
    rand = seeded_rand(11)
    keys = [swarm.rotate_gossip_key(rand=rand).gossip_key for _ in range(3)]
    assert swarm.cluster.gossip_keyring == [keys[2], keys[1], keys[0]]
    assert first not in swarm.cluster.gossip_keyring
    swarm.take_changes()
    # The keyring survives the store (JSON has no tuples) and replication.
    copy = ClusterState.from_records(swarm.records(), swarm.index)
    assert copy.cluster == swarm.cluster
    assert swarm.retire_gossip_keys().gossip_keyring == [keys[2]]
    assert swarm.retire_gossip_keys().gossip_keyring == [keys[2]]
    assert len(swarm.take_changes()) == 1


def test_managers_need_force_and_the_leader_cannot_be_removed(swarm: ClusterState) -> None:
    swarm.promote("node2", now=NOW)
    refused(swarm, ErrorKind.CONFLICT, "demote it first", swarm.remove_node, "node2")
    refused(swarm, ErrorKind.CONFLICT, "leader", swarm.remove_node, "node1", force=True)
    swarm.remove_node("node2", force=True)
    assert [n.hostname for n in swarm.managers()] == ["node1"]


# ----- networks -----


def test_user_overlays_come_after_ingress(swarm: ClusterState) -> None:
    rand = seeded_rand(3)
    first = swarm.create_network("myoverlay", now=NOW, rand=rand, attachable=True)
    second = swarm.create_network("other", now=NOW, rand=rand)
    assert (first.subnet, first.gateway, first.vni) == ("10.0.0.0/24", "10.0.0.1", 4097)
    assert (second.subnet, second.vni) == ("10.0.1.0/24", 4098)
    assert first.attachable and not second.attachable


def test_the_first_user_overlay_is_the_tutorial_s_10_0_0_0_24(swarm: ClusterState) -> None:
    # Ingress sits on 10.255.0.0/16 (DESIGN.md), so the tutorial's first overlay gets the bottom
    # of the pool and its first container 10.0.0.2 (the gateway keeps 10.0.0.1).
    net = swarm.create_network("test-net", now=NOW, rand=seeded_rand(3), attachable=True)
    assert (net.subnet, net.gateway, net.vni) == ("10.0.0.0/24", "10.0.0.1", 4097)
    assert swarm.allocate_address("test-net", "ep1", node(swarm, "node2")).ip == "10.0.0.2"


def test_the_subnet_allocator_never_hands_out_part_of_ingress(swarm: ClusterState) -> None:
    ingress = IPv4Network(swarm.find_network("ingress").subnet)
    assert ingress == INGRESS_SUBNET == IPv4Network("10.255.0.0/16")
    rand = seeded_rand(3)
    # Fill the pool below ingress but for its last /24, so the walk starts at 10.0.0.0/24 and
    # has to go all the way up to ingress.
    last_free = IPv4Network("10.254.255.0/24")
    pool, _prefix = ipam.OVERLAY_POOLS[0]
    below = [*pool.address_exclude(ingress)]
    fill = [
        p
        for net in below
        for p in (net.address_exclude(last_free) if last_free.subnet_of(net) else [net])
    ]
    for i, part in enumerate(sorted(fill)):
        swarm.create_network(f"fill{i}", now=NOW, rand=rand, subnet=str(part))
    assert swarm.create_network("last", now=NOW, rand=rand).subnet == str(last_free)
    # Next in the pool would be 10.255.0.0/24, inside ingress: the pool is full instead.
    refused(
        swarm, ErrorKind.INVALID, "fully subnetted", swarm.create_network, "x", now=NOW, rand=rand
    )
    users = [IPv4Network(n.subnet) for n in swarm.networks.values() if not n.ingress]
    assert not any(u.overlaps(ingress) for u in users)


def test_freed_vni_and_subnet_are_reused(swarm: ClusterState) -> None:
    rand = seeded_rand(3)
    swarm.create_network("a", now=NOW, rand=rand)
    swarm.create_network("b", now=NOW, rand=rand)
    swarm.remove_network("a")
    again = swarm.create_network("c", now=NOW, rand=rand)
    assert (again.subnet, again.vni) == ("10.0.0.0/24", 4097)


def test_network_with_given_subnet_gateway_vni_and_labels(swarm: ClusterState) -> None:
    net = swarm.create_network(
        "lab",
        now=NOW,
        rand=seeded_rand(3),
        subnet="10.20.0.0/16",
        gateway="10.20.0.254",
        vni=5000,
        labels={"team": "net"},
    )
    assert (net.subnet, net.gateway, net.vni) == ("10.20.0.0/16", "10.20.0.254", 5000)
    assert dict(net.labels) == {"team": "net"}


def test_network_refusals(swarm: ClusterState) -> None:
    rand = seeded_rand(3)
    swarm.create_network("myoverlay", now=NOW, rand=rand, vni=5000)
    refused(
        swarm,
        ErrorKind.CONFLICT,
        "network with name myoverlay already exists",
        swarm.create_network,
        "myoverlay",
        now=NOW,
        rand=rand,
    )
    refused(
        swarm,
        ErrorKind.INVALID,
        "invalid network name",
        swarm.create_network,
        "bad name",
        now=NOW,
        rand=rand,
    )
    refused(
        swarm,
        ErrorKind.CONFLICT,
        "overlaps with ingress",
        swarm.create_network,
        "x",
        now=NOW,
        rand=rand,
        subnet="10.255.1.0/24",
    )
    refused(
        swarm,
        ErrorKind.INVALID,
        "invalid subnet",
        swarm.create_network,
        "x",
        now=NOW,
        rand=rand,
        subnet="10.0.0.1/24",
    )
    refused(
        swarm,
        ErrorKind.INVALID,
        "gateway",
        swarm.create_network,
        "x",
        now=NOW,
        rand=rand,
        subnet="10.50.0.0/24",
        gateway="10.51.0.1",
    )
    refused(
        swarm,
        ErrorKind.CONFLICT,
        "VXLAN id 5000 is already in use",
        swarm.create_network,
        "x",
        now=NOW,
        rand=rand,
        vni=5000,
    )
    refused(
        swarm,
        ErrorKind.INVALID,
        "invalid VXLAN id",
        swarm.create_network,
        "x",
        now=NOW,
        rand=rand,
        vni=100,
    )
    refused(swarm, ErrorKind.NOT_FOUND, "network nope not found", swarm.remove_network, "nope")


def test_network_in_use_cannot_be_removed(swarm: ClusterState) -> None:
    swarm.create_network("myoverlay", now=NOW, rand=seeded_rand(3), attachable=True)
    swarm.allocate_address("myoverlay", "ep1", node(swarm, "node2"))
    refused(
        swarm, ErrorKind.CONFLICT, "1 active endpoint.*node2", swarm.remove_network, "myoverlay"
    )
    swarm.release_address("myoverlay", "ep1", node(swarm, "node2"))
    assert swarm.remove_network("myoverlay").name == "myoverlay"


# ----- addresses -----


@pytest.fixture
def overlay(swarm: ClusterState) -> ClusterState:
    swarm.create_network("myoverlay", now=NOW, rand=seeded_rand(3), attachable=True)
    swarm.take_changes()
    return swarm


def test_addresses_start_after_the_gateway_and_are_never_duplicated(overlay: ClusterState) -> None:
    n2, n3 = node(overlay, "node2"), node(overlay, "node3")
    ips = [
        overlay.allocate_address("myoverlay", f"ep{i}", n2 if i % 2 else n3).ip for i in range(5)
    ]
    assert ips == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]


def test_asking_again_for_the_same_endpoint_returns_the_same_address(overlay: ClusterState) -> None:
    n2 = node(overlay, "node2")
    first = overlay.allocate_address("myoverlay", "ep1", n2)
    overlay.take_changes()
    assert overlay.allocate_address("myoverlay", "ep1", n2) == first
    assert overlay.allocate_address("myoverlay", "ep1", n2, first.ip) == first
    assert overlay.take_changes() == []


def test_address_refusals(overlay: ClusterState) -> None:
    n2, n3 = node(overlay, "node2"), node(overlay, "node3")
    overlay.allocate_address("myoverlay", "ep1", n2, "10.0.0.50")
    refused(
        overlay,
        ErrorKind.CONFLICT,
        "already has address 10.0.0.50",
        overlay.allocate_address,
        "myoverlay",
        "ep1",
        n3,
    )
    refused(
        overlay,
        ErrorKind.CONFLICT,
        "10.0.0.50 is already in use",
        overlay.allocate_address,
        "myoverlay",
        "ep2",
        n3,
        "10.0.0.50",
    )
    refused(
        overlay,
        ErrorKind.CONFLICT,
        "10.0.0.1 is already in use",
        overlay.allocate_address,
        "myoverlay",
        "ep2",
        n3,
        "10.0.0.1",
    )
    refused(
        overlay,
        ErrorKind.INVALID,
        "not a usable address",
        overlay.allocate_address,
        "myoverlay",
        "ep2",
        n3,
        "10.0.1.9",
    )
    refused(
        overlay,
        ErrorKind.INVALID,
        "invalid IP address",
        overlay.allocate_address,
        "myoverlay",
        "ep2",
        n3,
        "ten",
    )
    refused(
        overlay,
        ErrorKind.FORBIDDEN,
        "not manually attachable.*--attachable",
        overlay.allocate_address,
        "ingress",
        "ep2",
        n3,
    )
    refused(
        overlay,
        ErrorKind.NOT_FOUND,
        "not in the swarm",
        overlay.allocate_address,
        "myoverlay",
        "ep2",
        "nosuchnode",
    )
    refused(
        overlay,
        ErrorKind.INVALID,
        "invalid endpoint id",
        overlay.allocate_address,
        "myoverlay",
        "../x",
        n3,
    )


def test_a_full_subnet_says_so(swarm: ClusterState) -> None:
    swarm.create_network(
        "tiny", now=NOW, rand=seeded_rand(3), subnet="10.9.0.0/30", attachable=True
    )
    n2 = node(swarm, "node2")
    assert swarm.allocate_address("tiny", "ep1", n2).ip == "10.9.0.2"
    refused(
        swarm, ErrorKind.CONFLICT, "no addresses left", swarm.allocate_address, "tiny", "ep2", n2
    )


def test_release_is_for_the_owner_and_idempotent(overlay: ClusterState) -> None:
    n2, n3 = node(overlay, "node2"), node(overlay, "node3")
    alloc = overlay.allocate_address("myoverlay", "ep1", n2)
    refused(
        overlay,
        ErrorKind.FORBIDDEN,
        "belongs to node2",
        overlay.release_address,
        "myoverlay",
        "ep1",
        n3,
    )
    assert overlay.release_address("myoverlay", "ep1", n2) == alloc
    assert overlay.release_address("myoverlay", "ep1", n2) is None
    # The freed address is the next one handed out.
    assert overlay.allocate_address("myoverlay", "ep2", n3).ip == alloc.ip


def test_allocation_doc_has_what_an_agent_plumbs(overlay: ClusterState) -> None:
    alloc = overlay.allocate_address("myoverlay", "ep1", node(overlay, "node2"))
    doc = allocation_doc(alloc, overlay.find_network("myoverlay"))
    assert doc["address"] == "10.0.0.2/24" and doc["mac"] == "02:42:0a:00:00:02"
    assert (doc["vni"], doc["gateway"], doc["network_name"]) == (4097, "10.0.0.1", "myoverlay")


# ----- changes: persistence and replication replay them -----


def test_replaying_the_changes_rebuilds_the_same_state() -> None:
    leader, follower = ClusterState(), ClusterState()
    rand = seeded_rand()
    leader.init(hostname="node1", addr="10.1.0.1", now=NOW, rand=rand)
    n2, _ = leader.join_node(
        hostname="node2", addr="10.1.0.2", role=Role.WORKER, now=NOW, rand=rand
    )
    leader.create_network("o", now=NOW, rand=rand, attachable=True)
    leader.allocate_address("o", "ep1", n2.id)
    leader.allocate_address("o", "ep2", n2.id)
    leader.release_address("o", "ep1", n2.id)
    leader.promote("node2", now=NOW)
    for change in leader.take_changes():
        follower.apply(change)
    assert snapshot(follower) == snapshot(leader)
    copy = ClusterState.from_records(leader.records(), leader.index)
    assert snapshot(copy) == snapshot(leader)
    # Indexes of addresses in use are rebuilt too: the next address skips ep2's.
    assert copy.allocate_address("o", "ep3", n2.id).ip == "10.0.0.2"
    assert copy.allocate_address("o", "ep4", n2.id).ip == "10.0.0.4"
