"""The lab comes up, answers, and goes down leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess

import pytest

from overlaynet import lab as labmod
from overlaynet.host import netns
from overlaynet.lab import hosttune, lifecycle
from overlaynet.paths import HostPaths
from tests.integration.labs import wait_until


def _root_view() -> tuple[str, str, str]:
    """The root namespace's links, addresses and routes, which no lab may touch."""

    def show(*args: str) -> str:
        return subprocess.run(["ip", "-o", *args], capture_output=True, text=True).stdout

    links = "\n".join(sorted(line.split(":")[1] for line in show("link").splitlines()))
    return links, show("addr"), show("route")


def _leftovers(name: str) -> list[str]:
    spaces = [ns for ns in netns.list_names("onet-") if ns.startswith(f"onet-{name}-")]
    return spaces


def test_lab_up_builds_hosts_on_an_underlay_and_down_removes_everything() -> None:
    name = "t" + secrets.token_hex(4)
    before = _root_view()
    try:
        hosts = labmod.up(name, 3)
        assert [h.ip for h in hosts] == ["192.168.0.11", "192.168.0.12", "192.168.0.13"]
        for h in hosts:
            out = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    f"onet-{name}-{h.name}",
                    "ip",
                    "-4",
                    "-o",
                    "addr",
                    "show",
                    "eth0",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert f"{h.ip}/24" in out
        ping = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                f"onet-{name}-node1",
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "192.168.0.13",
            ],
            capture_output=True,
            text=True,
        )
        assert ping.returncode == 0, ping.stdout
        for h in hosts:
            # Tuned without a shell (lab.hosttune): UDP GRO forwarding on the underlay port,
            # bridged frames not through netfilter.
            tuned = subprocess.run(
                ["ip", "netns", "exec", f"onet-{name}-{h.name}", "ethtool", "-k", "eth0"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "rx-udp-gro-forwarding: on" in tuned
            nf = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    f"onet-{name}-{h.name}",
                    "sh",
                    "-c",
                    "cat /proc/sys/net/bridge/bridge-nf-call-* 2>/dev/null",
                ],
                capture_output=True,
                text=True,
            ).stdout.split()
            assert set(nf) <= {"0"}
        statuses = labmod.status(name)
        assert [s.healthy for s in statuses] == [True, True, True]
        assert all(s.pid for s in statuses)
        assert _root_view() == before
    finally:
        removed = labmod.down(name)
    assert removed >= 4
    assert _leftovers(name) == []
    assert labmod.status(name) == []
    assert _root_view() == before


