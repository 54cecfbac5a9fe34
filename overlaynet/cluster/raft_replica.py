"""A manager's copy of the swarm state kept by Raft: submits the leader's changes to the log and
applies every committed entry to the manager's ClusterState and SQLite store, in log order.

The leader runs each command on its in-memory state at once (so requests that follow see it)
and submits the outcome; it answers the client only once the entry is committed
(`settle`). Memory may thus run ahead of the store by the entries in flight (`pending`), never
by anything else: when an entry fails, or another leader's entry is applied first, the memory
goes back to the store (`rollback`), which holds committed entries only. What each entry does
is decided by replication.verdict, the same way on every manager.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import trio

from overlaynet.cluster import replication as rp
from overlaynet.cluster.raft import OnEntry, RaftLog
from overlaynet.cluster.state import (
    MANAGER_PORT,
    Change,
    ClusterError,
    ClusterState,
    ErrorKind,
    Node,
    Role,
)
from overlaynet.cluster.store import Answered, ClusterStore

log = logging.getLogger(__name__)

# How long a write waits for its entry to be committed. Under the client's CALL_TIMEOUT (2 s), so
# the refusal (the quorum line) reaches the client before it gives up on this manager.
COMMIT_TIMEOUT = 1.5
# How long a request waits for a leader to be known (an election takes ELECTION_MAX at most,
# and a lone manager elects itself within it after its start).
LEADER_WAIT = 1.0
# How often the leader looks at the Raft membership and the genesis entry.
MAINTAIN_INTERVAL = 0.2
# A membership change PySyncObj has not answered within this long is tried again.
MEMBERSHIP_TIMEOUT = 5.0
# How long the leader waits for a new manager's Raft port to accept a connection (a LAN).
PROBE_TIMEOUT = 0.5
# Outcomes of submitted entries kept for `settle`: far more than writes in flight at once.
OUTCOMES_MAX = 4096
# How often a waiting request looks at the outcomes / the leader again (a comparison, no I/O).
POLL = 0.01

Outcome = bool | str
# Failures that mean another leader took over (raft.fail_reason names, and the verdict's), as
# opposed to no leader at all or no commit in time (the quorum line).
_LEADERSHIP_LOST = frozenset({"stale", "not_leader", "leader_changed", "discarded"})


class RaftReplica:
    """The Raft side of one ManagerServer (`get_state`/`set_state` reach its state)."""

    def __init__(
        self,
        store: ClusterStore,
        get_state: Callable[[], ClusterState],
        set_state: Callable[[ClusterState], None],
        new_id: Callable[[], str],
        make_log: Callable[[OnEntry], RaftLog],
        stats: Counter[str],
    ) -> None:
        self.store = store
        self._get_state = get_state
        self._set_state = set_state
        self._new_id = new_id
        self.stats = stats
        self.raft = make_log(self._on_entry)
        self.applied_index, self.tip = store.raft_position()
        self._store_tip = self.tip
        self.pending: deque[str] = deque()
        self.last_submitted: str | None = None
        self._outcomes: dict[str, Outcome] = {}
        # Set (and replaced) when an outcome is remembered: wakes `settle` at once, instead of
        # each write in flight polling for its outcome.
        self._settled = trio.Event()
        # Called after a committed entry changed the state here (the server wakes its
        # long-polls).
        self.on_applied: Callable[[], None] = lambda: None
        self._membership_busy = False

    async def start(self) -> None:
        await self.raft.start()

    def close(self) -> None:
        self.raft.close()

    @property
    def is_leader(self) -> bool:
        return self.raft.is_leader

    def status(self) -> rp.RaftStatus:
        return self.raft.status()

    # ----- submitting (the leader) -----

    def submit(self, changes: list[Change], index: int, answered: Answered | None) -> None:
        """One command's outcome, already in memory, to the log."""
        if self.tip is None:
            self._submit_genesis()
        entry = rp.Entry(
            self._new_id(), rp.EntryKind.CHANGES, self.tip, index, tuple(changes), answered
        )
        self._submit(entry)

    def _submit_genesis(self) -> None:
        """The whole committed state as the log's first entry (`swarm init`'s records)."""
        committed = self.store.load()
        entry = rp.Entry(
            self._new_id(), rp.EntryKind.GENESIS, None, committed.index, tuple(committed.records())
        )
        self._submit(entry)
        self.stats["raft_genesis_submitted"] += 1

    def _submit(self, entry: rp.Entry) -> None:
        self.pending.append(entry.id)
        self.tip = entry.id
        self.last_submitted = entry.id
        self.stats["raft_submitted"] += 1
        entry_id = entry.id
        self.raft.submit(entry.encode(), lambda ok, why: self._done(entry_id, ok, why))

    def _done(self, entry_id: str, ok: bool, why: str) -> None:
        if ok:
            return  # `_on_entry` ran first (PySyncObj calls back after applying)
        self.stats[f"raft_failed_{why}"] += 1
        self._remember(entry_id, why)
        if entry_id in self.pending:
            self.rollback()

    def _remember(self, entry_id: str, outcome: Outcome) -> None:
        self._outcomes[entry_id] = outcome
        while len(self._outcomes) > OUTCOMES_MAX:
            self._outcomes.pop(next(iter(self._outcomes)))
        self._settled.set()
        self._settled = trio.Event()

    def rollback(self) -> None:
        """Memory back to the store (committed entries only); entries in flight are dropped
        here, and if one commits after all it is applied like any other manager's."""
        self._set_state(self.store.load())
        self.pending.clear()
        self.tip = self._store_tip
        self.stats["raft_rollbacks"] += 1

    async def settle(self, entry_id: str | None) -> None:
        """Wait until `entry_id` (and so every entry before it) is committed and applied here,
        or raise the clear refusal: no quorum, or leadership lost while it was in flight."""
        if entry_id is None:
            return
        with trio.move_on_after(COMMIT_TIMEOUT):
            while entry_id not in self._outcomes:
                await self._settled.wait()
        outcome = self._outcomes.get(entry_id)
        if outcome is True:
            return
        if outcome is None:
            # Not committed in time: it may still be, later (a retry under the same request id
            # then gets its answer), but memory must not keep what the store may never have.
            self.stats["raft_commit_timeouts"] += 1
            if entry_id in self.pending:
                self.rollback()
        if outcome in _LEADERSHIP_LOST:
            raise ClusterError(
                ErrorKind.UNAVAILABLE,
                "the swarm's Raft leader changed before this write was committed, so it was "
                f"not made ({outcome}): retry",
            )
        # In this manager's Raft log, not committed: it may be, later.
        raise ClusterError(ErrorKind.UNAVAILABLE, self.status().quorum_message(in_flight=True))

    # ----- applying (every manager) -----

    def _on_entry(self, raft_index: int, text: str) -> None:
        try:
            entry = rp.Entry.decode(text)
        except rp.MalformedEntry:
            self.stats["raft_malformed_entries"] += 1
            log.exception("Raft entry %d is unreadable", raft_index)
            self.store.mark_raft(raft_index)
            self.applied_index = raft_index
            return
        verdict = rp.verdict(entry, raft_index, self.applied_index, self._store_tip)
        if verdict is rp.Verdict.SEEN:
            return
        self.applied_index = raft_index
        if verdict is rp.Verdict.STALE:
            self.stats["raft_stale_entries"] += 1
            self.store.mark_raft(raft_index)
            self._remember(entry.id, "stale")
            if entry.id in self.pending:
                self.rollback()
            return
        position = (raft_index, entry.id)
        if entry.kind is rp.EntryKind.GENESIS:
            self.store.replace(list(entry.changes), entry.index, raft=position)
        else:
            self.store.apply(list(entry.changes), entry.index, entry.answered, raft=position)
        self._store_tip = entry.id
        self.stats["raft_applied"] += 1
        if self.pending and self.pending[0] == entry.id:
            self.pending.popleft()  # this manager's own entry: memory has it already
        elif self.pending:
            self.rollback()  # another leader's entry came first: ours were computed on the past
        elif entry.kind is rp.EntryKind.GENESIS:
            self._set_state(ClusterState.from_records(entry.changes, entry.index))
            self.tip = entry.id
        else:
            state = self._get_state()
            for change in entry.changes:
                state.apply(change)
            if entry.changes:
                state.index = entry.index
                self.on_applied()
            self.tip = entry.id
        self._remember(entry.id, True)

    async def caught_up(self, since: int, seconds: float) -> None:
        """Wait (at most `seconds`) until an entry past Raft index `since` is applied here: a
        follower's read-your-writes after forwarding one."""
        with trio.move_on_after(seconds):
            while self.applied_index <= since:
                await trio.sleep(POLL)

    # ----- the leader: who, membership, genesis -----

    async def wait_leader(self, seconds: float = LEADER_WAIT) -> str | None:
        """The Raft leader's address, waiting at most `seconds` for an election."""
        with trio.move_on_after(seconds):
            while True:
                leader = self.status().leader
                if leader is not None:
                    return leader
                await trio.sleep(POLL)
        return None

    def manager_addr_of(self, raft_leader: str) -> str:
        """The cluster (tcp/2377) address of the manager whose Raft address is `raft_leader`."""
        host = raft_leader.rpartition(":")[0]
        for node in self._get_state().managers():
            if node.addr == host and node.manager_addr:
                return node.manager_addr
        return f"{host}:{MANAGER_PORT}"

    def manager_status(self, node: Node) -> str:
        return rp.manager_status(node.addr, self.status())

    def desired_members(self) -> list[str]:
        state = self._get_state()
        return [
            rp.raft_addr(n.addr)
            for n in state.nodes.values()
            if n.role is Role.MANAGER and not state.is_revoked(n.id)
        ]

    async def maintain(self) -> None:
        """On the leader: the genesis entry once, then Raft membership to the managers of the
        state, one change at a time."""
        while True:
            await trio.sleep(MAINTAIN_INTERVAL)
            self.raft.keep_private()
            self.raft.remember_members()
            if not self.is_leader:
                continue
            if self.tip is None and self._get_state().cluster is not None:
                self._submit_genesis()
                continue
            if self._store_tip is None or self._membership_busy:
                continue
            status = self.status()
            step = rp.membership_step(self.desired_members(), status)
            if step is None:
                if status.self_addr not in self.desired_members() and status.partners:
                    # This manager was demoted: hand leadership on; the next leader removes it.
                    self.raft.hand_over()
                continue
            if step[0] is rp.MembershipStep.ADD and not await self._listening(step[1]):
                # A member added before it runs would count toward the quorum while it cannot
                # vote: a second manager promoted before the first is up would stop all writes.
                self.stats["raft_member_add_waiting"] += 1
                continue
            await self._change_membership(*step)

    @staticmethod
    async def _listening(addr: str) -> bool:
        """Whether the new manager's Raft port accepts connections yet (it serves once its
        agent has seen its promotion and started its RaftLog)."""
        host, _, port = addr.rpartition(":")
        with trio.move_on_after(PROBE_TIMEOUT):
            try:
                stream = await trio.open_tcp_stream(host, int(port))
            except OSError:
                return False
            await stream.aclose()
            return True
        return False

    async def _change_membership(self, step: rp.MembershipStep, addr: str) -> None:
        self._membership_busy = True
        result: list[tuple[bool, str]] = []
        try:
            log.info("raft membership: %s %s", step.value, addr)
            change = (
                self.raft.add_member if step is rp.MembershipStep.ADD else self.raft.remove_member
            )
            change(addr, lambda ok, why: result.append((ok, why)))
            with trio.move_on_after(MEMBERSHIP_TIMEOUT):
                while not result:
                    await trio.sleep(POLL)
            ok = bool(result) and result[0][0]
            self.stats[f"raft_member_{step.value}_{'ok' if ok else 'failed'}"] += 1
        finally:
            self._membership_busy = False

    def info(self) -> dict[str, Any]:
        """The Raft view `node inspect` and `info` show."""
        doc = self.status().to_doc()
        doc["applied_index"] = self.applied_index
        doc["pending"] = len(self.pending)
        return doc
