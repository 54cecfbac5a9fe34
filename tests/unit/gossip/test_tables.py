"""Network-scoped table rules: Lamport merge, tombstones, participation, owner liveness, reaping."""

from __future__ import annotations

import pytest

from overlaynet.gossip.tables import (
    EntryChange,
    LamportClock,
    NetworkTables,
    NotInNetwork,
)
from overlaynet.wire.gossip import NetworkEvent, TableEvent

TTL = 100.0


def make(me: str = "h1", live: set[str] | None = None) -> NetworkTables:
    alive = {"h1", "h2", "h3"} if live is None else live
    tables = NetworkTables(me, LamportClock(), TTL, lambda name: name in alive)
    tables.join_network("net")
    return tables


def ev(
    key: str, ltime: int, owner: str = "h2", deleted: bool = False, value: bytes = b"v"
) -> TableEvent:
    return TableEvent("ep", "net", key, owner, ltime, deleted, b"" if deleted else value)


def test_a_local_write_is_visible_and_reported_with_a_rising_lamport_time() -> None:
    t = make()
    first = t.set_entry("ep", "net", "a", b"1", 0.0)
    second = t.set_entry("ep", "net", "a", b"2", 0.0)
    assert second.ltime > first.ltime
    assert t.entries("ep", "net")["a"].value == b"2"
    assert [e.change for e in t.events] == [EntryChange.CREATED, EntryChange.UPDATED]


def test_writes_need_a_local_endpoint_in_the_network() -> None:
    t = make()
    with pytest.raises(NotInNetwork):
        t.set_entry("ep", "other", "a", b"1", 0.0)


def test_oversized_values_are_refused() -> None:
    with pytest.raises(ValueError):
        make().set_entry("ep", "net", "a", b"x" * 2000, 0.0)


def test_the_higher_lamport_time_wins_whatever_the_arrival_order() -> None:
    a, b = make(), make()
    a.apply_table_event(ev("k", 5, value=b"new"), 0.0)
    a.apply_table_event(ev("k", 3, value=b"old"), 0.0)
    b.apply_table_event(ev("k", 3, value=b"old"), 0.0)
    b.apply_table_event(ev("k", 5, value=b"new"), 0.0)
    assert a.entries("ep", "net") == b.entries("ep", "net")
    assert a.entries("ep", "net")["k"].value == b"new"


def test_a_tombstone_beats_a_live_entry_at_the_same_time() -> None:
    t = make()
    t.apply_table_event(ev("k", 5, deleted=True), 0.0)
    assert t.apply_table_event(ev("k", 5), 0.0) is None
    assert t.entries("ep", "net") == {}


def test_receiving_a_news_event_returns_it_for_rebroadcast_and_a_duplicate_does_not() -> None:
    t = make()
    assert t.apply_table_event(ev("k", 1), 0.0) == ev("k", 1)
    assert t.apply_table_event(ev("k", 1), 0.0) is None


def test_events_for_networks_we_are_not_in_are_ignored() -> None:
    t = make()
    other = TableEvent("ep", "elsewhere", "k", "h2", 1, False, b"v")
    assert t.apply_table_event(other, 0.0) is None
    assert t.entries("ep", "elsewhere") == {}


def test_receiving_witnesses_the_lamport_clock() -> None:
    t = make()
    t.apply_table_event(ev("k", 40), 0.0)
    assert t.set_entry("ep", "net", "mine", b"1", 0.0).ltime > 40


def test_delete_leaves_a_tombstone_that_stops_resurrection_until_reaped() -> None:
    t = make()
    t.apply_table_event(ev("k", 2), 0.0)
    t.apply_table_event(ev("k", 3, deleted=True), 10.0)
    assert t.apply_table_event(ev("k", 2), 20.0) is None
    assert t.entries("ep", "net") == {}
    assert t.reap(10.0 + TTL - 1) == 0
    assert t.reap(10.0 + TTL) == 1
    assert t.raw("net", "ep", "k") is None


def test_entries_of_a_dead_owner_disappear_and_come_back_if_it_does() -> None:
    live = {"h1", "h2"}
    t = make(live=live)
    t.apply_table_event(ev("k", 1), 0.0)
    t.events.clear()
    live.discard("h2")
    t.owner_liveness_changed("h2", False)
    assert t.entries("ep", "net") == {}
    assert [e.change for e in t.events] == [EntryChange.DELETED]
    live.add("h2")
    t.owner_liveness_changed("h2", True)
    assert "k" in t.entries("ep", "net")


def test_entries_of_an_unknown_owner_stay_hidden() -> None:
    t = make(live={"h1"})
    t.apply_table_event(ev("k", 1, owner="h7"), 0.0)
    assert t.entries("ep", "net") == {}


def test_a_forgotten_owner_entries_become_tombstones() -> None:
    t = make()
    t.apply_table_event(ev("k", 4), 0.0)
    t.forget_owner("h2", 1.0)
    stored = t.raw("net", "ep", "k")
    assert stored is not None and stored.deleted and stored.ltime == 4
    assert t.apply_table_event(ev("k", 4), 2.0) is None


def test_an_owner_leaving_the_network_withdraws_its_entries_and_stale_writes() -> None:
    t = make()
    t.apply_table_event(ev("k", 2), 0.0)
    t.apply_network_event(NetworkEvent("h2", "net", 1, True), 0.0)
    t.apply_network_event(NetworkEvent("h2", "net", 5, False), 0.0)
    assert t.entries("ep", "net") == {}
    assert t.apply_table_event(ev("other", 4), 0.0) is None
    assert "h2" not in t.participants("net")


def test_leaving_a_network_forgets_its_tables_here() -> None:
    t = make()
    t.apply_table_event(ev("k", 2), 0.0)
    t.leave_network("net")
    assert t.entries("ep", "net") == {}
    assert t.apply_table_event(ev("k", 3), 0.0) is None


def test_participation_follows_the_latest_network_event() -> None:
    t = make()
    t.apply_network_event(NetworkEvent("h2", "net", 3, True), 0.0)
    assert t.apply_network_event(NetworkEvent("h2", "net", 2, False), 0.0) is None
    assert t.participants("net") == {"h1", "h2"}


def test_a_stale_live_entry_in_our_name_is_outvoted_by_a_later_tombstone() -> None:
    t = make()
    restated = t.apply_table_event(ev("ghost", 9, owner="h1"), 0.0)
    assert restated is not None and restated.deleted and restated.ltime > 9
    assert t.entries("ep", "net") == {}


def test_our_live_entry_tombstoned_while_we_were_away_is_restated() -> None:
    t = make()
    mine = t.set_entry("ep", "net", "k", b"v", 0.0)
    restated = t.apply_table_event(ev("k", mine.ltime, owner="h1", deleted=True), 1.0)
    assert restated is not None and not restated.deleted and restated.value == b"v"
    assert t.entries("ep", "net")["k"].value == b"v"


def test_a_claim_that_we_left_a_network_we_are_in_is_restated() -> None:
    t = make()
    restated = t.apply_network_event(NetworkEvent("h1", "net", 50, False), 0.0)
    assert restated is not None and restated.joined and restated.ltime > 50
