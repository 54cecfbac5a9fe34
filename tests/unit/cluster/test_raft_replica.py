"""What managers apply from the Raft log (raft_replica.py), over a scripted log that commits
when the test says so: every manager ends with the same records, a leader's entries computed on
a state that is no longer current are refused everywhere, and a replayed journal changes
nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from overlaynet.cluster.errors import ManagerStatus
from overlaynet.cluster.manager import init_swarm
from overlaynet.cluster.raft import OnDone, OnEntry, RaftLog
from overlaynet.cluster.raft_replica import RaftReplica
from overlaynet.cluster.replication import RaftStatus
from overlaynet.cluster.state import ClusterError, ClusterState, ErrorKind, Role
from overlaynet.cluster.store import ClusterStore

from .helpers import refused, seeded_rand, snapshot


class ScriptedLog:
    """A Raft log shared by the test's managers: `submit` proposes, `commit` delivers every
    proposal in order to every manager (as PySyncObj applies, then calls back)."""

    def __init__(self) -> None:
        self.members: list[OnEntry] = []
        self.proposed: list[tuple[str, OnDone]] = []
        self.committed: list[str] = []

    def commit(self, count: int | None = None) -> None:
        take = self.proposed[: len(self.proposed) if count is None else count]
        del self.proposed[: len(take)]
        for text, done in take:
            self.committed.append(text)
            for on_entry in self.members:
                on_entry(len(self.committed) + 1, text)  # index 1 is PySyncObj's own no-op
            done(True, "success")

    def replay(self, on_entry: OnEntry) -> None:
        for i, text in enumerate(self.committed):
            on_entry(i + 2, text)


class Member:
    """One manager's side of the shared log (RaftLog's interface)."""

    def __init__(self, log: ScriptedLog, addr: str, on_entry: OnEntry) -> None:
        self.log = log
        self.addr = addr
        log.members.append(on_entry)
        self.leading = False

    @property
    def is_leader(self) -> bool:
        return self.leading

    def submit(self, text: str, done: OnDone) -> None:
        self.log.proposed.append((text, done))

    def status(self) -> RaftStatus:
        return RaftStatus(self.addr, 1, 1, 1, self.addr if self.leading else None, self.leading)

    async def start(self) -> None:
        return None

    def close(self) -> None:
        return None


class Manager:
    def __init__(self, log: ScriptedLog, store: ClusterStore, addr: str, seed: int) -> None:
        self.store = store
        self.state = store.load()
        ids = seeded_rand(seed)
        self.member: Member | None = None

        def make_log(on_entry: OnEntry) -> RaftLog:
            self.member = Member(log, addr, on_entry)
            return cast(RaftLog, self.member)

        self.replica = RaftReplica(
            store, lambda: self.state, self.set_state, lambda: ids(8).hex(), make_log, Counter()
        )

    def set_state(self, state: ClusterState) -> None:
        self.state = state

    def write(self, command: Callable[[ClusterState], object]) -> str:
        """Run a command on this manager's memory and submit its changes; the entry's id."""
        command(self.state)
        self.replica.submit(self.state.take_changes(), self.state.index, None)
        assert self.replica.last_submitted is not None
        return self.replica.last_submitted


def network(name: str) -> Callable[[ClusterState], object]:
    rand = seeded_rand(hash(name) % 1000)
    return lambda state: state.create_network(name, now=1.0, rand=rand)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[ScriptedLog, Manager, Manager]:
    log = ScriptedLog()
    first = ClusterStore(tmp_path / "a.db")
    init_swarm(first, hostname="node1", advertise_addr="127.0.0.1", now=1.0, rand=seeded_rand())
    a = Manager(log, first, "127.0.0.1:2378", 1)
    b = Manager(log, ClusterStore(tmp_path / "b.db"), "127.0.0.2:2378", 2)
    return log, a, b


def same_everywhere(*managers: Manager) -> None:
    first = snapshot(managers[0].store.load())
    for m in managers:
        assert snapshot(m.store.load()) == first
        assert snapshot(m.state) == first
        assert not m.replica.pending


async def test_committed_entries_give_every_manager_the_same_records(
    pair: tuple[ScriptedLog, Manager, Manager],
) -> None:
    log, a, b = pair
    entry = a.write(network("alpha"))
    # The first write brings the genesis (swarm init's records) before it.
    assert len(log.proposed) == 2
    assert "alpha" in {n.name for n in a.state.networks.values()}  # memory runs ahead...
    assert not b.state.networks  # ...of the log
    log.commit()
    await a.replica.settle(entry)
    same_everywhere(a, b)
    assert {n.name for n in b.state.networks.values()} == {"ingress", "alpha"}


async def test_an_entry_computed_on_a_superseded_state_is_refused_everywhere(
    pair: tuple[ScriptedLog, Manager, Manager],
) -> None:
    log, a, b = pair
    a.write(network("alpha"))
    log.commit()
    # a leads and writes "beta"; before it commits, b is elected and writes "gamma", which the
    # new term commits first.
    beta = a.write(network("beta"))
    ours = log.proposed.pop()
    gamma = b.write(network("gamma"))
    log.proposed.append(ours)
    log.commit()
    await b.replica.settle(gamma)
    with pytest.raises(ClusterError, match="leader changed before this write was committed"):
        await a.replica.settle(beta)
    same_everywhere(a, b)
    names = {n.name for n in a.state.networks.values()}
    assert "gamma" in names and "beta" not in names
    assert a.replica.stats["raft_stale_entries"] == 1 == b.replica.stats["raft_stale_entries"]
    assert a.replica.stats["raft_rollbacks"] >= 1


async def test_a_failed_entry_takes_memory_back_to_the_store(
    pair: tuple[ScriptedLog, Manager, Manager],
) -> None:
    log, a, b = pair
    a.write(network("alpha"))
    log.commit()
    lost = a.write(network("lost"))
    _, done = log.proposed.pop()
    done(False, "not_leader")
    with pytest.raises(ClusterError, match=r"not made \(not_leader\): retry"):
        await a.replica.settle(lost)
    assert "lost" not in {n.name for n in a.state.networks.values()}
    same_everywhere(a, b)


def test_a_replayed_journal_changes_nothing(
    pair: tuple[ScriptedLog, Manager, Manager], tmp_path: Path
) -> None:
    log, a, b = pair
    a.write(network("alpha"))
    a.write(network("beta"))
    log.commit()
    before = snapshot(b.store.load()), b.store.raft_position()
    # b restarts: a new replica over the same store; PySyncObj applies its journal again.
    again = Manager(ScriptedLog(), ClusterStore(tmp_path / "b.db"), "127.0.0.2:2378", 3)
    assert again.member is not None
    log.replay(again.member.log.members[0])
    assert (snapshot(again.store.load()), again.store.raft_position()) == before
    assert snapshot(again.state) == before[0]
    assert again.replica.stats["raft_applied"] == 0


def test_the_state_follows_the_raft_leader_so_the_old_one_can_be_demoted() -> None:
    state = ClusterState()
    rand = seeded_rand(7)
    first = state.init(hostname="node1", addr="10.0.0.1", now=1.0, rand=rand)
    second, _ = state.join_node(
        hostname="node2", addr="10.0.0.2", role=Role.MANAGER, now=2.0, rand=rand
    )
    worker, _ = state.join_node(
        hostname="node3", addr="10.0.0.3", role=Role.WORKER, now=2.0, rand=rand
    )
    state.take_changes()
    assert state.follow_leader(second.id, now=3.0)
    assert state.require_cluster().leader_id == second.id
    assert state.managers()[0].id == second.id
    statuses = {n.hostname: n.manager_status for n in state.managers()}
    assert statuses == {"node1": ManagerStatus.REACHABLE, "node2": ManagerStatus.LEADER}
    assert state.take_changes()  # persisted and replicated like any command
    assert not state.follow_leader(second.id, now=4.0)  # nothing to do twice
    assert state.take_changes() == []
    # The node that leads now is the protected one; the one that ran `swarm init` is not.
    refused(state, ErrorKind.CONFLICT, "leader", state.demote, "node2", now=5.0)
    assert state.demote(first.id, now=5.0).role is Role.WORKER
    refused(state, ErrorKind.CONFLICT, "not a manager", state.follow_leader, worker.id, now=6.0)
