"""The receive path with the C ingress drain on (the default when it builds) and off
(OVERLAYNET_ACCEL=off), on real namespaces: the drain in use is the one asked for, what a kernel
VTEP sends is merged, and the bytes a merged stream delivers arrive octet for octet (a
super-frame is written with NEEDS_CSUM: the kernel does not check its payload again, so
corruption would go unnoticed by TCP). Ping, TCP both ways with agents and a kernel VTEP, and the
underlay capture run with both drains in test_vxlan_overlay.py.

Topology (one per mode): h1, h2 run `vtep_main` (peers of each other; h1 also of h3); h3 runs a
kernel vxlan device toward h1.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from overlaynet.dataplane import accel
from overlaynet.dataplane.fastingress import DRAIN_COUNTER
from overlaynet.lab.testbed import Container, Host, Testbed
from tests.integration.dataplane.paths import iperf3, ping

TIMEOUT = 30.0  # bounds a hang only
#: Octets of the checked transfer: a few hundred super-frames.
STREAM_BYTES = 8 * 1024 * 1024
#: A deterministic byte stream, the same on both ends: (seed, length) → SHA-256.
SEND = """
import hashlib, socket, sys
data = hashlib.shake_256(b"ci-stream").digest(int(sys.argv[3]))
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as s:
    s.sendall(data)
"""
RECEIVE = """
import hashlib, socket, sys
with socket.create_server((sys.argv[1], int(sys.argv[2]))) as srv:
    srv.settimeout(30)
    conn, _ = srv.accept()
    conn.settimeout(30)
    digest, total = hashlib.sha256(), 0
    while chunk := conn.recv(1 << 20):
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest())
"""


class Lab:
    def __init__(self, tb: Testbed, mode: str) -> None:
        self.tb, self.mode = tb, mode
        self.h1, self.h2, self.h3 = (
            tb.add_host("h1", 11),
            tb.add_host("h2", 12),
            tb.add_host("h3", 13),
        )
        self.c1 = tb.add_container(self.h1, "c1", 2)
        self.c2 = tb.add_container(self.h2, "c2", 3)
        self.c3 = tb.add_container(self.h3, "c3", 4)
        tb.kernel_vxlan(self.h3, [self.h1])
        self.vtep1 = tb.start_vtep(self.h1, [self.h2, self.h3])
        self.vtep2 = tb.start_vtep(self.h2, [self.h1])

    def stats(self, host: Host) -> dict[str, Any]:
        """A running vtep_main's counters (SIGUSR1)."""
        process = self.vtep1 if host is self.h1 else self.vtep2
        result: dict[str, Any] = self.tb.vtep_stats(host, process, TIMEOUT)
        return result

    def counters(self, host: Host) -> tuple[dict[str, int], dict[str, int]]:
        """Host-wide and network counters."""
        stats = self.stats(host)
        return stats["counters"], stats["networks"][str(self.tb.vni)]["counters"]


@contextmanager
def accel_switch(mode: str, helper: str) -> Iterator[None]:
    """The C drains on (`mode` "c"; the test skipped when helper `helper` does not build) or
    off ("python") for the VTEPs started inside; the environment restored after."""
    if mode == "c" and accel.load(helper) is None:
        pytest.skip(f"C helper unavailable: {accel.why_not(helper)}")
    saved = os.environ.get(accel.ENV_SWITCH)
    # The VTEPs inherit the switch: OVERLAYNET_ACCEL=off keeps them on the Python drains.
    os.environ[accel.ENV_SWITCH] = "on" if mode == "c" else "off"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(accel.ENV_SWITCH, None)
        else:
            os.environ[accel.ENV_SWITCH] = saved


@pytest.fixture(scope="module", params=["c", "python"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    mode: str = request.param
    with accel_switch(mode, "ingress"), Testbed("onet-ci-") as tb:
        yield Lab(tb, mode)


def iperf(tb: Testbed, client: Container, server: Container) -> int:
    """Octets a one-second iperf3 TCP transfer delivered."""
    return int(iperf3(tb, client, server)["end"]["sum_received"]["bytes"])


def checked_stream(tb: Testbed, client: Container, server: Container) -> tuple[int, str]:
    """Send STREAM_BYTES of a known stream over TCP; what arrived: length and SHA-256."""
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server.ns, sys.executable, "-c", RECEIVE, server.ip, "7001"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while ":7001" not in tb.exec(server.ns, "ss", "-ltn"):
            assert time.monotonic() < deadline, "receiver did not listen"
            time.sleep(0.05)
        tb.exec(client.ns, sys.executable, "-c", SEND, server.ip, "7001", str(STREAM_BYTES),
                timeout=TIMEOUT)  # fmt: skip
        out, _err = srv.communicate(timeout=TIMEOUT)
    finally:
        Testbed.stop(srv)
    total, digest = out.decode().split()
    return int(total), digest


def expected_stream() -> tuple[int, str]:
    data = hashlib.shake_256(b"ci-stream").digest(STREAM_BYTES)
    return len(data), hashlib.sha256(data).hexdigest()


def test_the_drain_in_use_is_the_one_asked_for(lab: Lab) -> None:
    assert " 0% packet loss" in ping(lab.tb, lab.c1, lab.c2)
    assert iperf(lab.tb, lab.c2, lab.c1) > 0
    host, _net = lab.counters(lab.h1)
    if lab.mode == "c":
        assert host.get(DRAIN_COUNTER, 0) > 0
    else:
        assert DRAIN_COUNTER not in host


def test_tcp_both_ways_with_a_kernel_vtep_merges_what_the_kernel_sends(lab: Lab) -> None:
    _host, before = lab.counters(lab.h1)
    for client, server in ((lab.c1, lab.c3), (lab.c3, lab.c1)):
        assert iperf(lab.tb, client, server) > 0
    _host, after = lab.counters(lab.h1)
    # The kernel VTEP sends UDP checksums (iproute2's default): its TCP runs are merged.
    assert after["rx_merged_writes"] > before.get("rx_merged_writes", 0)


@pytest.mark.parametrize("direction", ["kernel->overlaynet", "overlaynet->overlaynet"])
def test_a_merged_stream_arrives_octet_for_octet(lab: Lab, direction: str) -> None:
    sender = lab.c3 if direction == "kernel->overlaynet" else lab.c2
    _host, before = lab.counters(lab.h1)
    assert checked_stream(lab.tb, sender, lab.c1) == expected_stream()
    _host, after = lab.counters(lab.h1)
    assert after["rx_merged_writes"] > before.get("rx_merged_writes", 0)
