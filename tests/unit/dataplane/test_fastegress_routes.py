"""The C egress drain's table of where MACs live (`fastegress`, `eg_learn`): C sends a batch
to a MAC it was taught, so a change of the network's FDB table or peers between two drains must
reach the next batch, and the counts C keeps per destination must end in the right `FdbEntry`
(the object the destination was made for, not its replacement) and counters. Each scenario runs
with accel on and off: the same datagrams per host (and source socket), counters and entry
counts. A socketpair stands in for the TAP, receivers on loopback addresses for the peers (as in
test_accel_equivalence). No root."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel, fdb
from overlaynet.dataplane.fastegress import FastEgress
from overlaynet.dataplane.fdb import FdbEntry, RemoteEndpoint
from overlaynet.dataplane.switching import Network
from overlaynet.dataplane.vtep import SO_RCVBUFFORCE, Vtep
from overlaynet.wire.ethernet import mac_to_bytes
from tests.unit.dataplane.ports import free_port
from tests.unit.dataplane.test_accel_equivalence import (
    HOST_A,
    HOST_B,
    HOST_C,
    MAC_B,
    MAC_UNKNOWN,
    MTU,
    VNI,
    frame,
    tap_standin,
)

pytestmark = pytest.mark.skipif(
    accel.load("egress") is None, reason=f"C egress unavailable: {accel.why_not('egress')}"
)

#: A second known MAC (behind C from the start) and one that is learned during a scenario.
MAC_X, MAC_L = "02:42:0a:00:00:0a", "02:42:0a:00:00:0b"
HOSTS = (HOST_B, HOST_C)
#: Frames of one drain at most: below both drains' budgets (one drain reads them all).
MAX_FRAMES = 120

Sent = dict[str, list[tuple[int, bytes]]]


@dataclass
class Rig:
    """Host A's VTEP with a stand-in TAP, and receivers on B and C."""

    vtep: Vtep
    net: Network
    bridge: Any
    receivers: dict[str, Any]
    sources: list[int]
    #: Every FdbEntry object the scenario's table held, in the order first seen.
    entries: list[FdbEntry] = field(default_factory=list)

    def note_entries(self) -> None:
        for entry in self.net.fdb.values():
            if all(entry is not seen for seen in self.entries):
                self.entries.append(entry)

    def drain(self, frames: list[bytes]) -> Sent:
        """Queue `frames`, drain as the loop does (again while batches are carried), and take
        what reached each peer (loopback delivers within the send: no waiting)."""
        self.note_entries()
        for one in frames:
            self.bridge.send(one)
        loop = self.vtep._loop
        for _ in range(len(frames) + 2):
            loop._drain_tap(self.net, self.net.tap_fd)
            if self.net.tap_fd not in loop._carried:
                break
        assert self.net.tap_fd not in loop._carried
        got: Sent = {}
        for host, r in self.receivers.items():
            got[host] = []
            while True:
                try:
                    data, address = r.recvfrom(65536)
                except BlockingIOError:
                    break
                got[host].append((self.sources.index(address[1]), data))
        return got

    def outcome(self) -> dict[str, Any]:
        """Counters and the counts of every entry object seen (replaced ones included)."""
        self.note_entries()
        return {
            "counters": Counter(self.net.counters),
            "entries": [(e.remote_ip, e.tx_frames, e.tx_bytes) for e in self.entries],
        }


@contextmanager
def rig(accel_mode: str, peers: tuple[str, ...] = HOSTS) -> Iterator[Rig]:
    port = free_port()
    with ExitStack() as stack:
        vtep = stack.enter_context(
            Vtep(HOST_A, port, source_sockets=4, socket_buffer=1 << 22, accel=accel_mode)
        )
        vtep._loop.drain_budget = 4 * MAX_FRAMES
        if vtep._loop.fast_egress is not None:
            vtep._loop.fast_egress.budget = MAX_FRAMES + 1
        assert (vtep._loop.fast_egress is not None) == (accel_mode == "on")
        bridge, tap = tap_standin(stack, 1 << 22)
        receivers = {}
        for host in HOSTS:
            r = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            r.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 24)
            r.bind((host, port))
            r.setblocking(False)
            receivers[host] = r
        vtep.add_network(VNI, tap.fileno(), MTU)
        vtep.set_peers(VNI, list(peers))
        vtep.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        vtep.endpoint_added(RemoteEndpoint(VNI, MAC_X, "10.0.0.10", HOST_C))
        sources = vtep.stats()["source_ports"]
        yield Rig(vtep, vtep._networks[VNI], bridge, receivers, sources)


