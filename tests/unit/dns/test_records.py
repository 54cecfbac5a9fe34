"""The name table: what each container sees, and how updates change it."""

from __future__ import annotations

from overlaynet.dns.records import DnsTable, NameRecord, Network, RecordKind
from tests.unit.dns.dnshelp import ip


def _two_networks() -> DnsTable:
    t = DnsTable()
    t.set_network(Network("a", "front"))
    t.set_network(Network("b", "back"))
    t.add_record(NameRecord("a", "api", ip("10.0.1.2")))
    t.add_record(NameRecord("b", "api", ip("10.0.2.2")))
    t.add_record(NameRecord("b", "db", ip("10.0.2.3")))
    t.attach("c1", "a")
    return t


def test_container_sees_only_its_networks() -> None:
    t = _two_networks()
    assert t.resolve("c1", "api") == [ip("10.0.1.2")]
    assert t.resolve("c1", "db") is None
    t.attach("c1", "b")
    assert t.resolve("c1", "api") == [ip("10.0.1.2"), ip("10.0.2.2")]
    assert t.resolve("c1", "db") == [ip("10.0.2.3")]


def test_network_suffix_picks_one_network() -> None:
    t = _two_networks()
    t.attach("c1", "b")
    assert t.resolve("c1", "api.back") == [ip("10.0.2.2")]
    assert t.resolve("c1", "API.Front.") == [ip("10.0.1.2")]
    assert t.in_network_zone("c1", "nobody.back")
    assert not t.in_network_zone("c1", "nobody.elsewhere")


def test_network_without_name_resolution_answers_nothing() -> None:
    t = DnsTable()
    t.set_network(Network("default", "bridge", resolves_names=False))
    t.add_record(NameRecord("default", "x", ip("172.17.0.2")))
    t.attach("c1", "default")
    assert t.resolve("c1", "x") is None
    assert t.reverse("c1", ip("172.17.0.2")) is None


def test_updates_bump_generation_and_change_answers() -> None:
    t = _two_networks()
    before = t.generation
    t.replace_records("a", [NameRecord("a", "api", ip("10.0.1.9"))])
    assert t.generation > before
    assert t.resolve("c1", "api") == [ip("10.0.1.9")]
    t.detach("c1", "a")
    assert t.resolve("c1", "api") is None
    t.attach("c1", "a")
    t.remove_network("a")
    assert t.resolve("c1", "api") is None
    t.forget_container("c1")
    assert t.visible_networks("c1") == []


def test_reverse_prefers_container_then_service_then_task_then_alias() -> None:
    t = _two_networks()
    t.add_record(NameRecord("a", "zz-alias", ip("10.0.1.5"), RecordKind.ALIAS))
    t.add_record(NameRecord("a", "tasks.web", ip("10.0.1.5"), RecordKind.TASK))
    assert t.reverse("c1", ip("10.0.1.5")) == "tasks.web.front"
    t.add_record(NameRecord("a", "web", ip("10.0.1.5"), RecordKind.SERVICE))
    assert t.reverse("c1", ip("10.0.1.5")) == "web.front"
    t.add_record(NameRecord("a", "web.1", ip("10.0.1.5")))
    assert t.reverse("c1", ip("10.0.1.5")) == "web.1.front"


def test_docker_networks_resolve_names_except_default_bridge() -> None:
    assert Network.docker("n1", "alpine-net").resolves_names
    assert not Network.docker("n0", "bridge").resolves_names