def test_lab_hosts_have_no_route_out() -> None:
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 1)
        routes = subprocess.run(
            ["ip", "netns", "exec", f"onet-{name}-node1", "ip", "route"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "default" not in routes
        assert "192.168.0.0/24" in routes
    finally:
        labmod.down(name)


def test_two_labs_coexist_and_down_removes_only_its_own() -> None:
    a, b = "t" + secrets.token_hex(4), "t" + secrets.token_hex(4)
    try:
        labmod.up(a, 1)
        labmod.up(b, 1)
        assert labmod.status(a)[0].healthy and labmod.status(b)[0].healthy
        labmod.down(a)
        assert _leftovers(a) == []
        assert labmod.status(b)[0].healthy
        assert f"onet-{b}-node1" in netns.list_names()
    finally:
        labmod.down(a)
        labmod.down(b)
    assert _leftovers(b) == []


def test_down_cleans_up_after_a_half_finished_up() -> None:
    name = "t" + secrets.token_hex(4)
    # What a crash in the middle of `up` leaves: namespaces, a link, and no agents.
    netns.create(f"onet-{name}-ul")
    netns.create(f"onet-{name}-node1")
    netns.create(f"onet-{name}-node1-0123456789ab")
    subprocess.run(
        ["ip", "netns", "exec", f"onet-{name}-ul", "ip", "link", "add", "br0", "type", "bridge"],
        check=True,
    )
    sleeper = subprocess.Popen(
        ["ip", "netns", "exec", f"onet-{name}-node1-0123456789ab", "sleep", "60"]
    )
    try:
        # `ip netns exec` enters the namespace a moment after it starts: a down before that
        # found no process to stop in it (seen 1 in 3 runs).
        assert wait_until(lambda: bool(netns.pids(f"onet-{name}-node1-0123456789ab")))
        assert labmod.down(name) == 3
        assert _leftovers(name) == []
        assert sleeper.wait(timeout=10) != 0
    finally:
        sleeper.kill()
        labmod.down(name)


def test_up_again_is_idempotent(fresh_lab) -> None:  # type: ignore[no-untyped-def]
    pid = labmod.status(fresh_lab.name)[0].pid
    labmod.up(fresh_lab.name, 1)
    assert labmod.status(fresh_lab.name)[0].pid == pid
    assert len(_leftovers(fresh_lab.name)) == 2


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: [state, ppid, pgrp, session, …]."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _fds(pid: int) -> dict[int, str]:
    """What `pid` holds open: fd -> target. A running agent opens and closes sockets as it
    works: an fd closed between the listing and its readlink is not held, and left out."""
    fd_dir = f"/proc/{pid}/fd"
    held = {}
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(FileNotFoundError):
            held[int(fd)] = os.readlink(f"{fd_dir}/{fd}")
    return held


def test_agents_are_forks_in_their_host_holding_nothing_of_the_fork_server() -> None:
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 2)
        zygotes = set()
        for host in ("node1", "node2"):
            sup, agent = lifecycle.supervisor_pid(name, host), lifecycle.agent_pid(name, host)
            assert sup is not None and agent is not None
            assert int(_stat(agent)[1]) == sup  # forked by its supervisor
            assert int(_stat(sup)[3]) == sup  # a session of its own
            zygotes.add(int(_stat(sup)[1]))
            host_ns = netns.inode(f"onet-{name}-{host}")
            for pid in (sup, agent):
                assert os.stat(f"/proc/{pid}/ns/net").st_ino == host_ns
            out = str(HostPaths(host, name).state_dir / "agent.out")
            assert _fds(sup) == {0: "/dev/null", 1: out, 2: out}
            assert {fd: _fds(agent)[fd] for fd in (0, 1, 2)} == {0: "/dev/null", 1: out, 2: out}
            assert not any(t.startswith("pipe:") for t in _fds(agent).values())
        # One fork server, a child of ours that kept none of our pipes, started both.
        (zygote,) = zygotes
        assert int(_stat(zygote)[1]) == os.getpid()
        assert set(_fds(zygote).values()) == {"/dev/null"}
    finally:
        labmod.down(name)
    # It ends with its last supervisor.
    assert wait_until(lambda: not os.path.exists(f"/proc/{zygote}") or _stat(zygote)[0] == "Z")


def _maps_cryptography(pid: int) -> bool:
    """Whether `pid` has cryptography's compiled binding mapped (it was imported)."""
    with open(f"/proc/{pid}/maps") as f:
        return "cryptography" in f.read()


@pytest.mark.parametrize("swarm_later", [False, True])
def test_a_lab_that_will_form_a_swarm_shares_the_members_imports(swarm_later: bool) -> None:
    """The demo and `lab_scale.py --swarm` form their swarm after `up`: the fork server preloads
    cryptography for them all the same (one shared copy instead of one per member); a lab that
    stays out of swarms never has it in its agents (issue 15)."""
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 1, swarm_later=swarm_later)
        agent = lifecycle.agent_pid(name, "node1")
        assert agent is not None
        assert _maps_cryptography(agent) is swarm_later
    finally:
        labmod.down(name)


