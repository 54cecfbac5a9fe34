"""Offload mode on loopback, without root: socketpairs stand in for TAPs with IFF_VNET_HDR.
A super-frame crosses whole to an offload peer (and is written there with its virtio-net
header), is segmented with valid checksums for an RFC peer, and offload datagrams for a network
that did not ask for offload are refused and counted."""

from __future__ import annotations

import socket
import struct
import time
from contextlib import ExitStack

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from overlaynet.dataplane import offload
from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.vtep import Vtep
from overlaynet.wire import chunks
from tests.unit.dataplane.drains import tap
from tests.unit.dataplane.ports import free_port
from tests.unit.dataplane.test_segment import partial, rechecksummed, super_frame
from tests.unit.dataplane.test_vtep_loopback import HOST_A, HOST_B, TIMEOUT, VNI

MAC_B = "02:42:0a:00:00:03"


def _pair(
    stack: ExitStack, *, b_offload: bool, a_offload_peers: bool = True
) -> tuple[Vtep, Vtep, socket.socket, socket.socket]:
    port, off_port = free_port(), free_port()
    kw = {"source_sockets": 2, "socket_buffer": 1 << 21, "offload_port": off_port}
    a = stack.enter_context(Vtep(HOST_A, port, **kw))  # type: ignore[arg-type]
    b = stack.enter_context(Vtep(HOST_B, port, **kw))  # type: ignore[arg-type]
    # Running before the networks come, as in the agent: the offload socket joins a live loop.
    a.start()
    b.start()
    bridge_a, tap_a = tap(stack, TIMEOUT)
    bridge_b, tap_b = tap(stack, TIMEOUT)
    a.add_network(VNI, tap_a.fileno(), vnet_hdr=True, offload=True)
    b.add_network(VNI, tap_b.fileno(), vnet_hdr=b_offload, offload=b_offload)
    a.set_peers(VNI, [HOST_B])
    b.set_peers(VNI, [HOST_A])
    if a_offload_peers:
        a.set_offload_peers(VNI, [HOST_B])
    a.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
    return a, b, bridge_a, bridge_b


def test_a_super_frame_crosses_whole_to_an_offload_peer() -> None:
    with ExitStack() as stack:
        a, b, bridge_a, bridge_b = _pair(stack, b_offload=True)
        payload = bytes(range(256)) * 200  # 51,200 octets: 36 chunks, one GSO send
        data = offload.vnet_header(1398, 54, gso=True) + partial(super_frame(payload))
        bridge_a.send(data)
        assert bridge_b.recv(1 << 17) == data
        assert a.inspect(VNI)["counters"]["tx_offload_frames"] == 1
        assert b.inspect(VNI)["counters"]["rx_offload_frames"] == 1
        assert a.inspect(VNI)["offload"]["wire"] == {HOST_B: "offload"}
        # From the path MTU (loopback's 65536), capped at what a jumbo underlay carries.
        assert a.inspect(VNI)["offload"]["chunk"] == chunks.MAX_AUTO_CHUNK
        assert b.stats()["offload_reassembly"]["offload_frames"] == 1


def test_toward_an_rfc_peer_the_super_frame_is_segmented_and_checksummed() -> None:
    with ExitStack() as stack:
        a, _b, bridge_a, bridge_b = _pair(stack, b_offload=False, a_offload_peers=False)
        payload = bytes(range(256)) * 20  # 5120 octets: 4 segments of 1398 (last shorter)
        bridge_a.send(offload.vnet_header(1398, 54, gso=True) + partial(super_frame(payload)))
        got = [bridge_b.recv(65536) for _ in range(4)]
        assert b"".join(bytes(Ether(f)[TCP].payload) for f in got) == payload
        assert all(f == rechecksummed(f) and len(f) <= 14 + 1450 for f in got)
        assert [Ether(f)[IP].id for f in got] == [65530, 65531, 65532, 65533]
        assert a.inspect(VNI)["offload"]["wire"] == {HOST_B: "rfc7348"}
        assert a.inspect(VNI)["counters"].get("tx_offload_frames", 0) == 0


