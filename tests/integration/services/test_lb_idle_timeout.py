"""Idle connections through a VIP (issue 14, moby#31208: Docker's IPVS drops them after 900 s):
`network lb NET` shows the conntrack timeout that applies in the network's load-balancer
namespace, which is what that namespace's sysctl holds, the kernel's 5 days by default, and
`network create --opt lb-idle-timeout=SECONDS` sets it. A real 3-host swarm lab."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.labs import Lab, wait_until
from tests.integration.services.test_services_swarm import pid_of, task_containers

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

CONVERGE = 30.0
SYSCTL = "net.netfilter.nf_conntrack_tcp_timeout_established"
LINUX_DEFAULT = 432_000


def lb_doc(lab: Lab, network: str) -> dict[str, object]:
    out = lab.cli("node1", "network", "lb", network, "--format", "json")
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def sandbox_sysctl(lab: Lab, network: str) -> int:
    """The sysctl as the sandbox's own namespace holds it (nsenter into it, then sysctl)."""
    pid = pid_of(lab, "node1", f"lb_{network}")
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "sysctl", "-n", SYSCTL],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    return int(out.stdout)


def serve_on(lab: Lab, network: str) -> None:
    """A service with a VIP on the network and a task on node1 (so node1 has the sandbox)."""
    lab.ok(
        "node1", "service", "create", "--name", f"idle-{network}", "--network", network,
        "--constraint", "node.hostname==node1", "alpine", "sleep", "100000",
    )  # fmt: skip
    assert task_containers(lab, "node1", f"idle-{network}")
    assert wait_until(lambda: bool(lb_doc(lab, network).get("Sandbox")), CONVERGE)


def test_idle_timeout_is_shown_as_the_namespace_holds_it_and_is_settable(swarm3: Lab) -> None:
    lab = swarm3
    lab.ok("node1", "network", "create", "-d", "overlay", "idledef")
    lab.ok("node1", "network", "create", "-d", "overlay", "--opt", "lb-idle-timeout=7200",
           "idleset")  # fmt: skip
    serve_on(lab, "idledef")
    serve_on(lab, "idleset")

    default = lb_doc(lab, "idledef")["IdleTimeout"]
    assert isinstance(default, dict)
    # Unset: the kernel's own default (5 days) stays, and an idle connection survives it.
    assert default["Seconds"] == sandbox_sysctl(lab, "idledef") == LINUX_DEFAULT
    assert default["Source"] == "kernel default" and default["Sysctl"] == SYSCTL

    assert wait_until(lambda: sandbox_sysctl(lab, "idleset") == 7200, CONVERGE)
    shown = lb_doc(lab, "idleset")["IdleTimeout"]
    assert isinstance(shown, dict)
    assert shown["Seconds"] == 7200 and shown["Source"] == "--opt lb-idle-timeout"
    text = lab.ok("node1", "network", "lb", "idleset")
    assert "idle connections kept 7200 s" in text and SYSCTL in text
    assert "432000 s (5 days" in lab.ok("node1", "network", "lb", "idledef")
    # The other network's namespace kept its own value: the setting is per network.
    assert sandbox_sysctl(lab, "idledef") == LINUX_DEFAULT


@pytest.mark.parametrize("value", ["soon", "0", "99999999"])
def test_a_bad_idle_timeout_is_one_clear_error(swarm3: Lab, value: str) -> None:
    out = swarm3.cli(
        "node1", "network", "create", "-d", "overlay", "--opt", f"lb-idle-timeout={value}", "bad"
    )
    assert out.returncode != 0
    assert "lb-idle-timeout" in out.stderr and "Traceback" not in out.stderr
    assert "bad" not in swarm3.ok("node1", "network", "ls", "--format", "{{.Name}}").split()
