"""The forwarding database: per-VNI tables, counters per entry, the endpoint interface, and the
opt-in learning of source MACs (bounded, aged, never over a given entry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.dataplane.fdb import (
    FdbEntry,
    FdbTable,
    ForwardingDatabase,
    age_learned,
    generation,
    learn,
)
from overlaynet.dataplane.switching import Network, learn_source
from overlaynet.wire.ethernet import mac_to_bytes

MAC = "02:42:0a:00:00:03"


def test_lookup_is_scoped_by_vni() -> None:
    fdb = ForwardingDatabase()
    fdb.add(4097, MAC, "192.168.0.12")
    entry = fdb.lookup(4097, mac_to_bytes(MAC))
    assert entry is not None
    assert entry.remote_ip == "192.168.0.12"
    assert fdb.lookup(4098, MAC) is None


def test_remove_reports_whether_the_entry_existed() -> None:
    fdb = ForwardingDatabase()
    fdb.add(1, MAC, "192.168.0.12")
    assert fdb.remove(1, MAC)
    assert not fdb.remove(1, MAC)
    assert len(fdb) == 0


def test_readding_the_same_host_keeps_counters_and_moving_resets_them() -> None:
    fdb = ForwardingDatabase()
    fdb.add(1, MAC, "192.168.0.12")
    entry = fdb.lookup(1, MAC)
    assert entry is not None
    entry.tx_frames = 5
    fdb.add(1, MAC, "192.168.0.12")
    assert fdb.lookup(1, MAC) is entry
    fdb.add(1, MAC, "192.168.0.13")
    moved = fdb.lookup(1, MAC)
    assert moved is not None
    assert (moved.remote_ip, moved.tx_frames) == ("192.168.0.13", 0)


def test_records_snapshot_counters_sorted() -> None:
    fdb = ForwardingDatabase()
    fdb.add(2, "02:00:00:00:00:02", "10.1.0.1")
    fdb.add(1, "02:00:00:00:00:09", "10.1.0.2")
    fdb.add(1, "02:00:00:00:00:01", "10.1.0.3")
    records = fdb.records()
    assert [(r.vni, r.mac) for r in records] == [
        (1, "02:00:00:00:00:01"),
        (1, "02:00:00:00:00:09"),
        (2, "02:00:00:00:00:02"),
    ]
    assert [r.remote_ip for r in fdb.records(2)] == ["10.1.0.1"]


def test_drop_vni_empties_the_live_table_a_loop_may_hold() -> None:
    fdb = ForwardingDatabase()
    table = fdb.table(7)
    fdb.add(7, MAC, "192.168.0.12")
    fdb.drop_vni(7)
    assert table == {}
    assert fdb.lookup(7, MAC) is None


@pytest.mark.parametrize(("mac", "ip"), [("nope", "192.168.0.1"), (MAC, "300.1.1.1"), (MAC, "::1")])
def test_bad_addresses_are_refused(mac: str, ip: str) -> None:
    with pytest.raises(ValueError):
        ForwardingDatabase().add(1, mac, ip)


def test_vni_outside_24_bits_is_refused() -> None:
    with pytest.raises(ValueError):
        ForwardingDatabase().add(1 << 24, MAC, "192.168.0.12")


# -- learning (opt-in per network) ---------------------------------------------------------------

SOURCE = mac_to_bytes(MAC)


def test_learning_adds_a_marked_entry_and_does_nothing_the_second_time() -> None:
    table: dict[bytes, FdbEntry] = {}
    assert learn(table, SOURCE, "192.168.0.12", full=False) == "fdb_learned"
    assert learn(table, SOURCE, "192.168.0.12", full=False) is None
    assert table[SOURCE].learned and table[SOURCE].remote_ip == "192.168.0.12"


def test_a_learned_entry_moves_with_its_mac_but_a_given_one_never_does() -> None:
    fdb = ForwardingDatabase()
    table = fdb.table(1)
    learn(table, SOURCE, "192.168.0.12", full=False)
    assert learn(table, SOURCE, "192.168.0.13", full=False) == "fdb_learn_moved"
    assert table[SOURCE].remote_ip == "192.168.0.13"
    fdb.add(1, MAC, "192.168.0.14")  # given: replaces the learned one and is not aged
    assert not table[SOURCE].learned
    assert learn(table, SOURCE, "192.168.0.12", full=False) == "fdb_learn_refused_static"
    assert table[SOURCE].remote_ip == "192.168.0.14"
    assert fdb.records(1)[0].learned is False


@pytest.mark.parametrize("mac", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "00:00:00:00:00:00"])
def test_group_and_zero_source_macs_are_never_learned(mac: str) -> None:
    table: dict[bytes, FdbEntry] = {}
    assert learn(table, mac_to_bytes(mac), "192.168.0.12", full=False) == "fdb_learn_refused_group"
    assert table == {}


def test_a_full_table_learns_nothing_new_but_still_moves_what_it_has() -> None:
    table: dict[bytes, FdbEntry] = {}
    learn(table, SOURCE, "192.168.0.12", full=False)
    other = mac_to_bytes("02:42:0a:00:00:04")
    assert learn(table, other, "192.168.0.12", full=True) == "fdb_learn_refused_full"
    assert other not in table
    assert learn(table, SOURCE, "192.168.0.13", full=True) == "fdb_learn_moved"


def test_learned_entries_age_out_after_max_age_without_frames_given_ones_stay() -> None:
    fdb = ForwardingDatabase()
    table = fdb.table(1)
    fdb.add(1, "02:42:0a:00:00:09", "192.168.0.12")
    learn(table, SOURCE, "192.168.0.13", full=False)
    assert age_learned(table, 0.0, 300.0) == (0, 1)  # first sweep starts its age
    table[SOURCE].rx_frames += 1
    assert age_learned(table, 250.0, 300.0) == (0, 1)  # it received: age restarts at 250
    assert age_learned(table, 500.0, 300.0) == (0, 1)
    assert age_learned(table, 550.0, 300.0) == (1, 0)
    assert SOURCE not in table
    assert len(table) == 1  # the given entry


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["10.0.0.1", "10.0.0.2"]), st.booleans()),
        max_size=60,
    ),
    st.integers(0, 4),
)
def test_learning_never_exceeds_its_limit_nor_touches_given_entries(
    steps: list[tuple[int, str, bool]], limit: int
) -> None:
    """The hot path's bookkeeping (`switching.learn_source`) against any sequence of frames."""
    fdb = ForwardingDatabase()
    net = Network(1, tap_fd=-1, mtu=1450, fdb=fdb.table(1))
    net.learn_limit = limit
    given_mac = bytes([2, 0, 0, 0, 0, 0])
    fdb.add(1, given_mac, "10.0.0.9")
    for index, host, age in steps:
        learn_source(net, bytes([2, 0, 0, 0, 0, index]), host)
        if age:
            _expired, net.learned = age_learned(net.fdb, 0.0, 300.0)
        learned = [e for e in net.fdb.values() if e.learned]
        assert len(learned) == net.learned <= limit
        assert net.fdb[given_mac].remote_ip == "10.0.0.9" and not net.fdb[given_mac].learned


