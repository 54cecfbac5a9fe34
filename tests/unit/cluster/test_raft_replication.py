"""The pure side of the managers' Raft: log entries, what each manager does with them, the
status the views show and the next membership change."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.cluster import replication as rp
from overlaynet.cluster.state import Change
from overlaynet.cluster.store import Answered

docs = st.none() | st.dictionaries(
    st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3
)
changes = st.builds(Change, st.sampled_from(["node", "network", "task"]), st.text(max_size=8), docs)


@given(
    st.lists(changes, max_size=5),
    st.none() | st.text(min_size=1, max_size=8),
    st.integers(min_value=0, max_value=10**9),
    st.booleans(),
)
def test_an_entry_reads_back_as_it_was_written(
    items: list[Change], parent: str | None, index: int, with_answer: bool
) -> None:
    answered = (
        Answered("n1/rid", 12.5, {"ok": True, "result": [1, "x"]}, 2.5) if with_answer else None
    )
    kind = rp.EntryKind.GENESIS if parent is None else rp.EntryKind.CHANGES
    entry = rp.Entry("e1", kind, parent, index, tuple(items), answered)
    assert rp.Entry.decode(entry.encode()) == entry


@pytest.mark.parametrize("text", ["", "[]", "{}", '{"id": "x", "kind": "nope"}', "not json"])
def test_an_unreadable_entry_is_one_clear_error(text: str) -> None:
    with pytest.raises(rp.MalformedEntry):
        rp.Entry.decode(text)


def _entry(parent: str | None, entry_id: str = "e") -> rp.Entry:
    kind = rp.EntryKind.GENESIS if parent is None else rp.EntryKind.CHANGES
    return rp.Entry(entry_id, kind, parent, 1)


def test_an_entry_already_applied_is_seen_not_applied_again() -> None:
    assert rp.verdict(_entry("g"), 5, 5, "g") is rp.Verdict.SEEN
    assert rp.verdict(_entry("g"), 4, 5, "g") is rp.Verdict.SEEN


def test_the_genesis_applies_only_to_an_empty_copy() -> None:
    assert rp.verdict(_entry(None), 2, 0, None) is rp.Verdict.APPLY
    assert rp.verdict(_entry(None), 9, 3, "g") is rp.Verdict.STALE


def test_an_entry_applies_only_on_top_of_its_parent() -> None:
    assert rp.verdict(_entry("g"), 3, 2, "g") is rp.Verdict.APPLY
    # Computed by a leader that had not seen entry "h" yet: refused, the same on every manager.
    assert rp.verdict(_entry("g"), 4, 3, "h") is rp.Verdict.STALE
    # Nothing applies before the genesis.
    assert rp.verdict(_entry("g"), 1, 0, None) is rp.Verdict.STALE


ME, TWO, THREE = "10.0.0.1:2378", "10.0.0.2:2378", "10.0.0.3:2378"


def _status(**fields: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "self": ME,
        "state": 0,
        "leader": TWO,
        "raft_term": 4,
        "commit_idx": 17,
        "last_applied": 16,
        "partner_nodes_count": 2,
        f"partner_node_status_server_{TWO}": 2,
        f"partner_node_status_server_{THREE}": 0,
    }
    doc.update(fields)
    return doc


def test_pysyncobj_status_maps_to_term_commit_leader_and_members() -> None:
    status = rp.status_from_pysyncobj(_status())
    assert status.to_doc() == {
        "term": 4,
        "commit_index": 17,
        "last_applied": 16,
        "leader": TWO,
        "members": [ME, TWO, THREE],
    }
    assert not status.is_leader
    assert rp.status_from_pysyncobj(_status(state=2, leader=ME)).is_leader


def test_a_leader_this_manager_cannot_reach_is_no_leader() -> None:
    # PySyncObj keeps naming a dead leader while this node is connected to nobody.
    status = rp.status_from_pysyncobj(_status(leader=THREE))
    assert status.leader is None


def test_manager_status_is_leader_reachable_or_unreachable() -> None:
    status = rp.status_from_pysyncobj(_status())
    assert rp.manager_status("10.0.0.2", status) == "Leader"
    assert rp.manager_status("10.0.0.1", status) == "Reachable"
    assert rp.manager_status("10.0.0.3", status) == "Unreachable"
    # A manager not (yet) in the Raft cluster cannot be reached through it.
    assert rp.manager_status("10.0.0.4", status) == "Unreachable"


def test_the_quorum_line_counts_reachable_members_and_the_majority() -> None:
    alone = rp.status_from_pysyncobj(
        _status(**{f"partner_node_status_server_{TWO}": 0}, leader=None)
    )
    assert alone.quorum_message().startswith("no quorum: 1 of 3 managers reachable, 2 needed")
    five = rp.RaftStatus(ME, 1, 1, 1, None, False, {"a": True, "b": False, "c": False, "d": False})
    assert five.quorum_message().startswith("no quorum: 2 of 5 managers reachable, 3 needed")
    # Enough managers connected: a write that timed out is a slow commit, not a lost quorum (a
    # loaded machine said "no quorum: 3 of 3 managers reachable, 2 needed").
    slow = rp.RaftStatus(ME, 1, 1, 1, ME, True, {"a": True, "b": True})
    assert slow.quorum_message().startswith(
        "the write was not committed in time though 3 of 3 managers are reachable (2 needed)"
    )


def test_membership_changes_one_at_a_time_adds_first_never_removing_itself() -> None:
    status = rp.RaftStatus(ME, 1, 1, 1, ME, True, {TWO: True})
    assert rp.membership_step([ME, TWO], status) is None
    assert rp.membership_step([ME, TWO, THREE], status) == (rp.MembershipStep.ADD, THREE)
    assert rp.membership_step([THREE], status) == (rp.MembershipStep.ADD, THREE)
    assert rp.membership_step([ME], status) == (rp.MembershipStep.REMOVE, TWO)
    # Demoted itself: nothing it can do but hand leadership on (the next leader removes it).
    assert rp.membership_step([TWO], rp.RaftStatus(ME, 1, 1, 1, ME, True, {TWO: True})) is None


def test_a_write_in_the_leaders_log_is_not_said_to_be_lost() -> None:
    # A write the leader had logged when its wait ran out was committed once the other
    # managers came back (`network create q1` then answered "already exists") though its line
    # said "the write was not made".
    alone = rp.RaftStatus(ME, 1, 1, 1, ME, True, {"a": False, "b": False})
    logged = alone.quorum_message(in_flight=True)
    assert logged.startswith("no quorum: 1 of 3 managers reachable, 2 needed; ")
    assert "not made" not in logged and "may still be once a quorum answers" in logged
    assert "look before retrying" in logged
    assert "the write was not made" in alone.quorum_message()
    slow = rp.RaftStatus(ME, 1, 1, 1, ME, True, {"a": True, "b": True})
    assert "not made" not in slow.quorum_message(in_flight=True)
