"""Two VTEPs on loopback (127.0.0.2 and 127.0.0.3), socketpairs standing in for the TAPs: the
hot loop, the public control interface and the trio wrapper, without root."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import trio
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether

from overlaynet.dataplane import offload
from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.tap import has_vnet_hdr
from overlaynet.dataplane.vtep import Vtep
from tests.unit.dataplane.ports import free_port

VNI = 4097
MAC_A, MAC_B = "02:42:0a:00:00:02", "02:42:0a:00:00:03"
HOST_A, HOST_B = "127.0.0.2", "127.0.0.3"
TIMEOUT = 5.0  # generous: only bounds a hang, never asserts speed


class Pair:
    """Two VTEPs, each serving VNI on one end of a socketpair; the other end is 'the bridge'."""

    def __init__(self, stack: ExitStack, *, vnet_b: bool = False) -> None:
        port = free_port()
        self.a = stack.enter_context(Vtep(HOST_A, port, source_sockets=2, socket_buffer=1 << 20))
        self.b = stack.enter_context(Vtep(HOST_B, port, source_sockets=2, socket_buffer=1 << 20))
        self.port = port
        self.bridge_a, tap_a = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.bridge_b, tap_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (self.bridge_a, tap_a, self.bridge_b, tap_b):
            stack.enter_context(s)
            s.settimeout(TIMEOUT)
        tap_a.setblocking(False)
        tap_b.setblocking(False)
        self.a.add_network(VNI, tap_a.fileno())
        # vnet_b: B's "TAP" speaks IFF_VNET_HDR, so B may write merged super-frames into it.
        self.b.add_network(VNI, tap_b.fileno(), vnet_hdr=vnet_b)
        self.a.set_peers(VNI, [HOST_B])
        self.b.set_peers(VNI, [HOST_A])
        self.a.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        self.b.endpoint_added(RemoteEndpoint(VNI, MAC_A, "10.0.0.2", HOST_A))


@pytest.fixture
def pair() -> Iterator[Pair]:
    with ExitStack() as stack:
        p = Pair(stack)
        p.a.start()
        p.b.start()
        yield p


def frame_a_to_b(payload: bytes = b"hello") -> bytes:
    return bytes(
        Ether(src=MAC_A, dst=MAC_B) / IP(src="10.0.0.2", dst="10.0.0.3") / ICMP() / payload
    )


def test_frame_crosses_from_one_tap_to_the_other_unchanged(pair: Pair) -> None:
    frame = frame_a_to_b()
    pair.bridge_a.send(frame)
    assert pair.bridge_b.recv(65536) == frame
    back = bytes(Ether(src=MAC_B, dst=MAC_A) / IP(src="10.0.0.3", dst="10.0.0.2") / ICMP())
    pair.bridge_b.send(back)
    assert pair.bridge_a.recv(65536) == back
    fdb = pair.a.inspect(VNI)["fdb"]
    assert fdb[0]["tx_frames"] == 1
    assert fdb[0]["rx_frames"] == 1


def test_arp_is_answered_without_leaving_the_host(pair: Pair) -> None:
    request = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=MAC_A, psrc="10.0.0.2",
                                                              pdst="10.0.0.3")  # fmt: skip
    pair.bridge_a.send(bytes(request))
    reply = Ether(pair.bridge_a.recv(65536))
    assert reply[ARP].hwsrc == MAC_B
    assert pair.a.stats()["networks"][str(VNI)]["counters"]["arp_answered"] == 1
    # Nothing crossed the underlay: B saw no frame from A.
    assert pair.b.inspect(VNI)["fdb"][0]["rx_frames"] == 0
    assert "rx_frames_unknown_source" not in pair.b.inspect(VNI)["counters"]


def test_datagrams_from_non_members_are_dropped_and_forwarding_continues(pair: Pair) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.9", 0))
        for i in range(50):
            stranger.sendto(bytes([8, 0, 0, 0, 0, 0x10, 0x01, 0]) + bytes(i), (HOST_B, pair.port))
    frame = frame_a_to_b(b"after")
    pair.bridge_a.send(frame)
    assert pair.bridge_b.recv(65536) == frame  # same socket, so the strangers came first
    assert pair.b.stats()["counters"]["rx_drop_not_member"] == 50


def test_members_setter_admits_extra_hosts(pair: Pair) -> None:
    pair.b.members = ["127.0.0.9"]
    assert "127.0.0.9" in pair.b.members
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as joined:
        joined.bind(("127.0.0.9", 0))
        frame = frame_a_to_b(b"static")
        joined.sendto(bytes([8, 0, 0, 0, 0, 0x10, 0x01, 0]) + frame, (HOST_B, pair.port))
        assert pair.bridge_b.recv(65536) == frame


def test_outer_source_port_is_from_the_pool_in_the_rfc_range(pair: Pair) -> None:
    ports = pair.a.stats()["source_ports"]
    assert len(ports) == 2
    assert all(49152 <= p <= 65535 for p in ports)


def test_remove_network_forgets_its_state(pair: Pair) -> None:
    pair.a.remove_network(VNI)
    assert pair.a.fdb.lookup(VNI, MAC_B) is None
    assert pair.a.stats()["networks"] == {}


async def test_run_serves_under_trio_and_stops_on_cancel() -> None:
    with ExitStack() as stack:
        p = Pair(stack)
        p.bridge_a.setblocking(False)
        p.bridge_b.setblocking(False)
        frame = frame_a_to_b(b"trio")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.a.run)
            nursery.start_soon(p.b.run)
            await trio.lowlevel.wait_writable(p.bridge_a)
            p.bridge_a.send(frame)
            with trio.fail_after(TIMEOUT):
                await trio.lowlevel.wait_readable(p.bridge_b)
            assert p.bridge_b.recv(65536) == frame
            nursery.cancel_scope.cancel()


def tcp_run(count: int, size: int = 1000, seq: int = 1, last: int = 0) -> list[bytes]:
    """`count` in-order, equal-size TCP segments of one flow, A to B, flags ACK only; with
    `last`, then one more segment of `last` octets with PSH, as a sender ends a write."""
    sizes = [size] * count + ([last] if last else [])
    return [
        bytes(
            Ether(src=MAC_A, dst=MAC_B)
            / IP(src="10.0.0.2", dst="10.0.0.3", flags="DF", id=i)
            / TCP(
                sport=40000,
                dport=5201,
                seq=seq + i * size,
                ack=1,
                flags="PA" if i == count else "A",
            )
            / (bytes([i % 256]) * n)
        )
        for i, n in enumerate(sizes)
    ]


def read_vnet(sock: socket.socket) -> tuple[tuple[int, ...], bytes]:
    """One write of B's VTEP into its vnet TAP: the header fields and the frame."""
    data = sock.recv(1 << 17)
    return struct.unpack("<BBHHHH", data[: offload.VNET_HDR_LEN]), data[offload.VNET_HDR_LEN :]