def test_a_table_counts_every_change_of_where_macs_live_and_not_its_counters() -> None:
    """The C drains keep a copy of where MACs live and rebuild it when `generation` moved:
    every add, move, removal, learn and aging must move it; a counter bump must not."""
    db = ForwardingDatabase()
    table = db.table(7)
    seen = [generation(table)]

    def moved() -> bool:
        seen.append(generation(table))
        return seen[-1] != seen[-2]

    db.add(7, "02:42:0a:00:00:03", "192.0.2.1")
    assert moved()
    entry = db.lookup(7, "02:42:0a:00:00:03")
    assert entry is not None
    entry.tx_frames += 5
    assert not moved()
    db.add(7, "02:42:0a:00:00:03", "192.0.2.2")  # the endpoint moved
    assert moved()
    assert learn(table, b"\x02\x00\x00\x00\x00\x09", "192.0.2.3", full=False) == "fdb_learned"
    assert moved()
    assert age_learned(table, 0.0, 300.0) == (0, 1) and not moved()  # first sweep: kept
    assert age_learned(table, 301.0, 300.0) == (1, 0) and moved()  # forgotten
    assert db.remove(7, "02:42:0a:00:00:03") and moved()
    db.add(7, "02:42:0a:00:00:04", "192.0.2.1")
    assert moved()
    db.drop_vni(7)
    assert moved() and table == {}
    assert generation({}) == -1  # a plain dict: always treated as changed


class _Watcher(bytes):
    """A key that notes the table's generation while the dict compares it during a change:
    the change has not happened yet then."""

    table: ClassVar[FdbTable]
    seen: ClassVar[list[int]] = []

    def __eq__(self, other: object) -> bool:
        _Watcher.seen.append(self.table.generation)
        return bytes.__eq__(self, other)

    __hash__ = bytes.__hash__


def test_the_generation_moves_only_after_the_change() -> None:
    """A reader takes the generation before it reads entries: had a writer moved it before its
    change, the reader could pair the new generation with the old entry and never look again
    (a C drain's table stale for good). Every change moves it after."""
    table = FdbTable()
    _Watcher.table = table
    key = _Watcher(b"\x02\x00\x00\x00\x00\x01")
    changes: list[Callable[[], object]] = [
        lambda: table.__setitem__(bytes(key), FdbEntry("192.0.2.1")),
        lambda: table.pop(key),
        lambda: table.__setitem__(bytes(key), FdbEntry("192.0.2.1")),
        lambda: table.__delitem__(key),
        lambda: table.__setitem__(bytes(key), FdbEntry("192.0.2.1")),
        lambda: table.setdefault(key, FdbEntry("192.0.2.2")),
    ]
    for change in changes:
        before = table.generation
        _Watcher.seen = []
        change()
        assert all(seen == before for seen in _Watcher.seen)
        assert table.generation == before + 1
    assert _Watcher.seen  # the key was compared: the check above saw the change in progress
