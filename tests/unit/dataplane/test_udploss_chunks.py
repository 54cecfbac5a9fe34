"""`chunks.Reassembler.feed_buffer`'s path for one-chunk frames (a GRO buffer of UDP datagrams in
offload mode is nothing else): the same frames and counters as `feed` of each datagram."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overlaynet.wire import chunks


def _buffer(specs: list[tuple[int, int, bool]], seg: int) -> bytes:
    """Datagrams of `seg` octets (the last may be shorter): one-chunk frames, or with `broken`
    a chunk header a one-chunk frame must not have (index past count, non-zero padding)."""
    out = b""
    for i, (vni, fill, broken) in enumerate(specs):
        head = bytearray(chunks.encode_header(vni, 1000 + i, 0, 1))
        if broken:
            head[13] = 1
        out += bytes(head) + bytes([fill]) * (seg - chunks.HEADER_LEN)
    return out


@given(
    st.lists(
        st.tuples(st.integers(0, 2**24 - 1), st.integers(0, 255), st.booleans()),
        min_size=1,
        max_size=30,
    ),
    st.integers(chunks.HEADER_LEN + 1, 200),
    st.integers(0, 50),
)
def test_one_chunk_frames_in_a_buffer_give_what_feed_gives(
    specs: list[tuple[int, int, bool]], seg: int, cut: int
) -> None:
    data = _buffer(specs, seg)
    data = data[: max(1, len(data) - min(cut, seg - 1))]  # the last datagram shorter
    bulk, single = chunks.Reassembler(), chunks.Reassembler()
    got = bulk.feed_buffer("h1", data, seg)
    want = [single.feed("h1", data[s : s + seg]) for s in range(0, len(data), seg)]
    assert got == [w for w in want if w is not None]
    assert bulk.counters == single.counters


def test_a_buffer_of_one_chunk_frames_counts_each_as_a_frame() -> None:
    r = chunks.Reassembler()
    out = r.feed_buffer("h1", _buffer([(7, i, False) for i in range(44)], 1468), 1468)
    assert out == [(7, bytes([i]) * 1452) for i in range(44)]
    assert r.counters["offload_frames"] == 44
