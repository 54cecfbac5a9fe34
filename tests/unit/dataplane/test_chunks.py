"""Offload-mode chunks (wire/chunks.py): the codec and the reassembly, sans-IO: reordering,
duplicates, a lost chunk (the frame dropped and counted), garbage (counted, never a crash)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.wire import chunks, vxlan

SENDER = "192.168.0.11"


def datagrams(vni: int, frame_id: int, frame: bytes, chunk: int) -> list[bytes]:
    parts = chunks.split(vni, frame_id, frame, chunk)
    return [bytes(parts[i]) + bytes(parts[i + 1]) for i in range(0, len(parts), 2)]


def test_header_round_trips_and_is_not_vxlan() -> None:
    header = chunks.encode_header(4097, 7, 2, 5)
    assert len(header) == chunks.HEADER_LEN
    decoded = chunks.decode(header + b"xyz")
    assert (decoded.vni, decoded.frame_id, decoded.index, decoded.count) == (4097, 7, 2, 5)
    assert decoded.payload == b"xyz"
    # VXLAN's I flag is clear: a Linux vxlan device (and our VXLAN decoder) refuses it.
    assert not header[0] & vxlan.FLAG_I
    with pytest.raises(Exception, match="no_i_flag"):
        vxlan.decode(header + bytes(14))
    assert chunks.OFFLOAD_PORT != vxlan.VXLAN_PORT


def test_split_fills_chunks_but_the_last() -> None:
    frame = bytes(range(256)) * 20  # 5120 octets
    out = datagrams(1, 1, frame, 1456)
    assert [len(d) - chunks.HEADER_LEN for d in out] == [1456, 1456, 1456, 752]
    assert all(len(d) <= chunks.GSO_CHUNK_LIMIT for d in out)


@settings(max_examples=200, deadline=None)
@given(
    frame=st.binary(min_size=1, max_size=20000),
    chunk=st.integers(min_value=64, max_value=4000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    dups=st.integers(min_value=0, max_value=5),
)
def test_any_order_with_duplicates_yields_a_chunked_frame_exactly_once(
    frame: bytes, chunk: int, seed: int, dups: int
) -> None:
    out = datagrams(4097, 9, frame, chunk)
    rng = random.Random(seed)
    stream = out + [rng.choice(out) for _ in range(dups)]
    rng.shuffle(stream)
    r = chunks.Reassembler()
    done = [x for x in (r.feed(SENDER, d) for d in stream) if x is not None]
    assert r.pending == 0
    if len(out) > 1:
        assert done == [(4097, frame)]
        assert r.counters["offload_frames"] == 1
        assert r.counters["offload_duplicate"] == dups
    else:
        # A one-chunk frame is passed on as a VXLAN datagram is: each copy (no state kept).
        assert done == [(4097, frame)] * (1 + dups)


@settings(max_examples=100, deadline=None)
@given(
    frame=st.binary(min_size=200, max_size=10000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_a_lost_chunk_drops_its_frame_counted_and_the_next_frame_still_passes(
    frame: bytes, seed: int
) -> None:
    rng = random.Random(seed)
    first = datagrams(5, 1, frame, 100)
    first.pop(rng.randrange(len(first)))
    second = datagrams(5, 2, frame[::-1], 100)
    r = chunks.Reassembler()
    done = [x for x in (r.feed(SENDER, d) for d in first + second) if x is not None]
    assert done == [(5, frame[::-1])]
    assert r.expire() == 0  # first sweep: only marks what is open
    assert r.expire() == 1  # still open a sweep later: given up
    assert r.counters["offload_frames_lost"] == 1 and r.pending == 0


def test_pending_frames_are_bounded_and_evictions_counted() -> None:
    r = chunks.Reassembler(max_pending=4)
    for frame_id in range(10):
        assert r.feed(SENDER, datagrams(1, frame_id, bytes(300), 100)[0]) is None
    assert r.pending == 4
    assert r.counters["offload_frames_lost"] == 6


def test_same_frame_id_from_two_senders_does_not_mix() -> None:
    a, b = datagrams(1, 3, b"a" * 300, 100), datagrams(1, 3, b"b" * 300, 100)
    r = chunks.Reassembler()
    got = [
        r.feed(s, d)
        for pair in zip(a, b, strict=True)
        for s, d in zip(("x", "y"), pair, strict=True)
    ]
    assert [g for g in got if g is not None] == [(1, b"a" * 300), (1, b"b" * 300)]


def test_inconsistent_chunks_are_refused_and_counted() -> None:
    r = chunks.Reassembler()
    good = datagrams(1, 1, bytes(300), 100)
    assert r.feed(SENDER, good[0]) is None
    # Chunk 1 claiming another count, then one of a wrong size.
    assert r.feed(SENDER, chunks.encode_header(1, 1, 1, 4) + bytes(100)) is None
    assert r.feed(SENDER, chunks.encode_header(1, 1, 1, 3) + bytes(99)) is None
    assert r.counters["offload_bad_header"] == 1 and r.counters["offload_bad_size"] == 1
    assert r.feed(SENDER, good[1]) is None
    assert r.feed(SENDER, good[2]) == (1, bytes(300))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=30))
def test_garbage_is_counted_and_never_raises(junk: list[bytes]) -> None:
    r = chunks.Reassembler()
    for d in junk:
        r.feed(SENDER, d)
        r.feed(SENDER, chunks.PREFIX + d)
    errors = sum(
        r.counters[k]
        for k in ("offload_short", "offload_bad_magic", "offload_bad_header", "offload_bad_size")
    )
    handled = errors + r.counters["offload_frames"] + r.counters["offload_duplicate"]
    assert handled + r.pending * 255 >= 0  # no exception is the property; counters add up
    assert errors >= sum(1 for d in junk if d[:4] != chunks.PREFIX or len(d) < 16)


def test_bad_magic_and_short_are_named() -> None:
    r = chunks.Reassembler()
    r.feed(SENDER, b"\x08" + bytes(30))
    r.feed(SENDER, b"\x00ON")
    assert r.counters["offload_bad_magic"] == 1 and r.counters["offload_short"] == 1


def gro_buffers(stream: list[bytes]) -> list[tuple[bytes, int]]:
    """Consecutive datagrams as UDP GRO hands them over: equal sizes, a shorter one last."""
    out: list[tuple[bytes, int]] = []
    i = 0
    while i < len(stream):
        seg = len(stream[i])
        j = i + 1
        while j < len(stream) and len(stream[j]) == seg and j - i < 64:
            j += 1
        if j < len(stream) and len(stream[j]) < seg and j - i < 64:
            j += 1
        out.append((b"".join(stream[i:j]), seg))
        i = j
    return out


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.binary(min_size=1, max_size=6000), min_size=1, max_size=4),
    chunk=st.integers(min_value=16, max_value=1500),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    shuffle=st.booleans(),
    drop=st.booleans(),
    dups=st.integers(min_value=0, max_value=3),
)
def test_gro_buffers_give_what_datagram_by_datagram_gives(
    frames: list[bytes], chunk: int, seed: int, shuffle: bool, drop: bool, dups: int
) -> None:
    rng = random.Random(seed)
    stream = [d for i, f in enumerate(frames) for d in datagrams(3, i, f, chunk)]
    if drop:
        stream.pop(rng.randrange(len(stream)))
    for _ in range(dups if stream else 0):
        k = rng.randrange(len(stream))
        stream.insert(k, stream[k])
    if shuffle:
        rng.shuffle(stream)
    one, bulk = chunks.Reassembler(), chunks.Reassembler()
    expected = [x for x in (one.feed(SENDER, d) for d in stream) if x is not None]
    got = [x for data, seg in gro_buffers(stream) for x in bulk.feed_buffer(SENDER, data, seg)]
    assert got == expected
    assert bulk.counters == one.counters and bulk.pending == one.pending


def test_a_frame_across_two_buffers_is_stored_in_bulk() -> None:
    frame = bytes(range(256)) * 256  # 65,536 octets: 46 chunks of 1456
    stream = datagrams(1, 1, frame, chunks.DEFAULT_CHUNK)
    r = chunks.Reassembler()
    first = b"".join(stream[:44])
    assert r.feed_buffer(SENDER, first, len(stream[0])) == []
    assert r.pending == 1
    assert r.feed_buffer(SENDER, b"".join(stream[44:]), len(stream[0])) == [(1, frame)]
    assert r.counters == {"offload_frames": 1}
