"""The C helpers (`accel/egress.c`, `accel/ingress.c`) fed hostile bytes (issue 15: bad input
loses nothing): a container controls what its TAP hands the egress drain (virtio-net header
included), any underlay host what the ingress drain reads. Hypothesis builds frames and
datagrams whose lengths and offsets lie (IHL and data offset 0..15, IPv4 total length off,
truncations 0..60 octets, virtio-net csum_start/csum_offset/hdr_len/gso_size out of range or
0 or 1, VLAN tags, IPv4 options, VXLAN flags not 0x08, GRO buffers whose last datagram is
short) with good frames between them. The process must survive, every good frame must still
arrive, and the C drain must put on the wire and count exactly what the Python drain does
(what it counts as dropped, C counts too). test_accel_hostile_asan runs this module again with
the helpers built under AddressSanitizer and UndefinedBehaviorSanitizer.

Socketpairs stand in for the TAP (as in test_fastegress_tso and test_fastingress: they pass any
virtio-net header, which a real TAP's kernel side would have checked first); loopback only."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel

# The sanitizer run (test_accel_hostile_asan) builds into a directory of its own: its builds
# never land beside the sources, and the test removes them.
if os.environ.get("ONET_HZ_BUILDS"):
    _builds = Path(os.environ["ONET_HZ_BUILDS"])
    accel.build_dirs = lambda: [_builds]

from tests.unit.dataplane import test_fastegress_tso as eg
from tests.unit.dataplane import test_fastingress as ig
from tests.unit.dataplane.test_fastingress import sockets  # noqa: F401

pytestmark = pytest.mark.skipif(
    accel.load("egress") is None or accel.load("ingress") is None,
    reason=f"C helpers unavailable: {accel.why_not('egress') or accel.why_not('ingress')}",
)

#: Examples per test: enough variety for every branch, small enough for 2 shared cores (the
#: module runs well under a minute, also under the sanitizers).
EXAMPLES = int(os.environ.get("ONET_HZ_EXAMPLES", "60"))
MARK = b"GOOD-FRAME"
#: No shrinking: a failure reports its example at once (shrinking one took minutes), which
#: keeps the module's time bounded on a shared machine.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)


def _put(data: bytearray, at: int, value: bytes) -> None:
    """Overwrite octets at `at` if the frame reaches that far (a truncated frame does not)."""
    if at + len(value) <= len(data):
        data[at : at + len(value)] = value


# -- egress: TAP reads -----------------------------------------------------------------------

_SIZES = [0, 1, 2, 3, 13, 14, 24, 60, 65535]


@st.composite
def hostile_reads(draw: st.DrawFn) -> bytes:
    """One TAP read: a virtio-net header whose fields may be anything, and a TCP or UDP frame
    whose header fields lie, or cut short, or random octets."""
    kind = draw(st.sampled_from(["tcp", "tcp", "udp", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=80))
    if kind == "udp":
        frame = bytearray(eg.udp_frame(draw(st.binary(max_size=40))))
    else:
        frame = bytearray(
            eg.tcp_frame(
                draw(st.integers(0, 3)),
                bytes(draw(st.integers(0, 6000))),
                flags=draw(st.sampled_from([0x10, 0x18, 0x19, 0x98, 0x02])),
                ip_options=draw(st.sampled_from([b"", bytes(4), bytes(40)])),
                tcp_options=draw(st.sampled_from([b"", bytes(12), bytes(40)])),
            )
        )
    if draw(st.booleans()):  # IHL / data offset lie (0..15 words)
        frame[14] = 0x40 | draw(st.integers(0, 15))
        ihl = (frame[14] & 0x0F) * 4
        _put(frame, 14 + ihl + 12, bytes((draw(st.integers(0, 15)) << 4,)))
    if draw(st.booleans()):  # IPv4 total length lies
        _put(frame, 16, draw(st.integers(0, 65535)).to_bytes(2, "big"))
    if draw(st.booleans()):  # a VLAN tag, or another EtherType
        tag = draw(st.sampled_from([b"\x81\x00\x00\x05", b"\x88\xa8\x00\x05", b""]))
        frame[12:14] = tag[:2] + frame[12:14] if tag else draw(st.binary(min_size=2, max_size=2))
        frame[14:14] = tag[2:]
    if draw(st.booleans()):  # cut short anywhere, to a runt of 0..60 octets at most
        frame = frame[: draw(st.integers(0, min(len(frame), 60 if draw(st.booleans()) else 9000)))]
    flags = draw(st.sampled_from([0, 1, 1, 2, 3, 0xFF]))
    gso = draw(st.sampled_from([0, 0, 1, 1, 3, 4, 5, 0x81, 0xFF]))

    def field() -> int:
        return draw(st.sampled_from([*_SIZES, len(frame), len(frame) - 1, 34, 16, 6, 1398]))

    header = struct.pack(
        "<BBHHHH", flags, gso, field() & 0xFFFF, field() & 0xFFFF, field() & 0xFFFF,
        field() & 0xFFFF,
    )  # fmt: skip
    if draw(st.integers(0, 9)) == 0:  # a read shorter than the virtio-net header
        return header[: draw(st.integers(0, 9))]
    return header + bytes(frame)


def _good_read(k: int) -> bytes:
    """A frame that must arrive: UDP to the known MAC, nothing left to finish."""
    return bytes(10) + eg.udp_frame(MARK + k.to_bytes(2, "big"))


def _marks(frames: list[bytes]) -> list[int]:
    return [
        int.from_bytes(one[one.index(MARK) + len(MARK) :][:2], "big")
        for one in frames
        if MARK in one
    ]


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), phases=PHASES
)
@given(st.lists(st.tuples(hostile_reads(), st.booleans()), min_size=1, max_size=12))
def test_hostile_tap_reads_do_not_crash_the_c_egress_drain_and_lose_no_good_frame(
    hostile: list[tuple[bytes, bool]],
) -> None:
    reads: list[bytes] = []
    for k, (read, good_after) in enumerate(hostile):
        reads.append(read)
        if good_after or k == 0:
            reads.append(_good_read(k))
    c = eg.run(reads, "on")  # run() checks every datagram sent is within the MTU
    assert c["c"]
    good = [k for k, (_, after) in enumerate(hostile) if after or k == 0]
    assert _marks(c["frames"]) == good
    # Every hostile read left as frames or was counted (dropped, left to Python, finished).
    assert len(c["frames"]) - len(good) + sum(c["counters"].values()) >= len(hostile)
    # And what left is what the Python drain sends (`segment.wire_frames`, octet for octet).
    # Its counters differ by design (C cuts a tiny MSS that fits its table, Python counts
    # tap_offload_error besides the reason): not compared.
    python = eg.run(reads, "off")  # within the MTU too (a frame over it is dropped, counted)
    assert _marks(python["frames"]) == good
    assert eg.by_flow(c["frames"]) == eg.by_flow(python["frames"])


# -- ingress: GRO buffers from the underlay ---------------------------------------------------


@st.composite
def hostile_datagrams(draw: st.DrawFn) -> bytes:
    """One VXLAN datagram whose header fields lie (flags, IHL, data offset, total length), or
    cut short, or random octets."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=70))
    datagram = bytearray(
        ig.tcp_datagram(
            vni=draw(st.sampled_from([ig.VNI, ig.VNI, ig.PLAIN_VNI, ig.UNKNOWN_VNI])),
            payload=bytes(draw(st.sampled_from([0, 1, 7, 1398, 1450, 1500]))),
            flags=draw(st.sampled_from([0x10, 0x10, 0x18, 0x02, 0x11])),
            ip_options=draw(st.sampled_from([b"", bytes(4), bytes(40)])),
            tcp_options=draw(st.sampled_from([b"", bytes(12), bytes(40)])),
            vxflags=draw(st.sampled_from([0x08, 0x08, 0x00, 0x0C, 0xFF])),
            reserved=draw(st.sampled_from([0, 0, 1])),
        )
    )
    if draw(st.booleans()):  # IHL / data offset lie
        datagram[22] = 0x40 | draw(st.integers(0, 15))
        _put(datagram, 54, bytes((draw(st.integers(0, 15)) << 4,)))
    if draw(st.booleans()):  # IPv4 total length lies
        _put(datagram, 24, draw(st.integers(0, 65535)).to_bytes(2, "big"))
    if draw(st.booleans()):  # another EtherType, or a VLAN tag
        datagram[20:22] = draw(st.sampled_from([b"\x81\x00", b"\x86\xdd", b"\x08\x06"]))
    if draw(st.booleans()):
        datagram = datagram[: draw(st.integers(0, min(len(datagram), 70)))]
    return bytes(datagram)