def bulk(dst: str, flow: int, count: int = 10, size: int = 1200) -> list[bytes]:
    """`count` equal frames of one TCP flow to `dst`: one GSO batch."""
    return [frame(dst, flow, size, seq) for seq in range(count)]


def hosts_reached(sent: Sent) -> set[str]:
    return {host for host, got in sent.items() if got}


# -- the changes between two drains, applied to a rig ------------------------------------------


def move_b_to_c(r: Rig) -> None:
    r.vtep.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_C))


def move_b_back(r: Rig) -> None:
    r.vtep.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))


def remove_b(r: Rig) -> None:
    r.vtep.endpoint_removed(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))


def learn_unknown_at_c(r: Rig) -> None:
    # What the ingress does when a frame from MAC_UNKNOWN arrives from C with learning on.
    fdb.learn(r.net.fdb, mac_to_bytes(MAC_UNKNOWN), HOST_C, full=False)


def peers_only_c(r: Rig) -> None:
    r.vtep.set_peers(VNI, [HOST_C])


def peers_both(r: Rig) -> None:
    r.vtep.set_peers(VNI, list(HOSTS))


def replace_table(r: Rig) -> None:
    """The network gets another table object, MAC_B at C in it, whose generation equals the
    old one's: only the identity tells C its table is stale."""
    old = r.net.fdb
    assert isinstance(old, fdb.FdbTable)
    table = fdb.FdbTable(old)
    table[mac_to_bytes(MAC_B)] = FdbEntry(HOST_C)
    table.generation = old.generation
    r.net.fdb = table


CHANGES: dict[str, Callable[[Rig], None]] = {
    "none": lambda r: None,
    "move": move_b_to_c,
    "back": move_b_back,
    "remove": remove_b,
    "learn": learn_unknown_at_c,
    "peers_c": peers_only_c,
    "peers_both": peers_both,
    "replace": replace_table,
}


def scenario(
    accel_mode: str, steps: list[tuple[list[bytes], str]], peers: tuple[str, ...] = HOSTS
) -> tuple[list[Sent], dict[str, Any]]:
    """Per step: drain its frames, then apply its change. What each drain sent, and the end.
    With accel on, every batch must leave from C: Python's own send (`FastEgress._send`, for a
    full table) is made to fail, so a table that never matched cannot pass as equal."""
    sent = []
    with rig(accel_mode, peers) as r, pytest.MonkeyPatch.context() as patch:
        patch.setattr(FastEgress, "_send", _python_sent)
        for frames, change in steps:
            sent.append(r.drain(frames))
            CHANGES[change](r)
        return sent, r.outcome()


def _python_sent(*_args: object) -> None:
    raise AssertionError("a batch was sent by Python, not by the C drain")


def both(steps: list[tuple[list[bytes], str]], peers: tuple[str, ...] = HOSTS) -> list[Sent]:
    """The scenario with accel on and off: asserted the same; what each drain sent."""
    c_sent, c_end = scenario("on", steps, peers)
    py_sent, py_end = scenario("off", steps, peers)
    assert c_sent == py_sent
    assert c_end == py_end
    return c_sent


def test_an_entry_moved_to_another_host_between_drains_gets_the_next_batch() -> None:
    steps = [(bulk(MAC_B, 1), "move"), (bulk(MAC_B, 1), "none")]
    first, second = both(steps)
    assert hosts_reached(first) == {HOST_B}
    assert hosts_reached(second) == {HOST_C}
    _, end = scenario("on", steps)
    # The old entry keeps the first drain's frames; the new one counts only the second's.
    counts = {(ip, frames) for ip, frames, _ in end["entries"]}
    assert {(HOST_B, 10), (HOST_C, 10)} <= counts


def test_a_removed_entry_floods_the_next_batch_to_the_peers() -> None:
    first, second = both([(bulk(MAC_B, 1), "remove"), (bulk(MAC_B, 1), "none")], (HOST_C,))
    assert hosts_reached(first) == {HOST_B}
    assert hosts_reached(second) == {HOST_C}
    _, end = scenario("on", [(bulk(MAC_B, 1), "remove"), (bulk(MAC_B, 1), "none")], (HOST_C,))
    assert end["counters"]["tx_unknown_unicast"] == 10