def test_up_completes_a_half_finished_up() -> None:
    """What a crash in the middle of `up` leaves: the host's port in the underlay, its peer not
    yet moved into the host. `up` replaces the port and the host gets its address."""
    name = "t" + secrets.token_hex(4)
    ul = f"onet-{name}-ul"
    try:
        netns.create(ul)
        netns.create(f"onet-{name}-node1")
        for cmd in (
            ["ip", "link", "add", "br0", "type", "bridge"],
            ["ip", "link", "add", "node1", "type", "veth", "peer", "name", "node1-e"],
        ):
            subprocess.run(["ip", "netns", "exec", ul, *cmd], check=True)
        labmod.up(name, 1)
        assert labmod.status(name)[0].healthy
        ports = subprocess.run(
            ["ip", "netns", "exec", ul, "ip", "-o", "link"], capture_output=True, text=True
        ).stdout
        assert "node1-e" not in ports and "node1@" in ports
        addr = subprocess.run(
            ["ip", "netns", "exec", f"onet-{name}-node1", "ip", "-4", "-o", "addr", "show", "eth0"],
            capture_output=True,
            text=True,
        ).stdout
        assert "192.168.0.11/24" in addr
    finally:
        labmod.down(name)
    assert _leftovers(name) == []


def test_a_supervisor_that_cannot_start_is_named_at_once() -> None:
    """A host whose namespace is gone: its supervisor cannot enter it and ends; `start_agents`
    says so with the host's name and where its output is, instead of waiting out a timeout."""
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 1)
        with pytest.raises(labmod.LabError) as e:
            lifecycle.start_agents(name, ["node9"])
        assert "supervisor of node9 ended at once" in str(e.value)
        assert "node9/agent.out" in str(e.value)
        out = HostPaths("node9", name).state_dir / "agent.out"
        assert f"cannot enter network namespace onet-{name}-node9" in out.read_text()
        assert labmod.status(name)[0].healthy  # the lab's own host is untouched
    finally:
        labmod.down(name)
    assert _leftovers(name) == []


def test_host_tuning_sets_what_it_can_and_names_the_hosts_it_could_not() -> None:
    tag = secrets.token_hex(4)
    tuned, no_port, gone = (f"onet-t{tag}-node{n}" for n in (1, 2, 3))
    nf = "/proc/sys/net/bridge/bridge-nf-call-iptables"

    def sh(ns: str, cmd: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True, text=True
        ).stdout

    try:
        for ns in (tuned, no_port):
            netns.create(ns)
        sh(tuned, "ip link add eth0 type veth peer name p0")
        has_nf = sh(no_port, f"test -e {nf} && echo 1 > {nf} && echo yes").strip() == "yes"
        assert hosttune.tune_hosts([tuned, no_port, gone]) == [no_port, gone]
        assert "rx-udp-gro-forwarding: on" in sh(tuned, "ethtool -k eth0")
        if has_nf:  # br_netfilter loaded: the sysctl is set even where the port is missing
            assert sh(no_port, f"cat {nf}").strip() == "0"
    finally:
        for ns in (tuned, no_port):
            netns.remove(ns)


def test_a_client_namespace_reaches_the_hosts_and_goes_with_the_lab() -> None:
    """`lab up --client` / `lab.add_client`: a namespace on the underlay that is no host (where
    requests to published ports come from), made once, removed by `lab down`."""
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 2)
        client = labmod.add_client(name)
        assert client == f"onet-{name}-client"
        assert labmod.add_client(name) == client  # idempotent: still one port, one address
        addrs = subprocess.run(
            ["ip", "-n", client, "-4", "-o", "addr", "show", "eth0"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert addrs.count("inet ") == 1 and f"{labmod.CLIENT_IP}/24" in addrs
        ping = subprocess.run(
            ["ip", "netns", "exec", client, "ping", "-c", "1", "-W", "2", "192.168.0.12"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert ping.returncode == 0, ping.stdout
        assert client not in [h.name for h in labmod.read_hosts(name)]  # no agent, not a host
    finally:
        labmod.down(name)
    assert not netns.exists(f"onet-{name}-client")