def test_a_run_of_one_flow_crosses_as_one_gso_batch_and_one_super_frame() -> None:
    with ExitStack() as stack:
        pair = Pair(stack, vnet_b=True)
        frames = tcp_run(20)
        for frame in frames:  # queued before the loop runs: A drains them in one go
            pair.bridge_a.send(frame)
        pair.a.start()
        pair.b.start()
        (flags, gso_type, hdr_len, gso_size, start, offset), frame = read_vnet(pair.bridge_b)
        assert flags == offload.VIRTIO_NET_HDR_F_NEEDS_CSUM
        assert gso_type == offload.VIRTIO_NET_HDR_GSO_TCPV4
        assert (hdr_len, gso_size, start, offset) == (54, 1000, 34, 16)
        merged = Ether(frame)
        assert bytes(merged[TCP].payload) == b"".join(bytes(Ether(f)[TCP].payload) for f in frames)
        assert merged[IP].len == 40 + 20 * 1000 and merged[TCP].seq == 1
        a, b = pair.a.inspect(VNI), pair.b.inspect(VNI)
        assert a["counters"]["tx_gso_batches"] == 1
        assert a["fdb"][0]["tx_frames"] == 20
        assert b["counters"]["rx_merged_writes"] == 1
        assert b["fdb"][0]["rx_frames"] == 20


