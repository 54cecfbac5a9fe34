"""Container lifecycle through the CLI: run, exec, logs, top, stop, start, rm."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.labs import Lab


def test_run_streams_output_and_returns_the_exit_code(lab2: Lab) -> None:
    out = lab2.cli(
        "node1", "run", "--name", "fg", "alpine", "sh", "-c", "echo out; echo err >&2; exit 7"
    )
    assert out.returncode == 7
    assert "out" in out.stdout and "err" in out.stdout
    ps = lab2.ok("node1", "ps", "-a")
    row = next(line for line in ps.splitlines() if line.endswith(" fg"))
    assert "Exited (7)" in row


def test_run_rm_removes_the_container_after_it_exits(lab2: Lab) -> None:
    out = lab2.cli("node1", "run", "--rm", "--name", "gone", "alpine", "true")
    assert out.returncode == 0
    assert " gone" not in lab2.ok("node1", "ps", "-a")


def test_container_has_its_own_hosts_hostname_and_resolv_conf(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "filesnet")
    cid = lab2.ok(
        "node1", "run", "-d", "--name", "files", "--network", "filesnet", "alpine"
    ).strip()
    assert lab2.ok("node1", "exec", "files", "hostname").strip() == cid[:12]
    hosts = lab2.ok("node1", "exec", "files", "cat", "/etc/hosts")
    assert cid[:12] in hosts
    assert "nameserver 127.0.0.11" in lab2.ok("node1", "exec", "files", "cat", "/etc/resolv.conf")
    # The host's own files are untouched.
    with open("/etc/hosts") as f:
        assert cid[:12] not in f.read()


def test_exec_passes_stdout_stderr_and_exit_code(lab2: Lab) -> None:
    lab2.ok("node1", "run", "-d", "--name", "ex", "alpine")
    out = lab2.cli(
        "node1",
        "exec",
        "-e",
        "GREETING=hi",
        "ex",
        "sh",
        "-c",
        'echo "$GREETING"; echo oops >&2; exit 4',
    )
    assert (out.returncode, out.stdout, out.stderr) == (4, "hi\n", "oops\n")
    argv = [
        sys.executable,
        "-m",
        "overlaynet",
        "--lab",
        lab2.name,
        "-H",
        "node1",
        "exec",
        "-i",
        "ex",
        "cat",
    ]
    piped = subprocess.run(
        argv, input="through stdin\n", capture_output=True, text=True, timeout=30
    )
    assert piped.stdout == "through stdin\n"


def test_top_lists_the_container_processes(lab2: Lab) -> None:
    lab2.ok("node1", "run", "-d", "--name", "topc", "alpine", "sleep", "1234")
    out = lab2.ok("node1", "top", "topc")
    assert out.splitlines()[0].split()[:3] == ["UID", "PID", "PPID"]
    assert "sleep 1234" in out


def test_stop_start_and_logs(lab2: Lab) -> None:
    lab2.ok(
        "node1", "run", "-d", "--name", "ss", "alpine", "sh", "-c", "echo started; exec sleep 1000"
    )
    lab2.ok("node1", "stop", "ss")
    state = json.loads(lab2.ok("node1", "inspect", "ss"))[0]["State"]
    assert state["Status"] == "exited" and state["Running"] is False and state["ExitCode"] == 143
    lab2.ok("node1", "start", "ss")
    state = json.loads(lab2.ok("node1", "inspect", "ss"))[0]["State"]
    assert state["Running"] is True and state["Pid"] > 0
    assert lab2.ok("node1", "logs", "ss").count("started") == 2


def test_logs_longer_than_one_api_answer_come_whole_and_in_order(lab2: Lab) -> None:
    # The CLI reads logs through the API a piece at a time (it never opens the agent's files).
    script = "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done"
    lab2.ok("node1", "run", "--name", "chatty", "alpine", "sh", "-c", script)
    lines = lab2.ok("node1", "logs", "chatty").splitlines()
    assert lines == [f"line-{i}" for i in range(20000)]  # ~190 KB: several answers
    lab2.ok("node1", "rm", "chatty")


def test_exec_in_a_stopped_container_is_refused(lab2: Lab) -> None:
    lab2.ok("node1", "run", "--name", "gone", "alpine", "true")
    out = lab2.cli("node1", "exec", "gone", "true")
    assert out.returncode == 1
    assert "Error response from daemon: container gone is not running" in out.stderr
    lab2.ok("node1", "rm", "gone")


def test_rm_force_of_everything_like_docker(lab2: Lab) -> None:
    lab2.ok("node2", "run", "-d", "--name", "r1", "alpine")
    lab2.ok("node2", "run", "--name", "r2", "alpine", "true")
    ids = lab2.ok("node2", "ps", "--all", "--quiet").split()
    assert len(ids) >= 2 and all(len(i) == 12 for i in ids)
    lab2.ok("node2", "container", "rm", "--force", *ids)
    assert lab2.ok("node2", "ps", "-aq").strip() == ""
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"onet-{lab2.name}-node2-" not in spaces
    links = subprocess.run(
        ["ip", "netns", "exec", lab2.netns_of("node2"), "ip", "-o", "link"],
        capture_output=True,
        text=True,
    ).stdout
    assert "on-ve" not in links
