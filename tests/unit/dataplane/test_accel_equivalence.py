"""The C egress drain (`fastegress`) against the Python one: the same frames queued in a "TAP"
(a socketpair, as in test_vtep_loopback) produce the same datagrams on the underlay (payloads,
sizes, order, source socket), the same frames back into the TAP (ARP answered locally) and the
same counters, with accel on and off. Loopback only, no root."""

from __future__ import annotations

import contextlib
import random
import socket
from collections import Counter
from contextlib import ExitStack
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel
from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.impair import Impairment
from overlaynet.dataplane.seal import DataKey
from overlaynet.dataplane.tracing import TraceMatch
from overlaynet.dataplane.vtep import SO_RCVBUFFORCE, Vtep
from overlaynet.wire.ethernet import mac_to_bytes
from tests.unit.dataplane.ports import free_port

pytestmark = pytest.mark.skipif(
    accel.load("egress") is None, reason=f"C egress unavailable: {accel.why_not('egress')}"
)

VNI = 4097
MTU = 1450
HOST_A, HOST_B, HOST_C = "127.0.0.2", "127.0.0.3", "127.0.0.4"
MAC_A, MAC_B = "02:42:0a:00:00:02", "02:42:0a:00:00:03"
#: A MAC nobody announced (unknown unicast: every peer), and broadcast.
MAC_UNKNOWN, MAC_BCAST = "02:42:0a:00:00:99", "ff:ff:ff:ff:ff:ff"
TIMEOUT = 5.0  # bounds a hang only
#: Frames per run: below both drains' budgets, so each reads the whole queue in one drain.
MAX_FRAMES = 120


def frame(dst: str, flow: int, size: int, seq: int) -> bytes:
    """An Ethernet frame of `size` octets, IPv4/TCP-shaped: flow `flow` sets the ports (octets
    34..38), `seq` the payload's first octets; checksums do not matter to the egress."""
    head = mac_to_bytes(dst) + mac_to_bytes(MAC_A) + b"\x08\x00"
    ip = bytes.fromhex("4500") + size.to_bytes(2, "big") + bytes(5) + b"\x06" + bytes(2)
    ip += bytes((10, 0, 0, 2, 10, 0, 0, 3))
    tcp = (40000 + flow).to_bytes(2, "big") + (5201).to_bytes(2, "big") + seq.to_bytes(4, "big")
    body = head + ip + tcp
    body += bytes((seq + i) & 0xFF for i in range(max(0, size - len(body))))
    return body[:size]


def arp_request(target: str) -> bytes:
    """A broadcast ARP request for `target` (answered locally when the VTEP knows it)."""
    return (
        mac_to_bytes(MAC_BCAST) + mac_to_bytes(MAC_A) + b"\x08\x06"
        + bytes.fromhex("0001080006040001") + mac_to_bytes(MAC_A) + bytes((10, 0, 0, 2))
        + bytes(6) + socket.inet_aton(target)
    )  # fmt: skip


def tap_standin(stack: ExitStack, size: int) -> tuple[socket.socket, socket.socket]:
    """A TAP queue's stand-in: a SEQPACKET pair (one read, one frame) with `size`-octet buffers;
    the bridge end writes frames, the tap end (non-blocking) is what the drain reads."""
    bridge, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stack.enter_context(bridge)
    stack.enter_context(tap)
    bridge.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    tap.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    tap.setblocking(False)
    return bridge, tap