def _good_datagram(k: int) -> bytes:
    """A frame that must arrive: ARP-sized, from a member, of the known network."""
    eth = ig.MAC_B + ig.MAC_A + b"\x08\x06"
    return ig.vxlan(ig.VNI) + eth + MARK + k.to_bytes(2, "big") + bytes(16)


@st.composite
def gro_buffers(draw: st.DrawFn) -> list[tuple[str, list[bytes]]]:
    """GRO buffers of hostile datagrams (one size, the last shorter or not), each followed
    or not by a good datagram of its own."""
    buffers: list[tuple[str, list[bytes]]] = []
    for _ in range(draw(st.integers(1, 6))):
        sender = draw(st.sampled_from([ig.MEMBER] * 4 + [ig.STRANGER]))
        first = draw(hostile_datagrams())
        group = [first]
        if first:
            for _ in range(draw(st.integers(0, 4))):
                more = draw(hostile_datagrams())
                group.append((more + bytes(len(first)))[: len(first)])
            if len(group) > 1 and draw(st.booleans()):
                group[-1] = group[-1][: draw(st.integers(1, len(first)))]
        buffers.append((sender, group))
        if draw(st.booleans()):
            buffers.append((ig.MEMBER, [_good_datagram(len(buffers))]))
    buffers.append((ig.MEMBER, [_good_datagram(len(buffers))]))
    return buffers


