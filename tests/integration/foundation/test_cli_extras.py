"""Issue 12's leftovers through the CLI on a real lab: run --hostname, logs --tail/-f, events,
prune, info's text and node inspect --pretty, run -t and SIGTERM of a foreground run --rm."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from overlaynet import lab as labmod
from tests.integration.labs import Lab, make_lab, wait_until


@pytest.fixture(scope="module")
def swarm2() -> Iterator[Lab]:
    """Two hosts in a swarm (node1 the manager) for this module's swarm views."""
    yield from make_lab(2, swarm=True)


def _cli_argv(lab: Lab, host: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "overlaynet", "--lab", lab.name, "-H", host, *args]


def test_run_hostname_sets_uts_name_etc_hostname_and_hosts(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "hostnet")
    lab2.ok(
        "node1", "run", "-dit", "--name", "named", "-h", "web01", "--network", "hostnet", "alpine"
    )
    assert lab2.ok("node1", "exec", "named", "hostname").strip() == "web01"
    assert lab2.ok("node1", "exec", "named", "cat", "/etc/hostname").strip() == "web01"
    hosts = lab2.ok("node1", "exec", "named", "cat", "/etc/hosts")
    assert "\tweb01" in hosts
    env = lab2.ok("node1", "exec", "named", "env")
    assert "HOSTNAME=web01" in env.split()
    # Docker's embedded DNS answers container names, not hostnames.
    lab2.ok("node1", "run", "-dit", "--name", "asker", "--network", "hostnet", "alpine")
    assert lab2.cli("node1", "exec", "asker", "nslookup", "web01").returncode != 0
    lab2.ok("node1", "rm", "-f", "named", "asker")
    lab2.ok("node1", "network", "rm", "hostnet")


def test_run_hostname_refuses_a_bad_name_and_creates_nothing(lab2: Lab) -> None:
    out = lab2.cli("node1", "run", "-d", "--name", "badhost", "--hostname", "no_way", "alpine")
    assert out.returncode == 125
    assert "invalid hostname 'no_way'" in out.stderr
    assert "badhost" not in lab2.ok("node1", "ps", "--all")
    doc = json.loads(lab2.ok("node1", "network", "inspect", "bridge"))[0]
    assert all(c["Name"] != "badhost" for c in (doc.get("Containers") or {}).values())


def test_logs_follow_returns_when_the_container_ends_and_tail_shows_the_last_lines(
    lab2: Lab,
) -> None:
    lab2.ok(
        "node1",
        "run",
        "-d",
        "--name",
        "talker",
        "alpine",
        "sh",
        "-c",
        "echo a; echo b; sleep 1; echo c",
    )
    # Started while the container still runs: returns by itself once it has ended.
    out = lab2.cli("node1", "logs", "-f", "talker")
    assert (out.returncode, out.stdout) == (0, "a\nb\nc\n"), out.stderr
    assert lab2.ok("node1", "inspect", "-f", "{{.State.Status}}", "talker").strip() == "exited"
    assert lab2.ok("node1", "logs", "--tail", "1", "talker") == "c\n"
    assert lab2.ok("node1", "logs", "-n", "2", "talker") == "b\nc\n"
    assert lab2.ok("node1", "logs", "--tail", "all", "talker") == "a\nb\nc\n"
    assert lab2.ok("node1", "logs", "--tail", "0", "-f", "talker") == ""
    bad = lab2.cli("node1", "logs", "--tail", "x", "talker")
    assert bad.returncode == 125 and "--tail" in bad.stderr
    lab2.ok("node1", "rm", "talker")


def _events(lab: Lab, *args: str) -> list[str]:
    return lab.ok("node1", "events", "--since", "5m", "--until", "0s", *args).splitlines()


