"""The C sends of offload mode (`fastoffload.send_whole`, `of_send`) against the Python ones
(`HotLoop._send_whole`, `chunks.split`), without root: the same super-frames sent to the same
peers over loopback (one receiving socket per peer; a peer without one refuses, ICMP port
unreachable) must give the same datagrams at each peer, in order, the same counters, FDB entry
counters, frame ids and refused peers, whatever the frame and chunk sizes (hypothesis)."""

from __future__ import annotations

import select
import socket
from collections import Counter
from contextlib import ExitStack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel, fastoffload
from overlaynet.dataplane.fdb import FdbEntry
from overlaynet.dataplane.hotpath import HotLoop
from overlaynet.dataplane.switching import Network

PEERS = ("127.0.0.1", "127.0.0.2")
REFUSING = "127.0.0.7"  # nothing listens there: port unreachable
VNI = 4310
MAC = bytes.fromhex("02420a000003")
TIMEOUT = 5.0  # bounds a hang only

pytestmark = pytest.mark.skipif(
    accel.load("offload") is None, reason=f"C helper unavailable: {accel.why_not('offload')}"
)


def _send_all(
    frames: list[bytes], chunk: int, gso: bool, hosts: tuple[str, ...], accelerated: bool
) -> dict[str, object]:
    with ExitStack() as stack:
        receivers: list[socket.socket] = []
        for peer in PEERS:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
            sock.bind((peer, 0 if not receivers else receivers[0].getsockname()[1]))
            receivers.append(sock)
        port = receivers[0].getsockname()[1]
        rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        off_tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        off_tx.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR, as the VTEP's
        loop = HotLoop(rx, [tx], 4789, Counter())
        stack.callback(loop.close)
        off_rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        loop.set_offload(off_rx, off_tx, port, chunk)
        loop.set_offload_chunk(chunk, gso=gso)
        if not accelerated:
            fastoffload.disable(loop)
        net = Network(VNI, -1, 1450, {MAC: FdbEntry(PEERS[0])}, vnet_hdr=True)
        net.offload = True
        for i, frame in enumerate(frames):
            entry = net.fdb[MAC] if i % 2 else None
            loop._send_whole(net, frame, hosts, entry)
        got: dict[str, list[bytes]] = {}
        for peer, sock in zip(PEERS, receivers, strict=True):
            got[peer] = []
            while select.select([sock], [], [], 0.05)[0]:
                got[peer].append(sock.recv(1 << 17))
        entry = net.fdb[MAC]
        return {
            "got": got,
            "net": +net.counters,
            "host": +loop._counters,
            "entry": (entry.tx_frames, entry.tx_bytes),
            "frame_id": loop._frame_id,
            "refused": sorted(loop.refused),
        }


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([0, 1, 60, 1455, 1456, 1457, 9000, 40000, 65000]), max_size=5),
    chunk=st.sampled_from([300, 1456, 8000]),
    gso=st.booleans(),
    hosts=st.sampled_from([PEERS[:1], PEERS, (PEERS[0], REFUSING, PEERS[1])]),
)
def test_the_c_sends_are_the_python_sends(
    sizes: list[int], chunk: int, gso: bool, hosts: tuple[str, ...]
) -> None:
    frames = [bytes((n + i) & 0xFF for i in range(n)) for n in sizes]
    python = _send_all(frames, chunk, gso, hosts, accelerated=False)
    c = _send_all(frames, chunk, gso, hosts, accelerated=True)
    assert c == python


def test_a_frame_of_too_many_chunks_is_left_to_python() -> None:
    """`chunks.split` refuses more than MAX_CHUNKS chunks: the C path declines, and the
    Python path raises as it always did."""
    with pytest.raises(ValueError):
        _send_all([bytes(300)], 1, True, PEERS[:1], accelerated=True)
