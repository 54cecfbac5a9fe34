"""What the tests of the C ingress drains against the Python ones share (test_fastingress,
test_fastingress_frames, test_fastoffload): loopback UDP_GRO sockets for members and a
stranger, datagrams cut into GRO buffers as the kernel cuts them, a hot loop's networks with
socketpairs standing in for TAP queues, the send / drain / collect of one example, and the
state compared between the two paths."""

from __future__ import annotations

import select
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import pytest
from hypothesis import strategies as st

from overlaynet.dataplane.fdb import FdbEntry, FdbTable
from overlaynet.dataplane.hotpath import HotLoop
from overlaynet.dataplane.switching import Network

RECEIVER, MEMBER, OTHER_MEMBER, STRANGER = "127.0.0.1", "127.0.0.3", "127.0.0.5", "127.0.0.4"
MTU = 1450
MAC_A, MAC_B = bytes.fromhex("02420a000002"), bytes.fromhex("02420a000003")
SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
TIMEOUT = 5.0  # bounds a hang only
#: Datagrams in one UDP-GSO send at most (UDP_MAX_SEGMENTS), and its payload at most.
GSO_SEGMENTS, GSO_BYTES = 64, 65507

Buffers = list[tuple[str, list[bytes]]]


def gro_buffers(draw: st.DrawFn, datagrams: list[tuple[str, bytes]]) -> Buffers:
    """Cut (sender, datagram)s into GRO buffers: one sender, equal sizes, the last maybe
    shorter, as the kernel does (where it may, `draw` decides)."""
    buffers: Buffers = []
    for sender, datagram in datagrams:
        if buffers:
            last_sender, group = buffers[-1]
            first = len(group[0])
            if (
                last_sender == sender
                and first > 0
                and len(group[-1]) == first
                and 0 < len(datagram) <= first
                and len(group) < GSO_SEGMENTS
                and first * (len(group) + 1) <= GSO_BYTES
                and draw(st.booleans())
            ):
                group.append(datagram)
                continue
        buffers.append((sender, [datagram]))
    return buffers


@dataclass
class Path:
    """One hot loop with its networks' TAP stand-ins, C or Python."""

    loop: HotLoop
    net: Network
    plain: Network
    bulk: socket.socket
    latency: socket.socket
    plain_tap: socket.socket
    writes: list[tuple[str, bytes]] = field(default_factory=list)


