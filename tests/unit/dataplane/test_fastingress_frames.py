"""The frames the C ingress drain delivers itself (`accel/ingress.c` IN_FRAMES): datagrams it
does not merge but `switching.ingress` passes unchanged (UDP, ICMP, ARP, pure ACKs) are
written by C to the queue the Python drain picks, and counted by `fastingress._account` as
`ingress` counts each. Mixed GRO buffers (trains of one size with several source MACs,
non-IPv4 frames whose octet 23 is 6, frames at and past the size limit, unknown VNIs,
malformed headers, strangers) drained by a hot loop on each path, on the merging socket and
on the lone-frame one (`merge=False`), must give the same TAP writes per queue, octet for
octet and in order, and the same counters, FDB entry counters and learned entries; the
FDB starts empty, static, learned elsewhere (moved on the first frame) or with room for one
learned entry (learned, then full)."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel, fastingress

from .drains import (
    MAC_A,
    MAC_B,
    MEMBER,
    MTU,
    OTHER_MEMBER,
    STRANGER,
    Path,
    both,
    send_and_drain,
)
from .test_fastingress import (
    PLAIN_VNI,
    UNKNOWN_VNI,
    VNI,
    _path,
    _state,
    sockets,
    tcp_datagram,
    vxlan,
)

__all__ = ["sockets"]  # the fixture, used by name

pytestmark = pytest.mark.skipif(
    accel.load("ingress") is None, reason=f"C helper unavailable: {accel.why_not('ingress')}"
)

MAC_D = bytes.fromhex("02420a000004")
GROUP_MAC = bytes.fromhex("0300c0ffee01")
ZERO_MAC = bytes(6)
#: Inner body lengths (after the Ethernet header): runts, small, full, and around the limit
#: `ingress` allows (MTU + 14 + 4 octets of inner frame: a body of MTU + 4).
BODY_LENGTHS = [0, 5, 9, 10, 28, 100, 1400, MTU + 4, MTU + 5]
#: (ethertype, IPv4 protocol octet): UDP, ICMP, TCP (the bulk queue), ARP, IPv6 with a 6 at
#: the IPv4 protocol's place (not TCP for the queue choice).
KINDS = [(0x0800, 17), (0x0800, 1), (0x0800, 6), (0x0806, 0), (0x86DD, 6)]


def frame_datagram(
    body_len: int,
    kind: tuple[int, int],
    *,
    src: bytes = MAC_A,
    vni: int = VNI,
    vxflags: int = 0x08,
    reserved: int = 0,
    fill: int = 0,
) -> bytes:
    """A VXLAN datagram with an inner frame of `body_len` octets after its Ethernet header,
    its ethertype and (octet 9 of the body: the IPv4 protocol's place) protocol from `kind`."""
    ethertype, proto = kind
    body = bytearray((fill + i) & 0xFF for i in range(body_len))
    if body_len > 9:
        body[0] = 0x45 if ethertype == 0x0800 else 0x60
        body[9] = proto
    return vxlan(vni, vxflags, reserved) + MAC_B + src + ethertype.to_bytes(2, "big") + body


@st.composite
def frame_buffers(draw: st.DrawFn) -> list[tuple[str, list[bytes]]]:
    """GRO buffers (one sender, datagrams of one size, the last maybe shorter) of frames the
    C drain delivers and frames it leaves to Python, with pure ACKs and merge runs between."""
    buffers: list[tuple[str, list[bytes]]] = []
    seq = 1000
    for _ in range(draw(st.integers(1, 12))):
        sender = draw(st.sampled_from([MEMBER] * 6 + [OTHER_MEMBER, STRANGER]))
        what = draw(st.sampled_from(["frames"] * 6 + ["acks", "segments"]))
        count = draw(st.integers(1, 50))
        if what == "segments":  # a merge run (or lone segments without merging)
            group = [
                tcp_datagram(seq=seq + i * 100, payload=bytes([i]) * 100, ident=i)
                for i in range(count)
            ]
            seq += count * 100
        elif what == "acks":  # pure ACKs: TCP without payload, never merged
            group = [tcp_datagram(seq=seq, ident=i) for i in range(count)]
        else:
            body_len = draw(st.sampled_from(BODY_LENGTHS))
            group = []
            for i in range(count):
                oddity = draw(st.sampled_from(["none"] * 12 + ["vni", "plain", "flags", "res"]))
                kw: dict[str, int] = {
                    "vni": {"vni": UNKNOWN_VNI, "plain": PLAIN_VNI}.get(oddity, VNI),
                    "vxflags": 0 if oddity == "flags" else 0x08,
                    "reserved": 1 if oddity == "res" else 0,
                }
                src = draw(st.sampled_from([MAC_A] * 4 + [MAC_D, GROUP_MAC, ZERO_MAC]))
                kind = draw(st.sampled_from(KINDS))
                group.append(frame_datagram(body_len, kind, src=src, fill=i, **kw))
        # One UDP-GSO send holds 64 KiB at most.
        group = group[: max(1, 65507 // max(1, len(group[0])))]
        if len(group) > 1 and draw(st.booleans()):
            # A shorter last datagram, as a train's tail.
            group[-1] = group[-1][: draw(st.integers(22, len(group[-1])))]
        buffers.append((sender, group))
    return buffers


def _run(
    path: Path,
    rx: socket.socket,
    buffers: list[tuple[str, list[bytes]]],
    senders: dict[str, socket.socket],
    merge: bool,
) -> None:
    """Send the buffers and drain them (the merging or the lone-frame drain)."""
    send_and_drain(path, rx, buffers, senders, lambda: path.loop._drain_udp(rx, merge=merge))


def _fdb(path: Path, mode: int) -> None:
    """3: an empty FDB with room for one learned entry; else `_path`'s modes."""
    if mode == 3:
        path.net.fdb.clear()
        path.net.learn_limit = 1


def _both(
    sockets: dict[str, socket.socket],
    buffers: list[tuple[str, list[bytes]]],
    *,
    fdb_mode: int,
    strict: bool,
    merge: bool,
) -> tuple[dict[str, object], dict[str, object]]:

    def one(stack: ExitStack, accelerated: bool) -> Path:
        path = _path(
            stack, sockets["rx"], accelerated=accelerated, fdb_mode=min(fdb_mode, 2),
            strict=strict,
        )  # fmt: skip
        _fdb(path, fdb_mode)
        _run(path, sockets["rx"], buffers, sockets, merge)
        return path

    def check_c(path: Path) -> None:
        assert fastingress.active(path.loop)

    python, c, _ = both(one, _state, check_c)
    return python, c


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    buffers=frame_buffers(),
    fdb_mode=st.integers(0, 3),
    strict=st.booleans(),
    merge=st.booleans(),
)
def test_the_c_drain_delivers_and_counts_frames_as_the_python_drain_does(
    sockets: dict[str, socket.socket],
    buffers: list[tuple[str, list[bytes]]],
    fdb_mode: int,
    strict: bool,
    merge: bool,
) -> None:
    python, c = _both(sockets, buffers, fdb_mode=fdb_mode, strict=strict, merge=merge)
    assert c == python


@pytest.mark.parametrize("merge", [True, False])
def test_a_udp_train_and_pure_acks_are_delivered_by_c_not_python(
    sockets: dict[str, socket.socket], monkeypatch: pytest.MonkeyPatch, merge: bool
) -> None:
    """Not only equal: no datagram of a UDP train or of a run of pure ACKs goes through the
    per-datagram Python path; the UDP frames reach the latency queue, the ACKs the TAP queue,
    each as it came behind a plain virtio-net header, counted once each on the FDB entry
    (learned at the first, from an empty table)."""

    def refuse(*_args: object) -> None:
        raise AssertionError("a deliverable datagram went to Python")

    monkeypatch.setattr(fastingress, "_deliver", refuse)
    udp = [frame_datagram(1400, (0x0800, 17), fill=i) for i in range(40)]
    acks = [tcp_datagram(seq=1000, ident=i) for i in range(20)]
    with ExitStack() as stack:
        path = _path(stack, sockets["rx"], accelerated=True, fdb_mode=0, strict=False)
        path.net.learn_limit = 4
        _run(path, sockets["rx"], [(MEMBER, udp), (MEMBER, acks)], sockets, merge)
        assert [w for q, w in path.writes if q == "latency"] == [bytes(10) + d[8:] for d in udp]
        assert [w for q, w in path.writes if q == "bulk"] == [bytes(10) + d[8:] for d in acks]
        entry = path.net.fdb[MAC_A]
        assert (entry.remote_ip, entry.learned) == (MEMBER, True)
        # The first frame finds no entry (unknown source) and learns it; the rest count on it.
        assert path.net.counters["rx_frames_unknown_source"] == 1
        assert path.net.counters["fdb_learned"] == 1
        assert (entry.rx_frames, entry.rx_bytes) == (59, 39 * 1414 + 20 * 54)
        assert path.loop._woke


def test_a_static_entry_counts_a_train_and_a_moved_mac_is_learned_once(
    sockets: dict[str, socket.socket],
) -> None:
    """The accounting per run of one MAC: the same values as frame by frame in Python."""
    udp = [frame_datagram(200, (0x0800, 17), src=MAC_A if i < 10 else MAC_D) for i in range(30)]
    for fdb_mode in (1, 2):
        python, c = _both(sockets, [(MEMBER, udp)], fdb_mode=fdb_mode, strict=False, merge=True)
        assert c == python
        fdb = c["fdb"]
        assert isinstance(fdb, dict)
        if fdb_mode == 1:
            assert fdb[MAC_A.hex()] == (MEMBER, False, 10, 10 * 214)
        else:
            # Learned at OTHER_MEMBER: the first frame counts there and moves the entry.
            assert fdb[MAC_A.hex()] == (MEMBER, True, 9, 9 * 214)
            assert c["net"] == {
                "fdb_learn_moved": 1, "fdb_learned": 1, "rx_frames_unknown_source": 1,
            }  # fmt: skip