def test_only_datagrams_with_a_udp_checksum_are_merged() -> None:
    """Checksum 0 leaves the inner bytes unprotected: such frames reach the TAP one by one,
    so the kernel verifies each inner checksum; checksummed ones are merged."""
    with ExitStack() as stack:
        pair = Pair(stack, vnet_b=True)
        header = bytes([8, 0, 0, 0]) + VNI.to_bytes(3, "big") + b"\x00"
        zero, checked = tcp_run(2, seq=1), tcp_run(2, seq=2001)
        for no_check, frames in ((1, zero), (0, checked)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.setsockopt(socket.SOL_SOCKET, 11, no_check)  # SO_NO_CHECK
                peer.bind((HOST_A, 0))
                for frame in frames:
                    peer.sendto(header + frame, (HOST_B, pair.port))
        pair.b.start()
        writes = [read_vnet(pair.bridge_b) for _ in range(3)]
        singles = [frame for fields, frame in writes if fields == (0, 0, 0, 0, 0, 0)]
        merged = [
            frame for fields, frame in writes if fields[1] == offload.VIRTIO_NET_HDR_GSO_TCPV4
        ]
        assert singles == zero
        assert len(merged) == 1
        assert bytes(Ether(merged[0])[TCP].payload) == b"".join(
            bytes(Ether(f)[TCP].payload) for f in checked
        )


def test_empty_datagrams_from_strangers_are_counted() -> None:
    with ExitStack() as stack:
        pair = Pair(stack)
        pair.b.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.9", 0))
            for _ in range(3):
                stranger.sendto(b"", (HOST_B, pair.port))
        frame = frame_a_to_b(b"after")
        pair.a.start()
        pair.bridge_a.send(frame)
        assert pair.bridge_b.recv(65536) == frame
        # The frame may be written in the same drain as the strangers' datagrams, before that
        # drain's end counts them (C counts at its end): wait for the count, bounded.
        deadline = time.monotonic() + 5.0
        while pair.b.stats()["counters"].get("rx_drop_not_member", 0) < 3:
            assert time.monotonic() < deadline, pair.b.stats()["counters"]
            time.sleep(0.01)
        assert pair.b.stats()["counters"]["rx_drop_not_member"] == 3


def test_a_second_vtep_on_the_same_address_and_port_is_refused(pair: Pair) -> None:
    with pytest.raises(OSError):
        Vtep(HOST_A, pair.port, source_sockets=1, socket_buffer=1 << 16)


def test_a_socket_is_not_taken_for_a_vnet_tap(pair: Pair) -> None:
    assert not has_vnet_hdr(pair.bridge_a.fileno())


def test_a_shorter_last_segment_with_psh_joins_and_ends_the_super_frame() -> None:
    with ExitStack() as stack:
        pair = Pair(stack, vnet_b=True)
        frames = tcp_run(5, last=300)
        for frame in frames:
            pair.bridge_a.send(frame)
        pair.a.start()
        pair.b.start()
        (_flags, gso_type, _hdr_len, gso_size, _start, _offset), frame = read_vnet(pair.bridge_b)
        assert (gso_type, gso_size) == (offload.VIRTIO_NET_HDR_GSO_TCPV4, 1000)
        merged = Ether(frame)
        assert merged[TCP].flags == "PA"
        assert bytes(merged[TCP].payload) == b"".join(bytes(Ether(f)[TCP].payload) for f in frames)
        assert pair.b.inspect(VNI)["fdb"][0]["rx_frames"] == 6


def test_a_gap_in_the_sequence_splits_the_run_into_two_super_frames() -> None:
    with ExitStack() as stack:
        pair = Pair(stack, vnet_b=True)
        first, second = tcp_run(6), tcp_run(6, seq=50_001)  # a lost stretch in between
        for frame in first + second:  # one flow, one size: A sends them as one batch
            pair.bridge_a.send(frame)
        pair.a.start()
        pair.b.start()
        for frames in (first, second):
            (_flags, gso_type, *_rest), frame = read_vnet(pair.bridge_b)
            assert gso_type == offload.VIRTIO_NET_HDR_GSO_TCPV4
            merged = Ether(frame)
            assert merged[TCP].seq == Ether(frames[0])[TCP].seq
            assert bytes(merged[TCP].payload) == b"".join(
                bytes(Ether(f)[TCP].payload) for f in frames
            )
        assert pair.a.inspect(VNI)["counters"]["tx_gso_batches"] == 1


def test_unknown_unicast_of_one_flow_leaves_in_one_gso_batch_to_the_peer() -> None:
    """Issue 19: toward a peer whose endpoints nobody announced (a kernel VTEP behind a static
    peer), every frame is unknown unicast; it must leave batched like a known one (it left
    frame by frame, 1/6 of the speed) and still reach the peer's TAP intact."""
    with ExitStack() as stack:
        pair = Pair(stack, vnet_b=True)
        pair.a.endpoint_removed(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        frames = tcp_run(20)
        for frame in frames:  # queued before the loop runs: A drains them in one go
            pair.bridge_a.send(frame)
        pair.a.start()
        pair.b.start()
        (_flags, gso_type, *_rest), frame = read_vnet(pair.bridge_b)
        assert gso_type == offload.VIRTIO_NET_HDR_GSO_TCPV4
        assert bytes(Ether(frame)[TCP].payload) == b"".join(
            bytes(Ether(f)[TCP].payload) for f in frames
        )
        counters = pair.a.inspect(VNI)["counters"]
        assert counters["tx_gso_batches"] == 1
        assert counters["tx_unknown_unicast"] == 20


def test_unknown_unicast_batch_is_replicated_to_every_peer() -> None:
    with ExitStack() as stack:
        pair = Pair(stack)
        pair.a.endpoint_removed(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.4", pair.port))
            other.settimeout(TIMEOUT)
            other.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            pair.a.set_peers(VNI, [HOST_B, "127.0.0.4"])
            frames = tcp_run(10)
            for frame in frames:
                pair.bridge_a.send(frame)
            pair.a.start()
            pair.b.start()
            got_b = [pair.bridge_b.recv(65536) for _ in frames]
            got_other = [other.recv(65536)[8:] for _ in frames]
        assert got_b == frames
        assert got_other == frames
        assert pair.a.inspect(VNI)["counters"]["tx_gso_batches"] == 2


def test_learning_is_off_by_default_and_learns_member_sources_when_on() -> None:
    with ExitStack() as stack:
        pair = Pair(stack)
        pair.b.endpoint_removed(RemoteEndpoint(VNI, MAC_A, "10.0.0.2", HOST_A))
        pair.a.start()
        pair.b.start()
        pair.bridge_a.send(frame_a_to_b(b"one"))
        pair.bridge_b.recv(65536)
        assert pair.b.fdb.lookup(VNI, MAC_A) is None
        pair.b.set_learning(VNI, limit=8)
        pair.bridge_a.send(frame_a_to_b(b"two"))
        pair.bridge_b.recv(65536)
        entry = pair.b.fdb.lookup(VNI, MAC_A)
        assert entry is not None and entry.learned and entry.remote_ip == HOST_A
        shown = pair.b.inspect(VNI)
        assert shown["learning"] == {"limit": 8, "learned": 1}
        assert [r["learned"] for r in shown["fdb"]] == [True]
        assert shown["counters"]["fdb_learned"] == 1
        # Turning learning off forgets what it learned.
        pair.b.set_learning(VNI, 0)
        assert pair.b.fdb.lookup(VNI, MAC_A) is None
        assert pair.b.inspect(VNI)["learning"] is None


def test_interleaved_flows_each_leave_in_one_batch_and_keep_their_order() -> None:
    """Issue 15: several streams interleave in the one TAP queue, two or three frames at a
    time; each flow's frames still leave as one GSO batch (they left as many small ones, and 4
    streams were slower than 1) and arrive as one super-frame, in order."""
    with ExitStack() as stack:
        pair = Pair(stack, vnet_b=True)
        other = [Ether(f) for f in tcp_run(12)]
        for packet in other:
            packet[TCP].sport = 40001
            del packet[TCP].chksum, packet[IP].chksum
        flows = [tcp_run(12), [bytes(p) for p in other]]
        for i in range(0, 12, 2):  # A A B B A A B B ...
            for flow in flows:
                for frame in flow[i : i + 2]:
                    pair.bridge_a.send(frame)
        pair.a.start()
        pair.b.start()
        got = {}
        for _ in flows:
            (_flags, gso_type, *_rest), frame = read_vnet(pair.bridge_b)
            assert gso_type == offload.VIRTIO_NET_HDR_GSO_TCPV4
            merged = Ether(frame)
            got[merged[TCP].sport] = bytes(merged[TCP].payload)
        for sport, flow in zip((40000, 40001), flows, strict=True):
            assert got[sport] == b"".join(bytes(Ether(f)[TCP].payload) for f in flow)
        assert pair.a.inspect(VNI)["counters"]["tx_gso_batches"] == 2


def test_with_two_tap_queues_tcp_is_written_to_the_first_and_the_rest_to_the_second() -> None:
    """Issue 15: a ping under a TCP load waited ~2 ms in the TAP's one queue behind the bulk.
    The kernel queues each flow's outgoing frames on the TAP queue where the VTEP wrote its
    incoming ones, so the VTEP writes TCP to the first queue and everything else to the second,
    and reads both."""
    with ExitStack() as stack:
        pair = Pair(stack)
        second_bridge, second_tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (second_bridge, second_tap):
            stack.enter_context(s)
            s.settimeout(TIMEOUT)
        second_tap.setblocking(False)
        pair.b.remove_network(VNI)
        b_first_bridge, b_first_tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (b_first_bridge, b_first_tap):
            stack.enter_context(s)
            s.settimeout(TIMEOUT)
        b_first_tap.setblocking(False)
        pair.b.add_network(VNI, b_first_tap.fileno(), queues=(second_tap.fileno(),))
        pair.b.set_peers(VNI, [HOST_A])
        pair.a.start()
        pair.b.start()
        tcp = tcp_run(1)[0]
        ping = frame_a_to_b(b"lone")
        pair.bridge_a.send(tcp)
        assert b_first_bridge.recv(65536) == tcp
        pair.bridge_a.send(ping)
        assert second_bridge.recv(65536) == ping
        # Frames the kernel queued on the second queue are read and forwarded too.
        back = bytes(Ether(src=MAC_B, dst=MAC_A) / IP(src="10.0.0.3", dst="10.0.0.2") / ICMP())
        second_bridge.send(back)
        assert pair.bridge_a.recv(65536) == back
