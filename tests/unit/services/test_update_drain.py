"""Leaving before stopping: the managers' DrainWatch (a task being stopped is drained once every
Ready node applied an answer without it), the `serving` list in task.assigned's services, and
the workers' DNS/VIP backends that follow it."""

from __future__ import annotations

from ipaddress import IPv4Address

from overlaynet.agent.servicedns import parse_services, task_addresses
from overlaynet.cluster.update import DrainWatch
from overlaynet.dns.records import NameRecord, RecordKind


def test_drained_only_once_every_ready_node_applied_a_later_answer() -> None:
    watch = DrainWatch()
    for node in ("n1", "n2", "n3"):
        watch.answered(node, 10)
    # The task is seen leaving at index 12: nobody has applied an answer that recent.
    watch.answered("n1", 12)
    assert not watch.drained("t", 12, ["n1", "n2", "n3"])
    watch.answered("n1", 13)  # n1 applied 12
    watch.answered("n2", 13)  # n2 applied 10 only
    assert not watch.drained("t", 13, ["n1", "n2", "n3"])
    watch.answered("n2", 14)
    watch.answered("n3", 12)
    watch.answered("n3", 14)
    assert watch.drained("t", 14, ["n1", "n2", "n3"])
    # A node gossip calls Down is not waited for.
    assert not DrainWatch().drained("u", 1, ["n9"])
    assert DrainWatch().drained("u", 1, [])


def test_a_long_polls_index_says_what_a_node_applied() -> None:
    watch = DrainWatch()
    assert not watch.drained("t", 20, ["n1", "n2"])
    watch.applied("n1", 20)
    watch.applied("n2", 19)
    assert not watch.drained("t", 21, ["n1", "n2"])
    watch.applied("n2", 21)
    watch.applied("n2", 3)  # a late, older request never moves it back
    assert watch.drained("t", 22, ["n1", "n2"])


def test_forget_drops_tasks_no_longer_leaving() -> None:
    watch = DrainWatch()
    watch.drained("t", 5, [])
    watch.forget([])
    watch.answered("n1", 6)
    watch.answered("n1", 7)
    # Seen leaving again later (a new index): the old start is gone.
    assert not watch.drained("t", 8, ["n1"])


def service_doc(serving: list[str] | None) -> dict[str, object]:
    doc: dict[str, object] = {
        "name": "web",
        "endpoint_mode": "vip",
        "networks": ["n1"],
        "vips": [{"network_id": "n1", "addr": "10.0.0.2"}],
    }
    if serving is not None:
        doc["serving"] = serving
    return doc


def records() -> dict[str, set[NameRecord]]:
    return {
        "n1": {
            NameRecord("n1", "web.1.aaa", IPv4Address("10.0.0.3"), RecordKind.CONTAINER),
            NameRecord("n1", "web.2.bbb", IPv4Address("10.0.0.4"), RecordKind.CONTAINER),
        }
    }


def test_only_serving_tasks_are_backends() -> None:
    services, bad = parse_services({"services": [service_doc(["aaa"])]})
    assert bad == 0
    assert task_addresses(services, records()) == {("n1", "web"): {IPv4Address("10.0.0.3")}}
    services, _ = parse_services({"services": [service_doc([])]})
    assert task_addresses(services, records()) == {}


def test_an_answer_without_the_list_keeps_every_running_task() -> None:
    services, _ = parse_services({"services": [service_doc(None)]})
    assert task_addresses(services, records()) == {
        ("n1", "web"): {IPv4Address("10.0.0.3"), IPv4Address("10.0.0.4")}
    }
