"""The C egress drain on a real TAP with offloads (TUNSETOFFLOAD TSO4 | CSUM) fed hostile
frames from the bridge side: a packet socket with PACKET_VNET_HDR on the TAP (in a throwaway
namespace) sends what a container could, virtio-net header included; the kernel refuses some
headers itself, the rest reach the TAP's reader as the kernel hands them over. The drain must
survive them and every good frame sent between them must leave on the underlay (loopback).
test_accel_hostile_asan runs test_accel_hostile (socketpair stand-ins, any header) under the
sanitizers; this is the same on the kernel's path. Needs root."""

from __future__ import annotations

import os
import select
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel
from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.tap import open_tap, set_offloads
from overlaynet.dataplane.vtep import SO_RCVBUFFORCE, Vtep
from overlaynet.host.nssocket import run_in_netns
from tests.unit.dataplane import test_accel_hostile as hz
from tests.unit.dataplane import test_fastegress_tso as eg
from tests.unit.dataplane.ports import free_port

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a TAP in a namespace)"),
    pytest.mark.skipif(
        accel.load("egress") is None, reason=f"C egress unavailable: {accel.why_not('egress')}"
    ),
]

TAP = "on-hz0"
SOL_PACKET, PACKET_VNET_HDR = 263, 15
ETH_P_ALL = 0x0003


class Bench:
    """The TAP (its fd, offloads on) and the packet socket that writes to it from the kernel
    side, in namespace `ns`."""

    def __init__(self, ns: str, fd: int, sender: socket.socket) -> None:
        self.ns, self.fd, self.sender = ns, fd, sender


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    ns = f"onet-hz{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    with ExitStack() as stack:
        stack.callback(subprocess.run, ["ip", "netns", "del", ns], capture_output=True)

        def make() -> tuple[int, socket.socket]:
            fd = open_tap(TAP, mtu=eg.MTU, vnet_hdr=True)
            try:
                set_offloads(fd)
                sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                sender.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                sender.bind((TAP, 0))
            except BaseException:
                os.close(fd)
                raise
            return fd, sender

        fd, sender = run_in_netns(ns, make)
        stack.callback(os.close, fd)
        stack.enter_context(sender)
        yield Bench(ns, fd, sender)


def _drain(bench: Bench, reads: list[bytes]) -> tuple[list[bytes], int, bool]:
    """Send `reads` (virtio-net header + frame) into the TAP from the kernel side, drain it with
    the VTEP's C drain; the inner frames that left, the reads the kernel refused, C's use."""
    with ExitStack() as stack:
        port = free_port()
        vtep = stack.enter_context(Vtep(eg.HOST_A, port, source_sockets=2, accel="on"))
        loop = vtep._loop
        receiver = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 25)
        receiver.bind((eg.HOST_B, port))
        receiver.settimeout(0.2)
        while True:  # nothing left from an earlier example
            try:
                os.read(bench.fd, 1 << 17)
            except BlockingIOError:
                break
        vtep.add_network(eg.VNI, bench.fd, eg.MTU, vnet_hdr=True)
        vtep.set_peers(eg.VNI, [eg.HOST_B])
        vtep.endpoint_added(RemoteEndpoint(eg.VNI, eg.MAC_B, "10.0.0.3", eg.HOST_B))
        net = vtep._networks[eg.VNI]
        set_offloads(bench.fd)  # as offload mode leaves them (a network's removal may not)
        net.tap_tso = net.tso_allowed = True
        refused = 0
        for one in reads:
            try:
                bench.sender.send(one)
            except OSError:
                refused += 1  # the kernel's own check of the virtio-net header
        for _ in range(4 * len(reads) + 8):
            loop._drain_tap(net, net.tap_fd)
            if net.tap_fd not in loop._carried and not select.select([bench.fd], [], [], 0)[0]:
                break
        got: list[bytes] = []
        while True:
            try:
                got.append(receiver.recv(65536)[8:])
            except TimeoutError:
                break
        return got, refused, loop.fast_egress is not None


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), phases=hz.PHASES)
@given(st.lists(hz.hostile_reads(), min_size=1, max_size=8))
def test_hostile_frames_through_a_real_tap_lose_no_good_frame(
    bench: Bench, hostile: list[bytes]
) -> None:
    reads: list[bytes] = []
    for k, one in enumerate(hostile):
        reads += [one, hz._good_read(k)]
    got, _refused, used = _drain(bench, reads)
    assert used
    assert hz._marks(got) == list(range(len(hostile)))
    for frame in got:
        assert len(frame) <= 14 + eg.MTU + 4
