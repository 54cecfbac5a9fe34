"""Container lifecycle through the CLI: run, exec, logs, top, stop, start, rm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from overlaynet import lab as labmod
from tests.integration.labs import Lab, wait_until


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
        "node1", "run", "-dit", "--name", "files", "--network", "filesnet", "alpine"
    ).strip()
    assert lab2.ok("node1", "exec", "files", "hostname").strip() == cid[:12]
    hosts = lab2.ok("node1", "exec", "files", "cat", "/etc/hosts")
    assert cid[:12] in hosts
    assert "nameserver 127.0.0.11" in lab2.ok("node1", "exec", "files", "cat", "/etc/resolv.conf")
    # The host's own files are untouched.
    with open("/etc/hosts") as f:
        assert cid[:12] not in f.read()


def test_exec_passes_stdout_stderr_and_exit_code(lab2: Lab) -> None:
    lab2.ok("node1", "run", "-dit", "--name", "ex", "alpine")
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
    lab2.ok("node2", "run", "-dit", "--name", "r1", "alpine")
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


def _cli_argv(lab: Lab, host: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "overlaynet", "--lab", lab.name, "-H", host, *args]


def test_run_i_reads_the_clients_stdin_and_rm_removes_it(lab2: Lab) -> None:
    # `echo hi | overlaynet -H node1 run -i --rm alpine cat`: the pipe's end is cat's end.
    out = subprocess.run(
        _cli_argv(lab2, "node1", "run", "-i", "--rm", "--name", "piped", "alpine", "cat"),
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr
    assert "piped" not in lab2.ok("node1", "ps", "--all")


def test_containers_run_in_their_images_root_with_its_default_command(lab2: Lab) -> None:
    # No command: the image's. busybox `sh` with no stdin ends at once, as Docker's alpine does.
    lab2.ok("node1", "run", "-d", "--name", "shell", "alpine")
    doc = json.loads(lab2.ok("node1", "inspect", "shell"))[0]
    assert doc["Config"]["Cmd"] == ["/bin/sh"] and doc["Config"]["Image"] == "alpine"
    assert "OVERLAYNET_NAME=shell" in doc["Config"]["Env"]
    assert "OVERLAYNET_NODE=node1" in doc["Config"]["Env"]
    assert wait_until(lambda: _status(lab2, "shell") == "exited")
    lab2.ok("node1", "run", "-d", "--name", "topper", "alpine", "top")
    # exec lands in the image's root and pid namespace: ps shows the container's processes.
    assert "work" not in lab2.ok("node1", "exec", "topper", "ls", "/").split()
    ps = lab2.ok("node1", "exec", "topper", "ps")
    assert " top" in ps and "agent" not in ps
    pid = json.loads(lab2.ok("node1", "inspect", "topper"))[0]["State"]["Pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"/.overlaynet-init" in f.read()  # the container's pid 1, on the host
    # The host image runs in the host's root (its tools: getent, which busybox lacks).
    lab2.ok("node1", "run", "-d", "--name", "onhost", "host")
    assert lab2.cli("node1", "exec", "onhost", "getent", "hosts", "localhost").returncode == 0
    lab2.ok("node1", "rm", "-f", "shell", "topper", "onhost")


def test_an_unknown_image_is_refused_naming_the_catalog(lab2: Lab) -> None:
    out = lab2.cli("node1", "run", "-d", "--name", "nope", "nosuchimage")
    assert out.returncode == 125
    assert "Unable to find image 'nosuchimage:latest'" in out.stderr
    assert "catalog.toml" in out.stderr and "alpine:latest" in out.stderr
    assert "nope" not in lab2.ok("node1", "ps", "--all")


def test_image_ls_lists_the_catalog(lab2: Lab) -> None:
    table = lab2.ok("node1", "image", "ls").splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    repos = {line.split()[0] for line in table[1:]}
    assert {"alpine", "busybox", "host", "overlaynet/web"} <= repos
    ids = lab2.ok("node1", "images", "-q").split()
    assert len(ids) == len(table) - 1 and all(len(i) == 12 for i in ids)
    refs = lab2.ok("node1", "images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert "dockersamples/atsea-db:mssql" in refs


@pytest.mark.parametrize(
    ("sig", "code", "name"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_a_signal_to_a_foreground_run_with_rm_removes_the_container(
    lab2: Lab, sig: signal.Signals, code: int, name: str
) -> None:
    # Ctrl-C (SIGINT) and SIGTERM end a foreground run the same way: 128 + the signal.
    argv = _cli_argv(lab2, "node1", "run", "--rm", "--name", name, "alpine", "top")
    client = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: name in lab2.ok("node1", "ps"))
        client.send_signal(sig)
        assert client.wait(timeout=60) == code, client.stderr.read() if client.stderr else ""
    finally:
        if client.poll() is None:
            client.kill()
    assert name not in lab2.ok("node1", "ps", "--all")


def test_run_i_input_ends_with_the_client_not_with_its_stdin(lab2: Lab) -> None:
    # The client is killed while its stdin (this test's pipe) stays open: the container must
    # not go on reading that stdin (a user's terminal, typically), its input ends instead.
    argv = _cli_argv(lab2, "node1", "run", "-i", "--name", "orphan", "alpine", "cat")
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: "orphan" in lab2.ok("node1", "ps"))
        client.kill()
        client.wait(timeout=30)
        assert wait_until(lambda: _status(lab2, "orphan") == "exited")
    finally:
        if client.stdin is not None:
            client.stdin.close()
        if client.poll() is None:
            client.kill()
    lab2.ok("node1", "rm", "-f", "orphan")


def _status(lab: Lab, container: str) -> str:
    return lab.ok("node1", "inspect", "-f", "{{.State.Status}}", container).strip()


def _config(lab: Lab, container: str) -> dict[str, object]:
    config: dict[str, object] = json.loads(lab.ok("node1", "inspect", container))[0]["Config"]
    return config


def test_inspect_shows_hostname_and_tty_and_a_restart_keeps_them(fresh_lab: Lab) -> None:
    lab = fresh_lab
    lab.ok("node1", "run", "-d", "-h", "web", "--name", "named", "alpine", "top")
    tid = lab.ok("node1", "run", "-dit", "--name", "term", "alpine").strip()
    fmt = "{{.Config.Hostname}} {{.Config.Tty}}"
    assert lab.ok("node1", "inspect", "-f", fmt, "named").split() == ["web", "false"]
    assert lab.ok("node1", "inspect", "-f", fmt, "term").split() == [tid[:12], "true"]

    # The agent dies with -9 and so does `named`'s process: the restarted agent relaunches it
    # from its record alone (no file in its folder says who it is any more).
    pid = labmod.status(lab.name)[0].pid
    assert pid is not None
    named_pid = json.loads(lab.ok("node1", "inspect", "named"))[0]["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    os.kill(named_pid, signal.SIGKILL)
    labmod.up(lab.name, 1)

    assert _config(lab, "named")["Hostname"] == "web"
    assert _config(lab, "named")["Tty"] is False
    assert _config(lab, "term")["Hostname"] == tid[:12]
    assert _config(lab, "term")["Tty"] is True
    assert lab.ok("node1", "exec", "named", "hostname").strip() == "web"
    hosts = lab.ok("node1", "exec", "named", "cat", "/etc/hosts").splitlines()
    assert any(line.endswith("\tweb") for line in hosts), hosts