def test_offload_datagrams_for_a_network_without_offload_are_refused_and_counted() -> None:
    with ExitStack() as stack:
        a, _b, _bridge_a, _bridge_b = _pair(stack, b_offload=False)
        # A network of a's that is not in offload mode, beside the one that is.
        _bridge_c, tap_c = tap(stack, TIMEOUT)
        a.add_network(VNI + 1, tap_c.fileno(), vnet_hdr=True)
        a.members = [HOST_B]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST_B, 0))
            s.sendto(chunks.encode_header(VNI + 1, 1, 0, 1) + bytes(64), (HOST_A, a.offload_port))
            s.sendto(b"garbage", (HOST_A, a.offload_port))
        deadline = time.monotonic() + TIMEOUT
        while a.stats()["counters"].get("rx_drop_offload_refused", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while a.stats()["offload_reassembly"].get("offload_short", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_a_peer_that_refuses_offload_gets_the_rfc_wire() -> None:
    """An offload peer without offload mode (here: a VTEP without it; in the field a kernel
    VTEP named by mistake) answers port unreachable: the first super-frame is lost, the next
    ones are segmented for it, and the VTEP says why."""
    with ExitStack() as stack:
        a, _b, bridge_a, bridge_b = _pair(stack, b_offload=False)
        payload = bytes(range(256)) * 20
        data = offload.vnet_header(1398, 54, gso=True) + partial(super_frame(payload))
        deadline = time.monotonic() + TIMEOUT
        while a.stats()["counters"].get("offload_peer_refused", 0) < 1:
            assert time.monotonic() < deadline, "no port unreachable seen"
            bridge_a.send(data)
            time.sleep(0.05)
        assert a.inspect(VNI)["offload"]["wire"] == {HOST_B: "rfc7348 (offload refused)"}
        time.sleep(0.2)  # segments sent while the refusal was on its way arrive
        bridge_b.setblocking(False)
        while True:  # and are set aside
            try:
                bridge_b.recv(65536)
            except BlockingIOError:
                break
        bridge_b.settimeout(TIMEOUT)
        bridge_a.send(data)
        got = [bridge_b.recv(65536) for _ in range(4)]
        assert b"".join(bytes(Ether(f)[TCP].payload) for f in got) == payload


def test_runs_of_small_frames_cross_whole_in_order() -> None:
    """One-chunk frames (UDP datagrams with partial checksums) queued in the TAP leave in GSO
    sends and arrive as one GSO_UDP_L4 write of the same datagrams, in order."""
    with ExitStack() as stack:
        a, b, bridge_a, bridge_b = _pair(stack, b_offload=True)
        a.stop()  # frames queue up first, so one drain finds the whole run
        sent = []
        for i in range(20):
            frame = bytes(
                Ether(src="02:42:0a:00:00:02", dst=MAC_B)
                / IP(src="10.0.0.2", dst="10.0.0.3")
                / UDP(sport=5000, dport=5001)
                / (i.to_bytes(2, "big") * 100)
            )
            data = struct.pack("<BBHHHH", 1, 0, 0, 0, 34, 6) + partial(frame)
            bridge_a.send(data)
            sent.append(data)
        a.start()
        # One GSO_UDP_L4 write (`offload.UdpRuns`) that the kernel cuts back into the 20.
        got = bridge_b.recv(65536)
        assert got == offload.udp_super_frame(sent[0], [offload.udp_payload(d) for d in sent])
        # Counters move at the end of the drain that moved the frames, just after the write
        # the bridge saw: read until they do (bounded), then exactly.
        expected = [20, 1, 20]
        deadline = time.monotonic() + TIMEOUT
        while (seen := _run_counters(a, b)) != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == expected


def _run_counters(a: Vtep, b: Vtep) -> list[int]:
    """Frames the sender sent in offload mode, chunks the receiver took, datagrams it merged."""
    return [
        a.inspect(VNI)["counters"].get("tx_offload_frames", 0),
        b.inspect(VNI)["counters"].get("rx_offload_frames", 0),
        b.stats()["offload_reassembly"].get("offload_udp_merged", 0),
    ]
