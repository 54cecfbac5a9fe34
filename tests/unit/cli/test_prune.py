"""What the prunes pick and how they ask and report (cli/prune.py), without an agent."""

from __future__ import annotations

import io

from overlaynet.cli.prune import (
    PROTECTED_NETWORKS,
    QUESTION,
    confirm,
    prunable_networks,
    report,
    stopped_containers,
)


def test_only_stopped_containers_are_pruned() -> None:
    rows = [
        {"id": "a", "state": "running"},
        {"id": "b", "state": "exited"},
        {"id": "c", "state": "created"},
        {"id": "d", "state": "paused"},
    ]
    assert stopped_containers(rows) == ["b", "c"]


def test_only_unused_local_user_networks_are_pruned() -> None:
    rows = [{"id": n, "name": n, "scope": "local"} for n in sorted(PROTECTED_NETWORKS)]
    rows += [
        {"id": "u1", "name": "unused", "scope": "local"},
        {"id": "u2", "name": "busy", "scope": "local"},
        {"id": "u3", "name": "myoverlay", "scope": "swarm"},
    ]
    assert prunable_networks(rows, lambda nid: nid == "u2") == ["unused"]


def test_confirm_asks_dockers_question_and_takes_only_yes() -> None:
    for answer, expected in (
        ("y\n", True),
        ("yes\n", True),
        ("Y\n", True),
        ("\n", False),
        ("", False),
        ("no\n", False),
    ):
        out = io.StringIO()
        assert confirm("WARNING! x", io.StringIO(answer), out) is expected
        assert out.getvalue() == f"WARNING! x\n{QUESTION}"


def test_report_lists_names_or_nothing() -> None:
    assert report("Deleted Networks", ["a", "b"]) == "Deleted Networks:\na\nb\n\n"
    assert report("Deleted Networks", []) == ""
