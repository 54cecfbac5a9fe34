"""What the prunes pick and how they ask and report (cli/prune.py), without an agent."""

from __future__ import annotations

import io
import os
import threading

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


def test_confirm_asks_dockers_question_and_takes_only_y() -> None:
    # docker's prompt.Confirm takes y or Y and nothing else (`yes` keeps the network).
    for answer, expected in (
        ("y\n", True),
        ("yes\n", False),
        (" Y \n", True),
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


def _confirm_from_pipe(write: bytes, keep_open: bool) -> tuple[bool | None, str]:
    """confirm() over a real pipe the test writes `write` into, left open or closed; the
    pipe is closed at the end either way so a confirm that blocks is freed."""
    rfd, wfd = os.pipe()
    os.write(wfd, write)
    if not keep_open:
        os.close(wfd)
    out = io.StringIO()
    result: list[bool] = []
    with os.fdopen(rfd) as stdin:
        worker = threading.Thread(
            target=lambda: result.append(confirm("WARNING! x", stdin, out, wait=0.2))
        )
        worker.start()
        # A liveness bound, not a speed claim: the answer is due after 0.2 s.
        worker.join(30)
        blocked = worker.is_alive()
        if keep_open:
            os.close(wfd)
        worker.join()
    return (None if blocked else result[0]), out.getvalue()


def test_a_silent_pipe_is_a_no_said_in_one_line_not_a_hang() -> None:
    # `sleep 20 | overlaynet network rm ingress` blocked in readline() for the whole 20 s.
    answer, said = _confirm_from_pipe(b"", keep_open=True)
    assert answer is False
    line = "no answer on stdin (not a terminal) within 0.2 s: taken as no"
    assert said == f"WARNING! x\n{QUESTION}\n{line}\n"


def test_a_pipe_that_answers_is_read() -> None:
    assert _confirm_from_pipe(b"y\n", keep_open=True)[0] is True
    assert _confirm_from_pipe(b"y", keep_open=False)[0] is True  # `printf y |`
    answer, said = _confirm_from_pipe(b"", keep_open=False)  # `</dev/null`: no, silently
    assert answer is False and said == f"WARNING! x\n{QUESTION}"