def tap(stack: ExitStack, timeout: float | None = None) -> tuple[socket.socket, socket.socket]:
    """A TAP queue's stand-in: (our end, the end the loop writes to), room for a 64 KB
    super-frame in one record. `timeout`: our end waits that long for a frame (else it does
    not wait)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (ours, theirs):
        stack.enter_context(s)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    if timeout is not None:
        ours.settimeout(timeout)
    return ours, theirs


def tapped_path(
    stack: ExitStack,
    loop: HotLoop,
    *,
    vni: int,
    plain_vni: int,
    fdb_mode: int,
    offload: bool,
    table: Callable[[], dict[bytes, FdbEntry]] = FdbTable,
) -> Path:
    """`loop` with network `vni` (virtio-net header, a latency queue; offload mode with
    `offload`) and `plain_vni` (one queue; a virtio-net header only with `offload`), members
    MEMBER and OTHER_MEMBER. `fdb_mode`: 0 an empty FDB, no learning; 1 MAC_A static at MEMBER;
    2 MAC_A learned at OTHER_MEMBER, room to learn. The FDB is a `table` (the agent's
    `FdbTable`; a plain dict is "changed" at every look: `fdb.generation`)."""
    bulk, bulk_tap = tap(stack)
    latency, latency_tap = tap(stack)
    plain, plain_tap = tap(stack)
    fdb: dict[bytes, FdbEntry] = table()
    if fdb_mode == 1:
        fdb[MAC_A] = FdbEntry(MEMBER)
    elif fdb_mode == 2:
        fdb[MAC_A] = FdbEntry(OTHER_MEMBER, learned=True)
    net = Network(vni, bulk_tap.fileno(), MTU, fdb, vnet_hdr=True, queues=(latency_tap.fileno(),))
    net.offload = offload
    net.learn_limit = 4 if fdb_mode >= 2 else 0
    plain_net = Network(plain_vni, plain_tap.fileno(), MTU, {}, vnet_hdr=offload)
    loop.add(net)
    loop.add(plain_net)
    loop.members = frozenset({MEMBER, OTHER_MEMBER})
    return Path(loop, net, plain_net, bulk, latency, plain)


def member_senders(stack: ExitStack) -> dict[str, socket.socket]:
    """A UDP_GRO socket at RECEIVER ("rx") and a sending socket at MEMBER, as `send` takes
    them."""
    rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    rx.setsockopt(SOL_UDP, UDP_GRO, 1)
    rx.bind((RECEIVER, 0))
    rx.setblocking(False)
    member = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    member.bind((MEMBER, 0))
    return {"rx": rx, MEMBER: member}


@contextmanager
def gro_sockets(*, sndbuf: int = 0) -> Iterator[dict[str, socket.socket]]:
    """The receiving UDP_GRO socket ("rx", at RECEIVER) and a sending socket per member and
    the stranger (by address; send buffers of `sndbuf` octets, or the default)."""
    with ExitStack() as stack:
        rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rx.setsockopt(SOL_UDP, UDP_GRO, 1)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
        rx.bind((RECEIVER, 0))
        rx.setblocking(False)
        found = {"rx": rx}
        for address in (MEMBER, OTHER_MEMBER, STRANGER):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            if sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            sock.bind((address, 0))
            found[address] = sock
        yield found


def send(buffers: Buffers, senders: dict[str, socket.socket]) -> int:
    """Send each buffer as one UDP-GSO send (one GRO buffer on loopback); the datagram count."""
    count = 0
    for sender, group in buffers:
        sock, address = senders[sender], (RECEIVER, senders["rx"].getsockname()[1])
        if len(group) > 1:
            gso = [(SOL_UDP, UDP_SEGMENT, len(group[0]).to_bytes(2, "little"))]
            sock.sendmsg(group, gso, 0, address)
        else:
            sock.sendto(group[0], address)
        count += len(group)
    return count


def collect(path: Path) -> None:
    """Everything the loop wrote to the TAP stand-ins, by queue, in order."""
    for name, sock in (("bulk", path.bulk), ("latency", path.latency), ("plain", path.plain_tap)):
        while True:
            try:
                path.writes.append((name, sock.recv(1 << 17)))
            except BlockingIOError:
                break


def send_and_drain(
    path: Path,
    rx: socket.socket,
    buffers: Buffers,
    senders: dict[str, socket.socket],
    drain: Callable[[], object],
    budget: int = 0,
) -> None:
    """Send the buffers and `drain` them (budget 0: the datagram count), more drains only for
    datagrams that arrive late (loopback delivers in the send call, as a rule); collect."""
    while select.select([rx], [], [], 0)[0]:
        rx.recv(1 << 17)  # nothing left from an earlier example
    count = send(buffers, senders)
    path.loop.drain_budget = budget or count
    wait = TIMEOUT
    while select.select([rx], [], [], wait)[0]:
        drain()
        wait = 0.01
    collect(path)


def state(path: Path, drain_counter: str) -> dict[str, object]:
    """What both paths must leave alike: the writes, host and network counters (but the C
    path's `drain_counter`), FDB entries, what was learned."""
    counters = Counter(path.loop._counters)
    counters.pop(drain_counter, None)
    return {
        "writes": path.writes,
        "host": +counters,
        "net": +path.net.counters,
        "plain": +path.plain.counters,
        "fdb": {
            mac.hex(): (e.remote_ip, e.learned, e.rx_frames, e.rx_bytes)
            for mac, e in path.net.fdb.items()
        },
        "learned": path.net.learned,
    }


def both(
    one: Callable[[ExitStack, bool], Path],
    state_of: Callable[[Path], dict[str, object]],
    check_c: Callable[[Path], None],
) -> tuple[dict[str, object], dict[str, object], Path]:
    """`one(stack, accelerated)` (a path made, sent to and drained) on the Python path, then
    the C path, each in its own ExitStack closed before the next: their states (`state_of`),
    `check_c` run on the C path while it is open, and the C path."""
    states = []
    for accelerated in (False, True):
        with ExitStack() as stack:
            path = one(stack, accelerated)
            states.append(state_of(path))
            if accelerated:
                check_c(path)
    return states[0], states[1], path


# -- the slot tests of the ingress and offload drains (test_fastingress_slots,
# test_fastoffload_slots): FDB changes between drains ------------------------------------------

MAC_D, MAC_E = bytes.fromhex("02420a000004"), bytes.fromhex("02420a000005")
MACS = [MAC_A, MAC_B, MAC_D, MAC_E]
#: An FDB table's type: the agent's `FdbTable` or a plain dict (always "changed").
Table = Callable[[], dict[bytes, FdbEntry]]
#: An FDB change between drains: (what, MAC, remote host).
Change = tuple[str, bytes, str]
TABLES = pytest.mark.parametrize("table", [FdbTable, dict], ids=["FdbTable", "dict"])
#: A MAC counted in C in a first drain, then its entry changed before the second.
FDB_CHANGES = pytest.mark.parametrize(
    ("start", "change"),
    [
        (("static", MAC_A, MEMBER), ("remove", MAC_A, "")),
        (("static", MAC_A, MEMBER), ("static", MAC_A, OTHER_MEMBER)),
        (("learned", MAC_A, MEMBER), ("learned", MAC_A, OTHER_MEMBER)),
        (("remove", MAC_A, ""), ("static", MAC_A, MEMBER)),
    ],
    ids=["removed", "given-elsewhere", "learned-moved", "added"],
)


def apply_change(path: Path, change: Change) -> None:
    """`change` to the FDB, as the control side (or `age_learned`) makes it between drains."""
    what, mac, host = change
    fdb = path.net.fdb
    if what == "remove":
        fdb.pop(mac, None)
    elif what == "static":
        fdb[mac] = FdbEntry(host)
    elif what == "learned":
        fdb[mac] = FdbEntry(host, learned=True)
