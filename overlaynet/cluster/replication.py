"""What the managers' Raft log carries and how each manager applies it (pure, no I/O).

A log entry is the outcome of one command on the Raft leader: the `Change` records it made, the
state index after them and, for a remote write, its remembered answer (exactly-once per
(node, request id) then holds on every manager, so on a new leader too). Every random value
(ids, tokens, addresses) was drawn before the entry was submitted, so applying it is a plain
copy and every manager ends with the same records in the same order.

Entries form a chain: each names the entry its changes were computed on (`parent`). A manager
applies an entry only if its own last applied entry is that parent; otherwise the entry was
computed on a state that is no longer current (a leader that lost its leadership while it still
had entries in flight) and every manager refuses it the same way. The very first entry, the
genesis, carries the whole state `swarm init` wrote and has no parent.

Also here: the Raft status as the views need it (MANAGER STATUS, the quorum line) and the next
membership change, one at a time as Raft requires.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from overlaynet.cluster.state import Change
from overlaynet.cluster.store import Answered

# Raft's own port, next to the cluster port tcp/2377 (cluster/state.py's MANAGER_PORT): managers
# reach each other there on their underlay address only.
RAFT_PORT = 2378


class MalformedEntry(ValueError):
    """A log entry this code cannot read (never written by it): counted and skipped."""


class EntryKind(StrEnum):
    GENESIS = "genesis"  # the whole state at `swarm init` (or at the first Raft start)
    CHANGES = "changes"  # one command's changes, on top of `parent`


@dataclass(frozen=True)
class Entry:
    id: str
    kind: EntryKind
    parent: str | None
    # The state index after the entry (ClusterState.index).
    index: int
    changes: tuple[Change, ...] = ()
    answered: Answered | None = None

    def encode(self) -> str:
        """JSON text: PySyncObj pickles the call, so it only ever carries a str."""
        doc: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "parent": self.parent,
            "index": self.index,
            "changes": [[c.kind, c.key, c.doc] for c in self.changes],
        }
        if self.answered is not None:
            a = self.answered
            doc["answered"] = [a.key, a.ts, a.doc, a.forget_before]
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> Entry:
        try:
            doc = json.loads(text)
            answered = doc.get("answered")
            return cls(
                id=str(doc["id"]),
                kind=EntryKind(doc["kind"]),
                parent=None if doc["parent"] is None else str(doc["parent"]),
                index=int(doc["index"]),
                changes=tuple(Change(str(k), str(key), d) for k, key, d in doc["changes"]),
                answered=None
                if answered is None
                else Answered(str(answered[0]), float(answered[1]), answered[2], answered[3]),
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise MalformedEntry(f"unreadable Raft log entry: {e}") from None


class Verdict(StrEnum):
    SEEN = "seen"  # at or below the Raft index already applied (a journal replay on restart)
    APPLY = "apply"
    STALE = "stale"  # computed on another state than this chain's tip: refused everywhere


def verdict(entry: Entry, raft_index: int, applied_index: int, tip: str | None) -> Verdict:
    """Whether a committed entry at `raft_index` is applied on top of a store whose last applied
    Raft index is `applied_index` and last entry `tip` (deterministic: the same on every
    manager, since all see the same entries in the same order)."""
    if raft_index <= applied_index:
        return Verdict.SEEN
    if entry.kind is EntryKind.GENESIS:
        return Verdict.APPLY if tip is None else Verdict.STALE
    return Verdict.APPLY if tip is not None and entry.parent == tip else Verdict.STALE


# ----- status -----


@dataclass(frozen=True)
class RaftStatus:
    """PySyncObj's getStatus(), as the manager's views need it."""

    self_addr: str
    term: int
    commit_index: int
    last_applied: int
    leader: str | None
    is_leader: bool
    # Every other member's "ip:port" and whether this node is connected to it now.
    partners: Mapping[str, bool] = field(default_factory=dict)

    @property
    def members(self) -> list[str]:
        return sorted([self.self_addr, *self.partners])

    @property
    def reachable(self) -> int:
        """Members this node can talk to, itself included."""
        return 1 + sum(1 for up in self.partners.values() if up)

    @property
    def needed(self) -> int:
        return len(self.members) // 2 + 1

    def quorum_message(self, in_flight: bool = False) -> str:
        """The one line a write that was not committed says: no quorum, or (enough managers
        connected) a commit that did not come in time — a slow or busy manager, not a lost one.

        `in_flight`: the leader had put the write in its log when the wait ran out. Raft may
        still commit it once a quorum answers again (the same leader, same term): it was not
        made *yet*, so the line says to look before retrying (a retried `network create`
        answered "already exists" after "the write was not made")."""
        outcome = (
            "the write is not committed yet and may still be once a quorum answers: look "
            "before retrying"
            if in_flight
            else "the write was not made"
        )
        if self.reachable >= self.needed:
            return (
                f"the write was not committed in time though {self.reachable} of "
                f"{len(self.members)} managers are reachable ({self.needed} needed): a manager "
                f"is slow or busy, or a leader is being elected; {outcome}"
                + ("" if in_flight else ", retry")
            )
        return (
            f"no quorum: {self.reachable} of {len(self.members)} managers reachable, "
            f"{self.needed} needed; {outcome} (reads still answer from this manager's copy)"
        )

    def to_doc(self) -> dict[str, Any]:
        """What `node inspect` and `info` show under "raft"."""
        return {
            "term": self.term,
            "commit_index": self.commit_index,
            "last_applied": self.last_applied,
            "leader": self.leader,
            "members": self.members,
        }


def status_from_pysyncobj(doc: Mapping[str, Any]) -> RaftStatus:
    """Map PySyncObj's getStatus() dict (its `partner_node_status_server_<addr>` keys are 2 for
    connected, 0 for not; `state` 2 is LEADER)."""
    prefix = "partner_node_status_server_"
    partners = {k[len(prefix) :]: v == 2 for k, v in doc.items() if k.startswith(prefix)}
    leader_node = doc.get("leader")
    self_addr = str(getattr(doc.get("self"), "id", doc.get("self")))
    leader = None if leader_node is None else str(getattr(leader_node, "id", leader_node))
    if leader is not None and leader != self_addr and not partners.get(leader, False):
        # PySyncObj keeps naming the last leader it heard of, and a follower connected to no
        # one never stands for election: a leader this node cannot reach leads nothing here.
        leader = None
    return RaftStatus(
        self_addr=self_addr,
        term=int(doc.get("raft_term", 0)),
        commit_index=int(doc.get("commit_idx", 0)),
        last_applied=int(doc.get("last_applied", 0)),
        leader=leader,
        is_leader=doc.get("state") == _PYSYNCOBJ_LEADER,
        partners=partners,
    )


# pysyncobj.syncobj._RAFT_STATE: FOLLOWER 0, CANDIDATE 1, LEADER 2.
_PYSYNCOBJ_LEADER = 2


def raft_addr(node_addr: str) -> str:
    """A manager's Raft address from its advertise (underlay) address."""
    return f"{node_addr}:{RAFT_PORT}"


def manager_status(node_addr: str, status: RaftStatus) -> str:
    """MANAGER STATUS for a manager node, as this manager's Raft sees it."""
    addr = raft_addr(node_addr)
    if status.leader == addr:
        return "Leader"
    if addr == status.self_addr:
        return "Reachable"
    return "Reachable" if status.partners.get(addr, False) else "Unreachable"


class MembershipStep(StrEnum):
    ADD = "add"
    REMOVE = "remove"


def membership_step(
    desired: Iterable[str], status: RaftStatus
) -> tuple[MembershipStep, str] | None:
    """The next single Raft membership change that brings the members to the managers of the
    cluster state: adds before removals (a removal first would shrink the quorum while a new
    member is still missing), never removing this node itself (the leader hands leadership on
    first), and in address order so that every leader picks the same one."""
    want = set(desired)
    have = set(status.members)
    for addr in sorted(want - have):
        return MembershipStep.ADD, addr
    for addr in sorted(have - want):
        if addr != status.self_addr:
            return MembershipStep.REMOVE, addr
    return None