def run(
    frames: list[bytes], accel_mode: str, *, peers: tuple[str, ...], budget: int = 0
) -> dict[str, Any]:
    """Queue `frames` in A's TAP, drain it as the loop would (again while batches are carried
    over; `budget` frames per drain, 0: all at once), and collect what left: datagrams per
    peer with the index of the source socket they left from, frames written back, counters."""
    port = free_port()
    with ExitStack() as stack:
        vtep = stack.enter_context(
            Vtep(HOST_A, port, source_sockets=4, socket_buffer=1 << 22, accel=accel_mode)
        )
        vtep._loop.drain_budget = budget or 4 * MAX_FRAMES
        if vtep._loop.fast_egress is not None:
            vtep._loop.fast_egress.budget = budget or MAX_FRAMES + 1
        bridge, tap = tap_standin(stack, 1 << 22)
        bridge.settimeout(0.2)
        receivers = {}
        for host in (HOST_B, HOST_C):
            r = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            r.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 24)
            r.bind((host, port))
            r.settimeout(0.2)
            receivers[host] = r
        vtep.add_network(VNI, tap.fileno(), MTU)
        vtep.set_peers(VNI, list(peers))
        vtep.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        for one in frames:
            bridge.send(one)
        net = vtep._networks[VNI]
        assert (vtep._loop.fast_egress is not None) == (accel_mode == "on")
        for _ in range(len(frames) + 2):
            vtep._loop._drain_tap(net, net.tap_fd)
            if net.tap_fd not in vtep._loop._carried:
                break
        assert net.tap_fd not in vtep._loop._carried
        sources = vtep.stats()["source_ports"]
        got: dict[str, list[tuple[int, bytes]]] = {}
        for host, r in receivers.items():
            got[host] = []
            while True:
                try:
                    data, address = r.recvfrom(65536)
                except TimeoutError:
                    break
                got[host].append((sources.index(address[1]), data))
        back = []
        while True:
            try:
                back.append(bridge.recv(65536))
            except TimeoutError:
                break
        entry = vtep.fdb.lookup(VNI, MAC_B)
        assert entry is not None
        return {
            "datagrams": got,
            "back": back,
            "counters": Counter(net.counters),
            "fdb": (entry.tx_frames, entry.tx_bytes),
        }


def assert_same(
    frames: list[bytes], peers: tuple[str, ...] = (HOST_B, HOST_C), budget: int = 0
) -> None:
    python = run(frames, "off", peers=peers, budget=budget)
    c = run(frames, "on", peers=peers, budget=budget)
    assert c["datagrams"] == python["datagrams"]
    assert c["back"] == python["back"]
    assert c["counters"] == python["counters"]
    assert c["fdb"] == python["fdb"]


def interleaved(flows: int, per_flow: int, *, size: int = 1464) -> list[bytes]:
    """`flows` TCP flows toward MAC_B, two or three frames at a time, each ending short."""
    rng = random.Random(flows * 1000 + per_flow)
    queues = [
        [frame(MAC_B, f, size if i < per_flow - 1 else 300 + f, i) for i in range(per_flow)]
        for f in range(flows)
    ]
    out: list[bytes] = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        for _ in range(rng.randint(2, 3)):
            if q:
                out.append(q.pop(0))
    return out


@pytest.mark.parametrize("budget", [0, 7, 32])
def test_four_interleaved_flows_leave_the_same_with_accel_on_and_off(budget: int) -> None:
    """Also when the budget runs out mid-batch: both drains carry the open batches over to
    the queue's next drain (the C drain cut them short, 4 streams left in half-size batches)."""
    frames = interleaved(4, 25)
    python = run(frames, "off", peers=(HOST_B,), budget=budget)
    assert python["counters"]["tx_gso_batches"] == 4  # one batch per flow, whatever the budget
    assert_same(frames, peers=(HOST_B,), budget=budget)


def test_a_mix_of_unknown_unicast_broadcast_and_odd_sizes_leaves_the_same() -> None:
    frames = [
        frame(MAC_B, 1, 1464, 0),
        frame(MAC_B, 1, 1464, 1),
        frame(MAC_UNKNOWN, 2, 1000, 2),  # unknown unicast: both peers, batched
        frame(MAC_UNKNOWN, 2, 1000, 3),
        arp_request("10.0.0.3"),  # answered locally, back into the TAP
        frame(MAC_B, 1, 1464, 4),
        frame(MAC_BCAST, 3, 200, 5),  # flooded
        frame(MAC_B, 1, 20, 6),  # shorter than the flow key: its own batch
        frame(MAC_B, 1, 20, 7),
        frame(MAC_B, 1, 1464 + 40, 8),  # too big: dropped and counted
        frame(MAC_B, 4, 10, 9),  # a runt
        frame(MAC_B, 1, 1464, 10),
        frame(MAC_B, 1, 700, 11),  # a short one ends the batch
        frame(MAC_B, 1, 1464, 12),
    ]
    assert_same(frames)


def test_without_peers_unknown_unicast_goes_the_single_frame_way_the_same() -> None:
    frames = [frame(MAC_UNKNOWN, 1, 900, i) for i in range(5)] + [frame(MAC_B, 1, 900, 5)]
    assert_same(frames, peers=())


def test_more_than_one_gso_batch_of_one_flow_leaves_the_same() -> None:
    # 100 MTU-sized frames: more than GSO_MAX_BYTES allows in one send.
    assert_same([frame(MAC_B, 1, 1464, i) for i in range(100)])


