"""Bad input gets a one-line error and a non-zero exit, and leaves nothing half-made."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from overlaynet.paths import HostPaths
from tests.integration.labs import Lab


def _kernel_objects(lab: Lab) -> tuple[str, str]:
    links = subprocess.run(
        ["ip", "netns", "exec", lab.netns_of("node1"), "ip", "-o", "link"],
        capture_output=True,
        text=True,
    ).stdout
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return (
        "\n".join(sorted(line.split(":")[1] for line in links.splitlines())),
        "\n".join(sorted(s.split()[0] for s in spaces.splitlines() if lab.name in s)),
    )


def _refused(lab: Lab, *args: str, says: str, host: str = "node1") -> None:
    before = _kernel_objects(lab)
    out = lab.cli(host, *args)
    assert out.returncode != 0, out.stdout
    assert says in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert _kernel_objects(lab) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("network", "create", "bad name"), "invalid network name"),
        (("network", "create", "x" * 65), "too long"),
        (
            ("network", "create", "-o", "com.docker.network.bridge.name=on-waytoolongname", "n1"),
            "too long",
        ),
        (
            ("network", "create", "-o", "com.docker.network.bridge.name=on-bad/x", "n2"),
            "invalid interface name",
        ),
        (("network", "create", "--subnet", "10.1.0.0/33", "n3"), "invalid subnet"),
        (("network", "create", "--subnet", "192.168.0.0/16", "n4"), "overlaps with interface eth0"),
        (("network", "create", "--gateway", "10.9.9.1", "n5"), "need --subnet"),
        (("network", "create", "-d", "macvlan", "n6"), "driver 'macvlan' is not available"),
        (("network", "rm", "nosuch"), "network nosuch not found"),
        (("network", "rm", "bridge"), "pre-defined network"),
        (("run", "-d", "--name", "bad/name", "alpine"), "invalid container name"),
        # A container name is one DNS label: 63 characters at most (names.check_container_name).
        (("run", "-d", "--name", "c" * 64, "alpine"), "at most 63 characters"),
        (("run", "-d", "--name", "a..b", "alpine"), "dots must separate non-empty parts"),
        (("run", "-d", "Alpine"), "invalid reference format"),
        (("run", "-d", "nosuchimage"), "Unable to find image 'nosuchimage:latest'"),
        (("run", "-d", "--network", "nosuch", "alpine"), "network nosuch not found"),
        (("run", "-d", "-e", "=x", "alpine"), "invalid environment variable"),
        (
            ("run", "-d", "--network-alias", "a", "alpine"),
            "only supported for user-defined networks",
        ),
        (("rm", "nosuch"), "No such container: nosuch"),
        (("exec", "nosuch", "true"), "No such container: nosuch"),
        (("inspect", "nosuch"), "No such object: nosuch"),
    ],
)
def test_bad_requests_get_a_clear_error_and_change_nothing(
    lab2: Lab, args: tuple[str, ...], says: str
) -> None:
    _refused(lab2, *args, says=says)


def test_duplicate_names_and_overlapping_subnets(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "--subnet", "172.29.1.0/24", "dupnet")
    _refused(lab2, "network", "create", "dupnet", says="network with name dupnet already exists")
    _refused(
        lab2,
        "network",
        "create",
        "--subnet",
        "172.29.0.0/16",
        "over",
        says="overlaps with network dupnet",
    )
    lab2.ok("node1", "run", "-d", "--name", "dupc", "alpine")
    _refused(
        lab2,
        "run",
        "-d",
        "--name",
        "dupc",
        "alpine",
        says='The container name "/dupc" is already in use',
    )


def test_exhausted_pool_and_taken_address(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "--subnet", "172.29.9.0/30", "tiny")  # one usable address
    lab2.ok("node1", "run", "-d", "--name", "t1", "--network", "tiny", "alpine")
    _refused(
        lab2, "run", "-d", "--network", "tiny", "alpine", says="no addresses left in 172.29.9.0/30"
    )
    lab2.ok("node1", "network", "create", "--subnet", "172.29.8.0/24", "small")
    lab2.ok("node1", "run", "-d", "--network", "small", "--ip", "172.29.8.9", "alpine")
    for ip, says in (("172.29.8.9", "already in use"), ("172.29.9.9", "not a usable address")):
        _refused(lab2, "run", "-d", "--network", "small", "--ip", ip, "alpine", says=says)


def test_removing_a_network_in_use_is_refused(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "busy")
    lab2.ok("node1", "run", "-dit", "--name", "busyc", "--network", "busy", "alpine")
    _refused(lab2, "network", "rm", "busy", says="has active endpoints")
    _refused(lab2, "rm", "busyc", says="You cannot remove a running container")
    lab2.ok("node1", "rm", "-f", "busyc")
    lab2.ok("node1", "network", "rm", "busy")


def test_unknown_host_says_the_agent_is_not_running(lab2: Lab) -> None:
    out = lab2.cli("node9", "network", "ls")
    assert out.returncode == 1
    assert "Cannot connect to the overlaynet agent of host node9" in out.stderr
    assert "overlaynet lab up" in out.stderr


def test_malformed_api_requests_are_refused_and_counted(lab2: Lab) -> None:
    path = str(HostPaths("node1", lab2.name).socket)
    for garbage in (
        b"not json\n",
        b"[1,2]\n",
        b'{"op": 5}\n',
        b'{"op": "network.create", "args": {"name": 5}}\n',
        b'{"op": "nosuch"}\n',
        b"\xff\xfe\n",
        b'{"op": "container.stop", "args": {"container": "x", "timeout": -1}}\n',
    ):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(garbage)
            reply = json.loads(s.makefile("rb").readline())
        assert reply["ok"] is False and reply["error"], garbage
    info = json.loads(lab2.ok("node1", "info", "--format", "json"))
    assert info["Counters"]["malformed_requests"] >= 4
    assert lab2.ok("node1", "network", "ls").startswith("NETWORK ID")


def test_cli_argument_errors_exit_non_zero(lab2: Lab) -> None:
    out = lab2.cli("node1", "network", "create")
    assert out.returncode == 125
    assert '"overlaynet network create" requires exactly 1 argument.' in out.stderr
    out = lab2.cli("node1", "network", "create", "-o", "=novalue", "n7")
    assert out.returncode == 1 and "expected KEY[=VALUE]" in out.stderr


def _raw_request(lab: Lab, line: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(HostPaths("node1", lab.name).socket))
        s.sendall(line)
        reply: dict[str, object] = json.loads(s.makefile("rb").readline())
    return reply


def test_requests_that_crashed_the_agent_are_refused_and_it_keeps_running(lab2: Lab) -> None:
    pid_before = json.loads(lab2.ok("node1", "info", "--format", "json"))["Pid"]
    deep = b'{"op": "ping", "args": {"x": ' + b"[" * 1000 + b"]" * 1000 + b"}}\n"
    huge = b'{"op": "ping", "args": {"x": ' + b"9" * 5000 + b"}}\n"
    for line in (deep, huge):
        reply = _raw_request(lab2, line)
        assert reply["ok"] is False and "malformed request" in str(reply["error"]), reply
    info = json.loads(lab2.ok("node1", "info", "--format", "json"))
    assert info["Pid"] == pid_before
    assert info["Counters"]["malformed_requests"] >= 2


def test_booleans_must_be_booleans(lab2: Lab) -> None:
    # `force: "false"` used to be truthy and removed a running container.
    lab2.ok("node1", "run", "-d", "--name", "keepme", "alpine", "sleep", "600")
    line = b'{"op": "container.rm", "args": {"container": "keepme", "force": "false"}}\n'
    reply = _raw_request(lab2, line)
    assert reply["ok"] is False and "must be true or false" in str(reply["error"]), reply
    assert "keepme" in lab2.ok("node1", "ps")
    lab2.ok("node1", "rm", "-f", "keepme")


@pytest.mark.parametrize("timeout", [b"Infinity", b"NaN", b"-1", b"3601", b"true"])
def test_stop_timeouts_must_be_finite_and_bounded(lab2: Lab, timeout: bytes) -> None:
    # `timeout: Infinity` froze the agent until the processes were killed by hand (issue 18).
    lab2.ok("node1", "run", "-d", "--name", "patient", "alpine", "sleep", "600")
    try:
        line = b'{"op": "container.stop", "args": {"container": "patient", "timeout": '
        reply = _raw_request(lab2, line + timeout + b"}}\n")
        assert reply["ok"] is False, reply
        assert "'timeout' must be a number" in str(reply["error"]), reply
        assert "patient" in lab2.ok("node1", "ps")
    finally:
        lab2.ok("node1", "rm", "-f", "patient")
