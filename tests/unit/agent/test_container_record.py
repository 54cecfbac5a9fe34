"""A container's hostname and terminal are fields of its record: stored, restored, shown by
inspect, and defaulted for a store written before they existed."""

from __future__ import annotations

import json
from pathlib import Path

from overlaynet.agent import views
from overlaynet.agent.store import Store
from overlaynet.model import Container, to_doc

CID = "c0ffee" * 10 + "abcd"


def record(**fields: object) -> Container:
    return Container(CID, "web1", "alpine", ["top"], "2026-01-01T00:00:00Z", **fields)  # type: ignore[arg-type]


def test_the_hostname_is_the_given_one_else_the_short_id() -> None:
    assert record(hostname="web").uts_name == "web"
    assert record().uts_name == CID[:12]


def test_inspect_shows_hostname_and_tty() -> None:
    config = views.container_doc(record(hostname="web", tty=True), {}, "/ns")["Config"]
    assert config["Hostname"] == "web"
    assert config["Tty"] is True
    plain = views.container_doc(record(), {}, "/ns")["Config"]
    assert plain["Hostname"] == CID[:12]
    assert plain["Tty"] is False


def test_hostname_and_tty_survive_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.put_container(record(hostname="web", tty=True))
    store.close()
    (back,) = Store(tmp_path / "state.db").containers()
    assert (back.hostname, back.tty) == ("web", True)


def test_a_record_stored_before_the_fields_existed_gets_the_defaults(tmp_path: Path) -> None:
    doc = to_doc(record(hostname="web", tty=True))
    del doc["hostname"], doc["tty"]
    store = Store(tmp_path / "state.db")
    store._db.execute(
        "INSERT INTO objects (kind, id, name, doc) VALUES ('container', ?, ?, ?)",
        (CID, "web1", json.dumps(doc)),
    )
    store.close()
    (back,) = Store(tmp_path / "state.db").containers()
    assert (back.hostname, back.tty, back.uts_name) == ("", False, CID[:12])