def test_events_show_a_containers_life_in_order_and_filters_narrow_them(lab2: Lab) -> None:
    # A follower started first sees what happens from then on, and returns at --until.
    argv = _cli_argv(lab2, "node1", "events", "--until=-12s")
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # let the follower take its cursor (ordering, not a timed assertion)
        lab2.ok("node1", "network", "create", "evnet")
        cid = lab2.ok(
            "node1", "run", "-d", "--name", "evlife", "--network", "evnet", "alpine", "true"
        ).strip()
        assert wait_until(
            lambda: (
                lab2.ok("node1", "inspect", "-f", "{{.State.Status}}", "evlife").strip() == "exited"
            )
        )
        lab2.ok("node1", "rm", "evlife")
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    followed = [ln.split()[1:3] for ln in out.splitlines()]
    assert followed == [
        ["network", "create"],
        ["container", "create"],
        ["network", "connect"],
        ["container", "start"],
        ["container", "die"],
        ["network", "disconnect"],
        ["container", "destroy"],
    ]
    first = out.splitlines()[1]
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{9}}Z container create {cid} "
        r"\(image=alpine, name=evlife\)",
        first,
    ), first
    # --since replays the ring; filters narrow it.
    mine = _events(lab2, "--filter", "container=evlife")
    assert [ln.split()[2] for ln in mine if ln.split()[1] == "container"] == [
        "create",
        "start",
        "die",
        "destroy",
    ]
    assert _events(lab2, "--filter", "container=evlife", "--filter", "event=die")[0].endswith(
        "(exitCode=0, image=alpine, name=evlife)"
    )
    nets = _events(lab2, "--filter", "type=network", "--filter", "network=evnet")
    assert [ln.split()[2] for ln in nets] == ["create", "connect", "disconnect"]
    docs = [
        json.loads(x) for x in _events(lab2, "--filter", "network=evnet", "--format", "{{json .}}")
    ]
    assert docs[0]["Type"] == "network" and docs[0]["Actor"]["Attributes"]["name"] == "evnet"
    lab2.ok("node1", "network", "rm", "evnet")
    assert _events(lab2, "--filter", "network=evnet")[-1].split()[2] == "destroy"
    bad = lab2.cli("node1", "events", "--filter", "type=volume", "--until", "0s")
    assert bad.returncode != 0 and "type=volume" in bad.stderr


