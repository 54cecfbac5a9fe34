"""Two VTEPs on loopback with an encrypted network (`Vtep.set_keys`): frames cross sealed,
batched and merged as on a plain network; forged and replayed datagrams deliver nothing."""

from __future__ import annotations

import socket
from contextlib import ExitStack

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from overlaynet.dataplane.seal import DataKey, Sealer
from overlaynet.wire import vxlan

from .test_vtep_loopback import HOST_A, HOST_B, VNI, Pair, frame_a_to_b, read_vnet, tcp_run

KEY1 = DataKey(1, bytes(range(16)))
KEY2 = DataKey(2, bytes(range(100, 132)))


def encrypted_pair(stack: ExitStack, *, vnet_b: bool = False) -> Pair:
    pair = Pair(stack, vnet_b=vnet_b)
    pair.a.set_keys(VNI, [KEY1])
    pair.b.set_keys(VNI, [KEY1])
    return pair


def counters(pair: Pair) -> dict[str, int]:
    result: dict[str, int] = pair.b.inspect(VNI)["counters"]
    return result


def test_a_frame_crosses_sealed_and_inspect_shows_key_ids_not_keys() -> None:
    with ExitStack() as stack:
        pair = encrypted_pair(stack)
        pair.a.start()
        pair.b.start()
        frame = frame_a_to_b(b"secret payload")
        pair.bridge_a.send(frame)
        assert pair.bridge_b.recv(65536) == frame
        shown = pair.a.inspect(VNI)
        assert shown["encrypted"] is True and shown["key_ids"] == [1]
        assert KEY1.secret.hex() not in str(pair.a.stats())


def test_a_run_crosses_sealed_as_one_gso_batch_and_one_super_frame() -> None:
    with ExitStack() as stack:
        pair = encrypted_pair(stack, vnet_b=True)
        frames = tcp_run(20)
        for frame in frames:
            pair.bridge_a.send(frame)
        pair.a.start()
        pair.b.start()
        _fields, merged = read_vnet(pair.bridge_b)
        assert bytes(Ether(merged)[TCP].payload) == b"".join(
            bytes(Ether(f)[TCP].payload) for f in frames
        )
        assert pair.a.inspect(VNI)["counters"]["tx_gso_batches"] == 1
        assert counters(pair)["rx_merged_writes"] == 1
        assert pair.b.inspect(VNI)["fdb"][0]["rx_frames"] == 20


def forge(source: str, port: int, datagrams: list[bytes]) -> None:
    """Send from a member's own address (loopback lets us bind it): what a forger on the
    underlay does with a spoofed source address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
        forger.bind((source, 0))
        for datagram in datagrams:
            forger.sendto(datagram, (HOST_B, port))


def test_plain_vxlan_with_a_members_source_address_delivers_nothing_and_is_counted() -> None:
    header = vxlan.encode_header(VNI)
    forged = [header + frame_a_to_b(bytes([i]) * 20) for i in range(100)]
    with ExitStack() as stack:
        pair = encrypted_pair(stack)
        pair.a.start()
        pair.b.start()
        forge(HOST_A, pair.port, forged)
        after = frame_a_to_b(b"sealed, after the forgeries")
        pair.bridge_a.send(after)
        # The VTEP reads its socket in order: the forgeries were handled before this frame.
        assert pair.bridge_b.recv(65536) == after
        assert counters(pair)["rx_drop_unauthenticated"] == 100
    with ExitStack() as stack:  # the same forgeries on a plain network: all delivered
        pair = Pair(stack)
        pair.b.start()
        forge(HOST_A, pair.port, forged)
        assert [pair.bridge_b.recv(65536) for _ in forged] == [f[8:] for f in forged]


def test_a_sealed_datagram_replayed_from_another_members_address_fails() -> None:
    with ExitStack() as stack:
        pair = encrypted_pair(stack)
        pair.b.members = ["127.0.0.4"]
        captured = []
        # What A would put on the wire, sealed with the network's key and A's address.
        head, body = Sealer([KEY1], 1, HOST_A).seal(vxlan.encode_header(VNI), frame_a_to_b())
        captured.append(head + body)
        pair.b.start()
        forge("127.0.0.4", pair.port, captured)
        forge(HOST_A, pair.port, captured)  # from A itself it authenticates
        assert pair.bridge_b.recv(65536) == frame_a_to_b()
        assert counters(pair)["rx_drop_unauthenticated"] == 1


def test_a_rotation_keeps_frames_flowing_with_the_previous_key_accepted() -> None:
    with ExitStack() as stack:
        pair = encrypted_pair(stack)
        pair.a.start()
        pair.b.start()
        # B learns the new keyring first and still opens A's frames sealed with key 1.
        pair.b.set_keys(VNI, [KEY2, KEY1])
        pair.bridge_a.send(frame_a_to_b(b"old key"))
        assert pair.bridge_b.recv(65536) == frame_a_to_b(b"old key")
        pair.a.set_keys(VNI, [KEY2, KEY1])
        pair.bridge_a.send(frame_a_to_b(b"new key"))
        assert pair.bridge_b.recv(65536) == frame_a_to_b(b"new key")
        assert pair.a.inspect(VNI)["key_ids"] == [2, 1]
        pair.b.set_keys(VNI, [KEY2])  # grace over: only the new key
        pair.bridge_a.send(frame_a_to_b(b"still"))
        assert pair.bridge_b.recv(65536) == frame_a_to_b(b"still")
        assert counters(pair).get("rx_drop_unauthenticated", 0) == 0


def test_the_frames_are_unreadable_on_the_wire() -> None:
    with ExitStack() as stack:
        pair = encrypted_pair(stack)
        sniffer = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sniffer.bind(("127.0.0.5", pair.port))
        sniffer.settimeout(5)
        pair.a.set_peers(VNI, [HOST_B, "127.0.0.5"])
        pair.a.start()
        broadcast = Ether(src="02:42:0a:00:00:02", dst="ff:ff:ff:ff:ff:ff")
        frame = bytes(broadcast / IP() / (b"\xab" * 64))
        pair.bridge_a.send(frame)  # flooded: the sniffer, a peer, gets a copy
        datagram = sniffer.recv(65536)
        assert datagram[4:7] == vxlan.encode_header(VNI)[4:7]  # the VNI in clear
        assert b"\xab" * 8 not in datagram and frame[:12] not in datagram
