"""`swarm init --force-new-cluster`'s pure parts (issue 14), no root: the Raft password follows
the epoch, the state keeps everything but its other managers, and the store forgets its place in
the old log so the new leader's first entry is a genesis of the whole state."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from overlaynet.cluster.manager import init_swarm
from overlaynet.cluster.raft import raft_password
from overlaynet.cluster.state import ClusterError, ErrorKind, Role
from overlaynet.cluster.store import ClusterStore

from .helpers import seeded_rand, snapshot

ROOT_KEY = "22" * 32


def test_the_raft_password_changes_with_each_epoch_and_epoch_0_is_unchanged() -> None:
    before_epochs = hmac.new(
        bytes.fromhex(ROOT_KEY), b"overlaynet raft password v1", hashlib.sha256
    ).hexdigest()
    # A swarm made before epochs existed keeps its password (its journals stay readable).
    assert raft_password(ROOT_KEY) == raft_password(ROOT_KEY, 0) == before_epochs
    passwords = {raft_password(ROOT_KEY, epoch) for epoch in range(4)}
    assert len(passwords) == 4


@pytest.fixture
def store3(tmp_path: Path) -> ClusterStore:
    """A swarm of three managers (node1 leads) with a network, as committed."""
    store = ClusterStore(tmp_path / "cluster.db")
    init_swarm(store, hostname="node1", advertise_addr="10.0.0.1", now=1.0, rand=seeded_rand())
    state = store.load()
    rand = seeded_rand(7)
    for n in (2, 3):
        state.join_node(
            hostname=f"node{n}", addr=f"10.0.0.{n}", role=Role.MANAGER, now=1.0, rand=rand
        )
    state.create_network("keptnet", now=1.0, rand=rand)
    store.save(state)
    return store


def node_id(store: ClusterStore, hostname: str) -> str:
    return next(n.id for n in store.load().nodes.values() if n.hostname == hostname)


def test_force_new_cluster_leaves_one_manager_in_a_new_epoch_and_keeps_the_rest(
    store3: ClusterStore,
) -> None:
    survivor = node_id(store3, "node2")
    state = store3.load()
    before = state.require_cluster()
    nodes_before = set(state.nodes)
    demoted = state.force_new_cluster(survivor, now=2.0)
    store3.save(state)

    after = store3.load()
    assert sorted(n.hostname for n in demoted) == ["node1", "node3"]
    assert [n.hostname for n in after.managers()] == ["node2"]
    assert all(after.nodes[n.id].role is Role.WORKER for n in demoted)
    cluster = after.require_cluster()
    assert cluster.leader_id == survivor and after.leader is not None
    assert cluster.raft_epoch == before.raft_epoch + 1
    assert raft_password(cluster.root_key, cluster.raft_epoch) != raft_password(before.root_key)
    # Everything else is as it was: the same keys, tokens, networks and nodes.
    assert (cluster.root_key, cluster.manager_secret) == (before.root_key, before.manager_secret)
    assert "keptnet" in {n.name for n in after.networks.values()}
    assert set(after.nodes) == nodes_before and len(nodes_before) == 3
    # A second recovery bumps the epoch again.
    again = store3.load()
    again.force_new_cluster(survivor, now=3.0)
    assert again.require_cluster().raft_epoch == cluster.raft_epoch + 1


def test_force_new_cluster_is_refused_on_a_node_that_is_not_a_manager(
    store3: ClusterStore,
) -> None:
    state = store3.load()
    state.force_new_cluster(node_id(store3, "node1"), now=2.0)
    with pytest.raises(ClusterError) as refused:
        state.force_new_cluster(node_id(store3, "node3"), now=3.0)
    assert refused.value.kind is ErrorKind.CONFLICT
    assert "node3 is not a manager" in refused.value.message


def test_forget_raft_keeps_the_records_and_starts_the_log_position_anew(
    store3: ClusterStore,
) -> None:
    records = snapshot(store3.load())
    store3.apply([], 0, raft=(41, "abcd"))
    assert store3.raft_position() == (41, "abcd")
    store3.forget_raft()
    assert store3.raft_position() == (0, None)
    assert snapshot(store3.load()) == records
