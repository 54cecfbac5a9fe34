"""What Docker reports of a container (issue 13): its exit code after `kill -9` of its process
(State.Pid, the container's init in its own pid namespace) is 128+9 = 137, a stop of `top` is
128+15, a command's own status passes through; `run --label` shows in inspect's Config.Labels
and selects with `ps --filter label=`."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.integration.labs import Lab, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def exit_code(lab: Lab, name: str) -> str:
    return lab.ok("node1", "inspect", "--format", "{{.State.ExitCode}}", name).strip()


def status(lab: Lab, name: str) -> str:
    return lab.ok("node1", "inspect", "--format", "{{.State.Status}}", name).strip()


def test_kill_9_of_a_containers_process_is_exit_137(fresh_lab: Lab) -> None:
    fresh_lab.ok("node1", "run", "-d", "--name", "k9", "alpine", "top")
    pid = int(fresh_lab.ok("node1", "inspect", "--format", "{{.State.Pid}}", "k9"))
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: status(fresh_lab, "k9") == "exited", 10)
    assert exit_code(fresh_lab, "k9") == "137"
    # The same container stopped (SIGTERM to top) and a command's own status.
    fresh_lab.ok("node1", "start", "k9")
    fresh_lab.ok("node1", "stop", "k9")
    assert exit_code(fresh_lab, "k9") == "143"
    assert fresh_lab.cli("node1", "run", "--rm", "alpine", "sh", "-c", "exit 3").returncode == 3


def test_labels_show_in_inspect_and_select_in_ps(fresh_lab: Lab) -> None:
    fresh_lab.ok("node1", "run", "-d", "--name", "front", "--label", "tier=front", "-l", "x",
                 "alpine", "top")  # fmt: skip
    fresh_lab.ok("node1", "run", "-d", "--name", "back", "--label", "tier=back", "alpine", "top")
    doc = fresh_lab.ok("node1", "inspect", "--format", "{{json .Config.Labels}}", "front")
    assert json.loads(doc) == {"tier": "front", "x": ""}
    names = fresh_lab.ok("node1", "ps", "--filter", "label=tier=front", "--format", "{{.Names}}")
    assert names.split() == ["front"]
    names = fresh_lab.ok("node1", "ps", "--filter", "label=tier", "--format", "{{.Names}}")
    assert sorted(names.split()) == ["back", "front"]
    bad = fresh_lab.cli("node1", "run", "-d", "--label", "=v", "alpine", "top")
    assert bad.returncode != 0 and "invalid label '=v'" in bad.stderr
    fresh_lab.ok("node1", "rm", "-f", "front", "back")