def test_prunes_remove_stopped_containers_and_unused_user_networks_only(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "pruneme")
    lab2.ok("node1", "network", "create", "keepme")
    lab2.ok("node1", "run", "-dit", "--name", "pr_run", "--network", "keepme", "alpine")
    done = lab2.ok("node1", "run", "-d", "--name", "pr_done", "alpine", "true").strip()

    def state() -> str:
        return lab2.ok("node1", "inspect", "-f", "{{.State.Status}}", "pr_done").strip()

    assert wait_until(lambda: state() == "exited")
    # Without -f it asks; anything but yes keeps everything.
    no = subprocess.run(
        _cli_argv(lab2, "node1", "container", "prune"),
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no.returncode == 0 and "Are you sure you want to continue? [y/N]" in no.stdout
    assert "pr_done" in lab2.ok("node1", "ps", "-a")
    yes = subprocess.run(
        _cli_argv(lab2, "node1", "container", "prune"),
        input="y\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert yes.returncode == 0, yes.stderr
    assert f"Deleted Containers:\n{done}\n" in yes.stdout
    assert yes.stdout.endswith("Total reclaimed space: 0B\n")
    ps = lab2.ok("node1", "ps", "-a")
    assert "pr_done" not in ps and "pr_run" in ps
    out = lab2.ok("node1", "network", "prune", "-f")
    assert out.startswith("Deleted Networks:\n") and "pruneme\n" in out
    assert "keepme" not in out and "bridge" not in out
    names = lab2.ok("node1", "network", "ls", "--format", "{{.Name}}").split()
    assert {"bridge", "host", "none", "keepme"} <= set(names) and "pruneme" not in names
    # system prune: the stopped container first, then the network it left unused.
    lab2.ok("node1", "stop", "-t", "0", "pr_run")
    out = lab2.ok("node1", "system", "prune", "-f")
    assert "Deleted Containers:\n" in out and "Deleted Networks:\nkeepme\n" in out
    assert out.endswith("Total reclaimed space: 0B\n")
    assert "pr_run" not in lab2.ok("node1", "ps", "-a")
    assert lab2.ok("node1", "system", "prune", "-f") == "Total reclaimed space: 0B\n"


def test_info_is_dockers_text_and_format_still_renders(lab2: Lab) -> None:
    text = lab2.ok("node1", "info").splitlines()
    assert "Server:" in text and " Swarm: inactive" in text
    assert any(x.startswith(" Containers: ") for x in text)
    assert any(x.startswith("  Running: ") for x in text)
    assert any(x.startswith(" Images: ") and int(x.split()[-1]) >= 4 for x in text)
    assert lab2.ok("node1", "info", "-f", "{{.Swarm.LocalNodeState}}").strip() == "inactive"
    doc = json.loads(lab2.ok("node1", "info", "--format", "json"))
    assert doc["Name"] == "node1" and isinstance(doc["Counters"], dict)


def test_info_and_node_inspect_pretty_in_a_swarm(swarm2: Lab) -> None:
    info = swarm2.ok("node1", "info").splitlines()
    assert " Swarm: active" in info and "  Is Manager: true" in info
    assert "  Managers: 1" in info and "  Nodes: 2" in info
    worker = swarm2.ok("node2", "info").splitlines()
    assert "  Is Manager: false" in worker
    pretty = swarm2.ok("node1", "node", "inspect", "--pretty", "self").splitlines()
    assert pretty[0].startswith("ID:") and pretty[0].endswith(" *")
    assert "Hostname:               node1" in pretty
    assert " State:                 Ready" in pretty
    assert " Availability:          Active" in pretty
    assert " Leader:                Yes" in pretty
    other = swarm2.ok("node1", "node", "inspect", "--pretty", "node2")
    assert "Hostname:               node2" in other and "Manager Status:" not in other


def _drive_in_pty(
    argv: list[str], steps: list[tuple[bytes, bytes]], seconds: float = 60.0
) -> tuple[int, bytes]:
    """Run the CLI on a pseudo-terminal of its own (as a user's shell would); for each step,
    wait until its output shows the first bytes, then type the second (a user types after the
    prompt); then read all it prints until it exits. Bounded by `seconds`: (status, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the CLI
        os.execv(argv[0], argv)
    out = b""
    deadline = time.monotonic() + seconds
    pending = list(steps)
    try:
        while time.monotonic() < deadline:
            while pending and pending[0][0] in out:
                os.write(fd, pending.pop(0)[1])
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                break  # EIO: the CLI and everything on its terminal ended
            if not data:
                break
            out += data
    finally:
        os.close(fd)
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended == 0:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_run_it_is_an_interactive_shell_on_a_pseudo_terminal(lab2: Lab) -> None:
    argv = _cli_argv(lab2, "node1", "run", "-it", "--rm", "--name", "interactive", "alpine", "sh")
    # The quotes keep the typed line (echoed by the terminal) from reading as the output.
    code, out = _drive_in_pty(argv, [(b"/ # ", b"tty; echo hel''lo; exit 3\r")])
    assert code == 3, out
    assert b"hello\r\n" in out  # the container's pty turns \n into \r\n, as docker's does
    assert b"/dev/pts/" in out  # the shell's stdin is a terminal
    assert "interactive" not in lab2.ok("node1", "ps", "--all")


def test_run_t_output_reaches_the_client_and_the_log(lab2: Lab) -> None:
    out = lab2.cli("node1", "run", "-t", "--name", "ttylog", "alpine", "sh", "-c", "tty; echo done")
    assert out.returncode == 0, out.stderr
    # (text mode reads the pty's \r\n as \n)
    assert re.fullmatch(r"/dev/pts/\d+\ndone\n", out.stdout), out.stdout
    assert lab2.ok("node1", "logs", "ttylog") == out.stdout
    # Without -t, no terminal (the stdin is /dev/null).
    plain = lab2.cli("node1", "run", "--rm", "alpine", "tty")
    assert plain.returncode == 1 and "not a tty" in plain.stdout
    lab2.ok("node1", "rm", "ttylog")


def test_a_dit_container_keeps_its_terminal_when_the_agent_dies(fresh_lab: Lab) -> None:
    lab = fresh_lab
    lab.ok("node1", "run", "-dit", "--name", "keeper", "alpine", "sh")
    pid = json.loads(lab.ok("node1", "inspect", "keeper"))[0]["State"]["Pid"]
    agent = labmod.status(lab.name)[0].pid
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    time.sleep(0.5)  # lets a hung-up terminal's SIGHUP land before we look (not a timing assertion)
    labmod.up(lab.name, 1)
    doc = json.loads(lab.ok("node1", "inspect", "keeper"))[0]
    assert doc["State"]["Running"] and doc["State"]["Pid"] == pid  # the same shell, still there
    assert lab.ok(
        "node1", "exec", "keeper", "sh", "-c", "tty </proc/1/fd/0 || readlink /proc/1/fd/0"
    ).startswith("/dev/pts/")


def test_events_show_a_node_going_down_and_coming_back(swarm2: Lab) -> None:
    since = ("events", "--since", "10m", "--until", "0s", "--filter", "type=node")

    def node2_events() -> list[str]:
        lines = swarm2.ok("node1", *since, "--filter", "node=node2").splitlines()
        return [ln.split()[2] for ln in lines]

    assert wait_until(lambda: node2_events() == ["up"], 30)
    labmod.stop_agent(swarm2.name, "node2", signal.SIGKILL)
    assert wait_until(lambda: node2_events() == ["up", "down"], 60)
    labmod.up(swarm2.name, 2)
    assert wait_until(lambda: node2_events() == ["up", "down", "up"], 60)
    down = swarm2.ok("node1", *since, "--filter", "event=down").splitlines()
    assert len(down) == 1 and " node down " in down[0], down
    assert "name=node2" in down[0] and "addr=192.168.0.12" in down[0]
