"""`overlaynet service …` output shapes (cli/service.py), without an agent."""

from __future__ import annotations

from typing import Any

import pytest

from overlaynet.cli import service
from overlaynet.cli.main import build_parser, cmd_node_update


def row(**over: Any) -> dict[str, Any]:
    doc = {
        "id": "1ci8sfixz7k3ws88wp5tf44o4",
        "name": "database.1",
        "image": "dockersamples/atsea-db:mssql",
        "node": "node3",
        "slot": 1,
        "desired_state": "Running",
        "current_state": "Running",
        "state": "running",
        "since": 1000.0,
        "error": "",
        "ports": "*:1433->1433/tcp",
        "history": False,
    }
    doc.update(over)
    return doc


def test_ps_table_has_dockers_columns_and_relative_times() -> None:
    failed = row(
        history=True, current_state="Failed", since=820.0, error="task: non-zero exit (137)"
    )
    text = service.ps_table([row(), failed], now=1180.0)
    header, first, second = text.splitlines()
    assert header.split("   ")[0] == "ID"
    for column in ("NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"):
        assert column in header
    assert first.startswith("1ci8sfixz7k3   database.1")
    assert "Running 3 minutes ago" in first and first.endswith("*:1433->1433/tcp")
    assert "\\_ database.1" in second and "Failed 6 minutes ago" in second
    assert '"task: non-zero exit (137)"' in second


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "less than a second"), (1, "1 second"), (59, "59 seconds"), (61, "about a minute"),
     (600, "10 minutes"), (3600, "about an hour")],
)  # fmt: skip
def test_current_state_says_how_long_ago(seconds: float, text: str) -> None:
    assert service.current_state(row(since=100.0), 100.0 + seconds) == f"Running {text} ago"


def test_progress_converges_when_every_slot_runs() -> None:
    text, done = service.progress([row(), row(slot=2, state="starting")], desired=2)
    assert not done
    assert text.splitlines()[0] == "overall progress: 1 out of 2 tasks"
    assert text.splitlines()[2].startswith("2/2: starting  [")
    text, done = service.progress([row(), row(slot=2)], desired=2)
    assert done and text.endswith("verify: Service converged")


def test_log_prefix_is_name_task_id_and_node() -> None:
    assert service.log_prefix(row()) == "database.1.1ci8sfixz7k3@node3"


def test_detach_forms_never_swallow_the_image() -> None:
    p = build_parser()
    for flags, detach in ((["--detach"], True), (["--detach=true"], True), (["-d"], True),
                          (["--detach=false"], False), ([], False)):  # fmt: skip
        ns = p.parse_args(["service", "create", "--name", "x", *flags, "alpine", "sleep", "9"])
        assert (ns.detach, ns.image, ns.command) == (detach, "alpine", ["sleep", "9"])


def test_node_update_takes_labels_without_availability() -> None:
    ns = build_parser().parse_args(["node", "update", "--label-add", "zone=a", "node2"])
    assert ns.label_add == ["zone=a"] and ns.availability is None
    assert ns.func is cmd_node_update


def test_pretty_inspect_names_mode_image_and_ports() -> None:
    doc = {
        "ID": "abc",
        "Spec": {
            "Name": "appserver",
            "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {"ContainerSpec": {"Image": "dockersamples/atsea-appserver:1.0"}},
            "EndpointSpec": {
                "Mode": "vip",
                "Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 8080,
                           "PublishMode": "ingress"}],
            },
        },
    }  # fmt: skip
    text = service.pretty(doc)
    assert "Name:           appserver" in text
    assert "Service Mode:   Replicated" in text and " Replicas:      2" in text
    assert " PublishedPort = 8080" in text and "  PublishMode = ingress" in text
