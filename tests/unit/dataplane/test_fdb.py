"""The forwarding database: per-VNI tables, counters per entry, the endpoint interface."""

from __future__ import annotations

import pytest

from overlaynet.dataplane.fdb import ForwardingDatabase
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
