"""The cluster store: what a manager committed is what it loads after a restart."""

from __future__ import annotations

from pathlib import Path

from overlaynet.cluster.state import Change, ClusterState, Role
from overlaynet.cluster.store import ClusterStore

from .helpers import seeded_rand


def snapshot(state: ClusterState) -> tuple[list[Change], int]:
    return sorted(state.records(), key=lambda c: (c.kind, c.key)), state.index


def test_a_new_store_loads_an_empty_state(tmp_path: Path) -> None:
    store = ClusterStore(tmp_path / "cluster.db")
    state = store.load()
    assert state.cluster is None and state.index == 0 and not state.nodes


def test_reopening_the_store_gives_the_same_state(tmp_path: Path) -> None:
    path = tmp_path / "cluster.db"
    store = ClusterStore(path)
    state = ClusterState()
    rand = seeded_rand()
    state.init(hostname="node1", addr="10.1.0.1", now=1.0, rand=rand)
    store.save(state)
    n2, _ = state.join_node(hostname="node2", addr="10.1.0.2", role=Role.WORKER, now=2.0, rand=rand)
    state.create_network("myoverlay", now=3.0, rand=rand, attachable=True, labels={"a": "b"})
    store.save(state)
    state.allocate_address("myoverlay", "ep1", n2.id)
    state.allocate_address("myoverlay", "ep2", n2.id)
    state.release_address("myoverlay", "ep1", n2.id)
    state.update_node("node2", now=4.0, availability="drain")
    store.save(state)
    store.close()

    reopened = ClusterStore(path).load()
    assert snapshot(reopened) == snapshot(state)
    assert reopened.find_network("myoverlay").labels == {"a": "b"}
    assert reopened.allocate_address("myoverlay", "ep3", n2.id).ip == "10.0.0.2"


def test_replace_installs_a_snapshot(tmp_path: Path) -> None:
    leader = ClusterState()
    leader.init(hostname="node1", addr="10.1.0.1", now=1.0, rand=seeded_rand())
    store = ClusterStore(tmp_path / "follower.db")
    other = ClusterState()
    other.init(hostname="old", addr="10.2.0.1", now=1.0, rand=seeded_rand(2))
    store.save(other)
    store.replace(leader.records(), leader.index)
    assert snapshot(store.load()) == snapshot(leader)


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    store = ClusterStore(tmp_path / "cluster.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