_DSTS = st.sampled_from([MAC_B, MAC_B, MAC_B, MAC_UNKNOWN, MAC_BCAST])
_FRAMES = st.lists(
    st.tuples(
        _DSTS,
        st.integers(0, 3),
        st.one_of(st.sampled_from([1464, 1464, 1464, 900, 66]), st.integers(8, 1500)),
    ),
    min_size=1,
    max_size=MAX_FRAMES,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_FRAMES, st.sampled_from([0, 1, 5, 16, 64]))
def test_any_frame_sequence_leaves_the_same_with_accel_on_and_off(
    spec: list[tuple[str, int, int]], budget: int
) -> None:
    frames = [frame(dst, flow, size, i) for i, (dst, flow, size) in enumerate(spec)]
    assert_same(frames, budget=budget)


def _drain_with(setup: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """One drain of a queued frame after `setup`; (C drains, frames that left on the wire)."""
    calls: list[int] = []
    port = free_port()
    with ExitStack() as stack:
        vtep = stack.enter_context(Vtep(HOST_A, port, source_sockets=1, accel="on"))
        fast = vtep._loop.fast_egress
        assert fast is not None
        original = fast.drain

        def counted(*args: Any) -> bool:
            calls.append(1)
            return original(*args)

        monkeypatch.setattr(fast, "drain", counted)
        bridge, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stack.enter_context(bridge)
        stack.enter_context(tap)
        tap.setblocking(False)
        receiver = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        receiver.bind((HOST_B, port))
        receiver.settimeout(0.2)
        vtep.add_network(VNI, tap.fileno(), MTU)
        vtep.set_peers(VNI, [HOST_B])
        vtep.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        if setup == "trace":
            vtep.arm_trace(TraceMatch("10.0.0.2", "10.0.0.3", "tcp", 1), 5.0)
        elif setup == "impaired":
            vtep.set_impairments({HOST_B: Impairment(duplicate=1.0, seed=1)})
        elif setup == "sealed":
            vtep.set_keys(VNI, [DataKey(1, bytes(16))])
        bridge.send(frame(MAC_B, 1, 500, 0))
        net = vtep._networks[VNI]
        vtep._loop._drain_tap(net, net.tap_fd)
        left = 0
        with contextlib.suppress(TimeoutError):
            while receiver.recv(65536):
                left += 1
        return len(calls), left


@pytest.mark.parametrize("setup", ["plain", "trace", "impaired", "sealed"])
def test_the_c_drain_runs_only_where_it_is_exact(
    setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain RFC network drains in C; an armed trace (it sees every frame), impairments
    (per datagram) and sealing switch that drain to Python, and the frame still leaves."""
    drains, left = _drain_with(setup, monkeypatch)
    assert drains == (1 if setup == "plain" else 0)
    assert left >= 1  # impaired: a duplicate may follow later


def test_batches_the_c_drain_carried_leave_first_when_a_trace_takes_the_queue_over() -> None:
    """The C drain ran out of budget mid-batch (the batch carried over, in C); a trace armed
    now moves the queue to the Python drain, which sends the carried batch before its own
    frames: every frame leaves once, in order."""
    port = free_port()
    frames = [frame(MAC_B, 1, 1464, i) for i in range(20)]
    with ExitStack() as stack:
        vtep = stack.enter_context(Vtep(HOST_A, port, source_sockets=1, accel="on"))
        fast = vtep._loop.fast_egress
        assert fast is not None
        fast.budget = 8
        bridge, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stack.enter_context(bridge)
        stack.enter_context(tap)
        tap.setblocking(False)
        receiver = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 24)
        receiver.bind((HOST_B, port))
        receiver.settimeout(0.2)
        vtep.add_network(VNI, tap.fileno(), MTU)
        vtep.set_peers(VNI, [HOST_B])
        vtep.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        for one in frames:
            bridge.send(one)
        net = vtep._networks[VNI]
        vtep._loop._drain_tap(net, net.tap_fd)
        assert vtep._loop._carried[net.tap_fd] == (net, None)  # 8 frames held in C
        vtep.arm_trace(TraceMatch("10.0.0.9", "10.0.0.8", "tcp", 1), 5.0)
        for _ in range(5):
            vtep._loop._drain_tap(net, net.tap_fd)
            if net.tap_fd not in vtep._loop._carried:
                break
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(receiver.recv(65536)[8:])
        assert got == frames
        assert net.counters["tx_gso_batches"] == 2  # the carried 8, then the Python drain's 12
