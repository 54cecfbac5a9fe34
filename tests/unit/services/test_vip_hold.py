"""A VIP new to a node is never installed with a partial first set of backends (issue 13:
`network lb` showed 1 backend right after a scale to 3): it waits, boundedly, until gossip
has brought every task the managers say serves it (lb.hold_new_vips, servicedns.known_tasks)."""

from __future__ import annotations

from ipaddress import IPv4Address

from overlaynet.agent.lb import JOIN_SYNC_WAIT, hold_new_vips
from overlaynet.agent.servicedns import ServiceEndpoint, known_tasks, missing_serving
from overlaynet.dns.records import NameRecord, RecordKind

NET = "n1"
VIP = IPv4Address("10.0.0.2")


def web(serving: set[str] | None) -> ServiceEndpoint:
    return ServiceEndpoint(
        "web",
        "vip",
        (NET,),
        ((NET, VIP),),
        serving=None if serving is None else frozenset(serving),
    )


def records(*tasks: str) -> dict[str, set[NameRecord]]:
    return {
        NET: {
            NameRecord(
                NET, f"web.{i + 1}.{t}", IPv4Address(f"10.0.0.{10 + i}"), RecordKind.CONTAINER
            )
            for i, t in enumerate(tasks)
        }
    }


def test_known_tasks_are_the_running_task_containers_by_service() -> None:
    recs = records("t1", "t2")
    recs[NET].add(NameRecord(NET, "other", IPv4Address("10.0.0.99"), RecordKind.CONTAINER))
    assert known_tasks([web({"t1"})], recs) == {(NET, "web"): {"t1", "t2"}}


def test_a_node_that_knows_only_its_own_new_task_holds_the_new_vip() -> None:
    # Right after a scale 1 -> 3: the managers say t1 (old, elsewhere) and t2 (here) serve,
    # this node's gossip has only brought its own t2 so far.
    service = web({"t1", "t2"})
    known = known_tasks([service], records("t2"))
    assert missing_serving(service, known, NET) == {"t1"}
    ready, held = hold_new_vips([service], known, NET, set(), {}, now=100.0)
    assert ready == [] and held == {"web": 100.0}
    # Still missing a moment later: still held, since the first time.
    ready, held = hold_new_vips([service], known, NET, set(), held, now=101.0)
    assert ready == [] and held == {"web": 100.0}
    # Gossip brought t1: installed with both.
    known = known_tasks([service], records("t2", "t1"))
    ready, held = hold_new_vips([service], known, NET, set(), held, now=101.5)
    assert ready == [service] and held == {}


def test_the_hold_is_bounded() -> None:
    service = web({"t1", "t2"})
    known = known_tasks([service], records("t2"))
    _, held = hold_new_vips([service], known, NET, set(), {}, now=0.0)
    ready, held = hold_new_vips([service], known, NET, set(), held, now=JOIN_SYNC_WAIT)
    assert ready == [service] and held == {}


def test_a_vip_already_balanced_here_follows_gossip_unheld() -> None:
    service = web({"t1", "t2"})
    known = known_tasks([service], records("t2"))
    ready, held = hold_new_vips([service], known, NET, {"web"}, {}, now=0.0)
    assert ready == [service] and held == {}


def test_no_serving_list_or_another_network_holds_nothing() -> None:
    for service in (
        web(None),
        ServiceEndpoint("web", "vip", ("n2",), (), serving=frozenset({"x"})),
    ):
        ready, held = hold_new_vips([service], {}, NET, set(), {}, now=0.0)
        assert ready == [service] and held == {}
