"""The SQLite store keeps records across reopen, with unique names and atomic transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from overlaynet.agent.store import Store
from overlaynet.model import Container, Driver, Endpoint, Network, Status


def _net(name: str, nid: str = "n1") -> Network:
    return Network(
        id=nid,
        name=name,
        driver=Driver.BRIDGE,
        created="t",
        subnet="172.18.0.0/16",
        gateway="172.18.0.1",
    )


def test_records_survive_reopening(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    s.put_network(_net("mybridge"))
    c = Container(
        id="c1", name="a1", image="alpine", cmd=["sleep", "1"], created="t", status=Status.RUNNING
    )
    c.endpoints.append(
        Endpoint(id="e1", network_id="n1", ifname="eth0", ip="172.18.0.2", aliases=["x"])
    )
    s.put_container(c)
    s.close()
    s2 = Store(tmp_path / "state.db")
    (net,) = s2.networks()
    assert net == _net("mybridge")
    (got,) = s2.containers()
    assert got == c and got.status is Status.RUNNING and got.endpoints[0].aliases == ["x"]


def test_names_are_unique_per_kind(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    s.put_network(_net("same", "n1"))
    with pytest.raises(sqlite3.IntegrityError):
        s.put_network(_net("same", "n2"))


def test_a_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    with pytest.raises(RuntimeError), s.transaction():
        s.put_network(_net("a", "n1"))
        raise RuntimeError("crash in the middle")
    assert s.networks() == []


def test_delete_and_meta(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    s.put_network(_net("a"))
    s.delete_network("n1")
    assert s.networks() == []
    s.set_meta("k", "v")
    assert s.get_meta("k") == "v" and s.get_meta("missing") is None