@settings(
    max_examples=3 * EXAMPLES,  # cheap: no receive timeout per example, unlike egress
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=PHASES,
)
@given(buffers=gro_buffers(), strict=st.booleans())
def test_hostile_underlay_datagrams_do_not_crash_the_c_ingress_drain_and_lose_no_good_frame(
    sockets: dict[str, socket.socket],  # noqa: F811
    buffers: list[tuple[str, list[bytes]]],
    strict: bool,
) -> None:
    python, c, _ = ig._both(sockets, buffers, fdb_mode=1, strict=strict)
    good = [k for k, (_, group) in enumerate(buffers) if MARK in group[0]]
    writes = c["writes"]
    assert isinstance(writes, list)
    assert _marks([written for _, written in writes]) == good
    assert c == python


@pytest.mark.parametrize("size", [0, 1, 9])
def test_a_read_shorter_than_its_virtio_net_header_is_counted_as_python_counts_it(
    size: int,
) -> None:
    """Regression: C took such a read as a frame (its length less the header wrapped around)
    and counted tx_drop_malformed; Python counts a runt. Now C leaves it to Python."""
    reads = [bytes(size), _good_read(0)]
    c, python = eg.run(reads, "on"), eg.run(reads, "off")
    assert c["c"]
    assert _marks(c["frames"]) == [0]
    assert c["counters"]["tap_runt"] == python["counters"]["tap_runt"] == 1
    assert c["counters"]["tx_drop_malformed"] == 0
