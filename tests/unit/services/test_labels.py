"""Container labels (issue 13): `--label` parsing, Docker's labels on a task's container, the
task and sandbox markers read from labels (and from the environment of containers made before
labels), and the agent's sandboxes hidden from `ps` and DNS."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from overlaynet.agent.lb import lb_network_of
from overlaynet.agent.requests import ContainerCreate, labels_of
from overlaynet.agent.servicedns import hide_sandboxes
from overlaynet.agent.tasks import TASK_ENV, AssignedTask, local_tasks, parse_assigned, task_labels
from overlaynet.agent.views import container_rows
from overlaynet.cli import filters
from overlaynet.dns.feed import DnsView
from overlaynet.dns.records import NameRecord, RecordKind
from overlaynet.dns.records import Network as DnsNetwork
from overlaynet.errors import InvalidArgument
from overlaynet.model import SANDBOX_LABEL, Container, Status, container_from_doc, to_doc

from .test_worker_tasks import task_doc

CREATED = "2026-01-01T00:00:00.000000Z"


def box(name: str, **kw: object) -> Container:
    return Container(name, name, "alpine", [], CREATED, status=Status.RUNNING, **kw)  # type: ignore[arg-type]


def test_labels_parse_like_docker_and_a_missing_key_is_refused() -> None:
    assert labels_of(("a=1", "b", "c=x=y", "a=2")) == {"a": "2", "b": "", "c": "x=y"}
    with pytest.raises(InvalidArgument, match="invalid label '=v'"):
        ContainerCreate(image="alpine", labels=("=v",)).check()


def test_labels_survive_the_store_and_old_records_have_none() -> None:
    c = box("web", labels={"k": "v"})
    assert container_from_doc(to_doc(c)).labels == {"k": "v"}
    doc = to_doc(c)
    del doc["labels"]
    assert container_from_doc(doc).labels == {}


def test_a_tasks_container_carries_dockers_swarm_labels() -> None:
    (t,), _, bad = parse_assigned({"node_id": "nodeA", "tasks": [task_doc("t1")]})
    assert bad == 0
    assert labels_of(task_labels(t)) == {
        "com.docker.swarm.node.id": "nodeA",
        "com.docker.swarm.service.id": "s1",
        "com.docker.swarm.service.name": "web",
        "com.docker.swarm.task": "",
        "com.docker.swarm.task.id": "t1",
        "com.docker.swarm.task.name": "web.1.t1",
    }
    assert isinstance(t, AssignedTask)


def test_tasks_are_found_by_label_and_by_the_old_environment_marker() -> None:
    found = local_tasks(
        [
            box("web.1.t1", labels={"com.docker.swarm.task.id": "t1"}),
            box("web.2.t2", env=[f"{TASK_ENV}=t2"]),  # made before labels
            box("web.3.t3", labels={"com.docker.swarm.task.id": "other"}),  # name disagrees
            box("user.made.name"),
        ]
    )
    assert sorted(found) == ["t1", "t2"]


def test_sandboxes_are_known_by_label_or_old_marker_and_hidden_from_ps() -> None:
    lb = box("lb_atsea", labels={SANDBOX_LABEL: "net1"})
    old = box("ingress-sbox", env=["OVERLAYNET_LB=ingress1"])
    user = box("web", labels={"tier": "front"})
    assert (lb_network_of(lb), lb_network_of(old), lb_network_of(user)) == (
        "net1",
        "ingress1",
        None,
    )
    for include_all in (False, True):
        rows = container_rows([lb, old, user], include_all, now=0.0)
        assert [r["names"] for r in rows] == ["web"]
    (row,) = container_rows([user], True, now=0.0)
    assert filters.CONTAINERS.select(filters.Filters.of([("label", "tier=front")]), [row])
    assert not filters.CONTAINERS.select(filters.Filters.of([("label", "tier=back")]), [row])


def test_sandboxes_names_and_short_ids_leave_the_dns_view() -> None:
    def rec(net: str, name: str, ip: str, kind: RecordKind = RecordKind.CONTAINER) -> NameRecord:
        return NameRecord(net, name, IPv4Address(ip), kind)

    atsea = {
        rec("n1", "lb_atsea", "10.0.1.3"),
        rec("n1", "0123456789ab", "10.0.1.3", RecordKind.SHORT_ID),
        rec("n1", "web.1.t1", "10.0.1.5"),
        rec("n1", "lb_other", "10.0.1.6"),  # another network's sandbox name: a user's container
    }
    ingress = {rec("i1", "ingress-sbox", "10.255.0.2"), rec("i1", "web.1.t1", "10.255.0.5")}
    view = DnsView(
        {"n1": DnsNetwork("n1", "atsea"), "i1": DnsNetwork("i1", "ingress")},
        {"n1": set(atsea), "i1": set(ingress)},
        {},
    )
    hide_sandboxes(view)
    assert {r.name for r in view.records["n1"]} == {"web.1.t1", "lb_other"}
    assert {r.name for r in view.records["i1"]} == {"web.1.t1"}
