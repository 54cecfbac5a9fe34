"""A trace from the page (web/trace.py, POST /api/actions/trace): off without --allow-actions,
only toward the lab's own networks (an address, or a name that resolves to one), a lab whose
agents are gone is a clear error, and the hops are mapped onto the graph's elements."""

from __future__ import annotations

import json
from typing import Any

import pytest

from overlaynet.trace import run
from overlaynet.trace.model import Resolution
from overlaynet.trace.verdict import explain
from overlaynet.web import trace as web_trace
from overlaynet.web.app import make_app
from overlaynet.web.hub import Hub
from overlaynet.web.model import View, build_view
from tests.unit.web.reports import OVERLAY, report
from tests.unit.web.test_actions import JSON, post

# A lab that no agent serves: its sockets do not exist.
NO_LAB = "webunit-nolab"
NET = f"net/{OVERLAY}"


def lab_view() -> View:
    # a (10.0.1.2) on node1; z (10.0.1.2) and b (10.0.1.3) on node2, all on the overlay webnet.
    return build_view(
        "lab",
        [
            report("node1", containers=[("a", "running")]),
            report("node2", containers=[("z", "running"), ("b", "running")]),
            report("node3"),
        ],
        {},
    )


def body(**kw: Any) -> bytes:
    return json.dumps({"host": "node1", "container": "a", "to": "b", **kw}).encode()


async def test_a_trace_is_forbidden_without_allow_actions() -> None:
    hub = Hub(NO_LAB)
    hub.update(lab_view(), 1.0)
    status, doc = await post(make_app(hub), "/api/actions/trace", body(), JSON)
    assert status == 403 and "--allow-actions" in doc["error"]
    assert hub.counters["traces"] == 0


async def test_a_lab_without_agents_is_a_clear_error_not_a_crash() -> None:
    hub = Hub(NO_LAB)
    hub.update(lab_view(), 1.0)
    app = make_app(hub, allow_actions=True)
    status, doc = await post(app, "/api/actions/trace", body(), JSON)
    assert status == 502 and "Cannot connect to the agent of node1" in doc["error"]
    assert hub.counters["traces_failed"] == 1
    # The lock was let go: the next one is tried too (not "another action is running").
    status, _ = await post(app, "/api/actions/trace", body(), JSON)
    assert status == 502


@pytest.mark.parametrize(
    ("kw", "said"),
    [
        ({"container": "nope"}, "no container 'nope' on host 'node1'"),
        ({"host": "node2", "container": "a"}, "no container 'a' on host 'node2'"),
        ({"to": "192.0.2.7"}, "on none of this lab's networks"),
        ({"to": "a b;rm"}, "neither an IPv4 address nor a name"),
        ({"to": ""}, "needs host, container and to"),
        ({"proto": "tcp:0"}, "invalid protocol"),
        ({"proto": "sctp:80"}, "invalid protocol"),
        ({"network": "other"}, "no network 'other'"),
    ],
)
async def test_a_bad_request_is_refused_before_any_agent_is_asked(
    kw: dict[str, Any], said: str
) -> None:
    hub = Hub(NO_LAB)
    hub.update(lab_view(), 1.0)
    status, doc = await post(
        make_app(hub, allow_actions=True), "/api/actions/trace", body(**kw), JSON
    )
    assert status == 400 and said in doc["error"]
    assert hub.counters["traces"] == 0


def test_a_good_request_names_what_the_cli_would() -> None:
    view = lab_view()
    req = web_trace.trace_request(
        {"host": "node1", "container": "a", "to": " 10.0.1.3 ", "proto": "tcp:8080"}, view
    )
    assert req == run.TraceRequest("node1", "a", "10.0.1.3", "tcp", 8080, None, 84, 2.0)
    by_name = web_trace.trace_request({"host": "node1", "container": "a", "to": "b"}, view)
    assert (by_name.to, by_name.proto, by_name.port) == ("b", "icmp", 0)


def test_a_name_resolving_outside_the_lab_is_refused_before_anything_is_armed() -> None:
    asked: list[str] = []

    def call(host: str, op: str, wait: float | None, **args: Any) -> Any:
        asked.append(op)
        assert op == "trace.plan"
        return {"resolution": None, "src_ip": "10.0.1.2", "dst_ip": "192.0.2.7", "network": None}

    view = lab_view()

    def check(ip: str) -> None:
        if not web_trace.in_lab(ip, view):
            raise run.CallFailed(f"{ip} is outside")

    req = run.TraceRequest("node1", "a", "far.example")
    with pytest.raises(run.CallFailed, match=r"192\.0\.2\.7 is outside"):
        run.run_trace(call, req, web_trace.lab_hosts(view), check)
    assert asked == ["trace.plan"]


def hop(host: str, stage: str) -> dict[str, Any]:
    return {"host": host, "stage": stage, "where": "x", "decision": "y", "t": None}


def test_a_cross_host_trace_lights_both_hosts_their_vteps_and_the_underlay() -> None:
    view = lab_view()
    doc = {
        "hops": [
            hop("node1", "container"),
            hop("node1", "bridge"),
            hop("node1", "vtep"),
            hop("node2", "peer-vtep"),
            hop("node2", "destination"),
            hop("node1", "reply"),
        ],
        "reached": True,
        "stop": None,
        "source": {"network": "webnet", "dst_ip": "10.0.1.3"},
    }
    req = run.TraceRequest("node1", "a", "b")
    path = web_trace.path_on_graph(doc, req, view)
    src, dst = "ctr/node1/node1-a", "ctr/node2/node2-b"
    assert path["nodes"] == [src, NET, "host/node1", "host/node2", "underlay", dst]
    assert set(path["edges"]) == {
        f"att:{src}:{NET}",
        f"att:{dst}:{NET}",
        f"vtep:{NET}:node1",
        f"vtep:{NET}:node2",
        "ul:node1",
        "ul:node2",
    }
    assert path["stop"] is None
    assert "host/node3" not in path["nodes"]


def test_a_name_on_another_network_stops_at_the_source_container() -> None:
    view = lab_view()
    resolution = Resolution("c3", "127.0.0.11", "webnet", None, "NXDOMAIN")
    doc = {**explain(None, [], resolution, "node1").to_json(), "source": None}
    req = run.TraceRequest("node1", "a", "c3")
    path = web_trace.path_on_graph(doc, req, view)
    assert doc["stop"]["where"] == "dns"
    assert path["stop"] == "ctr/node1/node1-a"
    assert "underlay" not in path["nodes"]


def test_a_stop_at_the_peer_vtep_marks_that_host() -> None:
    view = lab_view()
    doc = {
        "hops": [hop("node1", "container"), hop("node1", "vtep")],
        "reached": False,
        "stop": {"host": "node2", "where": "peer-vtep", "why": "dropped"},
        "source": {"network": "webnet", "dst_ip": "10.0.1.3"},
    }
    path = web_trace.path_on_graph(doc, run.TraceRequest("node1", "a", "b"), view)
    assert path["stop"] == "host/node2"
    assert "ctr/node2/node2-b" not in path["nodes"]  # never reached