def test_a_learned_entry_takes_the_next_batch_off_the_flood() -> None:
    first, second = both([(bulk(MAC_UNKNOWN, 2), "learn"), (bulk(MAC_UNKNOWN, 2), "none")])
    assert hosts_reached(first) == {HOST_B, HOST_C}
    assert hosts_reached(second) == {HOST_C}
    assert len(second[HOST_C]) == 10


def test_a_replaced_table_is_seen_even_with_the_same_generation() -> None:
    steps = [(bulk(MAC_B, 1), "replace"), (bulk(MAC_B, 1), "none")]
    first, second = both(steps)
    assert hosts_reached(first) == {HOST_B}
    assert hosts_reached(second) == {HOST_C}


def test_peers_replaced_between_drains_get_the_next_unknown_batch() -> None:
    first, second = both(
        [(bulk(MAC_UNKNOWN, 3), "peers_c"), (bulk(MAC_UNKNOWN, 3), "none")], (HOST_B,)
    )
    assert hosts_reached(first) == {HOST_B}
    assert hosts_reached(second) == {HOST_C}


def test_a_flow_keeps_its_source_socket_and_flows_spread() -> None:
    """C's flow hash picks the socket `switching.flow_hash` picks (the comparison with the
    Python drain in `both`), one per flow across drains, and 16 flows use several sockets."""
    steps = [([f for flow in range(16) for f in bulk(MAC_X, flow, 4)], "none")] * 2
    first, second = both(steps)
    assert first == second
    assert len({source for source, _ in first[HOST_C]}) > 1


DSTS = (MAC_B, MAC_X, MAC_UNKNOWN)


@st.composite
def drains(draw: st.DrawFn) -> list[tuple[list[bytes], str]]:
    """Up to 4 drains, each of a few flows to a few MACs (runs of equal frames, some ending
    short, interleaved), each followed by a change of the FDB or the peers."""
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        runs = []
        for _ in range(draw(st.integers(1, 5))):
            dst = draw(st.sampled_from(DSTS))
            flow = draw(st.integers(0, 6))
            size = draw(st.sampled_from((200, 900, 1464)))
            count = draw(st.integers(1, 12))
            run = [frame(dst, flow, size, s) for s in range(count)]
            if draw(st.booleans()):
                run.append(frame(dst, flow, 100, count))
            runs.append(run)
        frames: list[bytes] = []
        while any(runs) and len(frames) < MAX_FRAMES:
            pick = runs[draw(st.integers(0, len(runs) - 1))]
            frames.extend(pick[:3])
            del pick[:3]
            runs = [r for r in runs if r]
        steps.append((frames, draw(st.sampled_from(sorted(CHANGES)))))
    return steps


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=drains(), peers=st.sampled_from(((HOST_B,), HOSTS)))
def test_many_batches_of_several_flows_and_macs_count_as_the_python_drain(
    steps: list[tuple[list[bytes], str]], peers: tuple[str, ...]
) -> None:
    both(steps, peers)


@st.composite
def hashed_heads(draw: st.DrawFn) -> bytes:
    """The first 40 octets past the MACs of a frame, shaped to reach every case of
    `switching.flow_hash`: IPv4 or not, options or not, fragments, each protocol kind, ICMP
    echo or not."""
    ethertype = draw(st.sampled_from((b"\x08\x00", b"\x86\xdd", b"\x08\x06")))
    version = draw(st.sampled_from((0x45, 0x46, 0x55)))
    frag = draw(st.sampled_from((b"\x00\x00", b"\x40\x00", b"\x20\x00", b"\x00\x01")))
    proto = draw(st.sampled_from((1, 6, 17, 33, 132, 136, 47, 0)))
    icmp = draw(st.sampled_from((0, 8, 3)))
    rest = draw(st.binary(min_size=40, max_size=40))
    head = ethertype + bytes((version,)) + rest[:5] + frag + rest[5:6] + bytes((proto,))
    head += rest[6:18] + bytes((icmp,)) + rest[18:]
    return head[:40]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads=st.lists(hashed_heads(), min_size=1, max_size=8), size=st.sampled_from((60, 600)))
def test_c_picks_the_source_socket_flow_hash_picks_for_any_frame(
    heads: list[bytes], size: int
) -> None:
    """Batches of 3 equal frames per head to a known MAC: C sends each from the socket the
    Python drain picks by `switching.flow_hash` (ICMP, other protocols and non-IPv4 too)."""
    frames = []
    for n, head in enumerate(heads):
        one = mac_to_bytes(MAC_X) + mac_to_bytes(MAC_B) + head
        frames += [(one + bytes((n, k)) * size)[:size] for k in range(3)]
    both([(frames, "none")])
