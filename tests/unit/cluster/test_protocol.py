"""Cluster wire protocol: framing, sealing under join and node keys, refusals of bad frames."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.cluster import protocol
from overlaynet.cluster.protocol import (
    AuthenticationFailed,
    FrameDecoder,
    FrameKind,
    MalformedFrame,
    ReplayedFrame,
    ReplayGuard,
    StaleFrame,
)
from overlaynet.cluster.state import ClusterError, ErrorKind

from .helpers import seeded_rand

NOW = 1_700_000_000.0
KEY = bytes(range(32))
TO = "10.0.0.1:2377"


def decode_one(data: bytes) -> protocol.Frame:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert decoder.next_frame() is None
    return frame


def test_request_round_trip_with_the_sender_in_clear() -> None:
    data, rid = protocol.seal_request(
        FrameKind.REQUEST, "node1id", KEY, "node.ls", {"x": 1}, to=TO, now=NOW, rand=seeded_rand()
    )
    assert b"node1id" in data and b"node.ls" not in data
    frame = decode_one(data)
    assert (frame.kind, frame.sender) == (FrameKind.REQUEST, "node1id")
    request = protocol.request_from(protocol.open_sealed(frame, KEY, now=NOW))
    assert (request.rid, request.op, request.args, request.ts) == (rid, "node.ls", {"x": 1}, NOW)


def test_frames_split_anywhere_reassemble() -> None:
    rand = seeded_rand()
    stream = b"".join(
        protocol.seal_request(FrameKind.REQUEST, "n", KEY, f"op{i}", {}, to=TO, now=NOW, rand=rand)[
            0
        ]
        for i in range(3)
    )
    decoder = FrameDecoder()
    frames = []
    for byte in stream:
        decoder.receive_data(bytes([byte]))
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    ops = [protocol.open_sealed(f, KEY, now=NOW)["op"] for f in frames]
    assert ops == ["op0", "op1", "op2"]


def test_a_wrong_key_fails_authentication() -> None:
    data, _ = protocol.seal_request(
        FrameKind.JOIN, "digest", KEY, "join", {}, to=TO, now=NOW, rand=seeded_rand()
    )
    with pytest.raises(AuthenticationFailed):
        protocol.open_sealed(decode_one(data), bytes(32), now=NOW)


def test_a_changed_header_fails_authentication() -> None:
    data, _ = protocol.seal_request(
        FrameKind.REQUEST, "nodeA", KEY, "node.ls", {}, to=TO, now=NOW, rand=seeded_rand()
    )
    forged = data.replace(b"nodeA", b"nodeB")
    with pytest.raises(AuthenticationFailed):
        protocol.open_sealed(decode_one(forged), KEY, now=NOW)


def test_join_keys_differ_per_secret_and_node_keys_per_node() -> None:
    assert protocol.derive_join_key("d", "s1") != protocol.derive_join_key("d", "s2")
    assert protocol.derive_join_key("d1", "s") != protocol.derive_join_key("d2", "s")
    cred = bytes(32)
    assert protocol.derive_node_key(cred, "a") != protocol.derive_node_key(cred, "b")


def test_old_and_future_frames_are_refused() -> None:
    rand = seeded_rand()
    old = decode_one(protocol.seal(FrameKind.REQUEST, "n", KEY, {}, now=NOW - 61, rand=rand))
    with pytest.raises(StaleFrame, match="check the clocks"):
        protocol.open_sealed(old, KEY, now=NOW)
    future = decode_one(protocol.seal(FrameKind.REQUEST, "n", KEY, {}, now=NOW + 61, rand=rand))
    with pytest.raises(StaleFrame):
        protocol.open_sealed(future, KEY, now=NOW)


def test_a_replayed_frame_is_refused_within_the_window() -> None:
    frame = decode_one(protocol.seal(FrameKind.REQUEST, "n", KEY, {}, now=NOW, rand=seeded_rand()))
    guard = ReplayGuard()
    protocol.open_sealed(frame, KEY, now=NOW, guard=guard)
    with pytest.raises(StaleFrame, match="replayed"):
        protocol.open_sealed(frame, KEY, now=NOW + 1, guard=guard)


def test_a_frame_stamped_ahead_stays_refused_as_long_as_it_is_acceptable() -> None:
    """A frame from a clock 60 s ahead is acceptable for 120 s after it arrives; its nonce
    must be remembered for all of that time."""
    ahead = NOW + protocol.MAX_CLOCK_SKEW
    frame = decode_one(
        protocol.seal(FrameKind.REQUEST, "n", KEY, {}, now=ahead, rand=seeded_rand())
    )
    guard = ReplayGuard()
    protocol.open_sealed(frame, KEY, now=NOW, guard=guard)
    # Another frame's arrival later on makes the guard forget what it may.
    later = NOW + 2 * protocol.MAX_CLOCK_SKEW - 1
    other = decode_one(
        protocol.seal(FrameKind.REQUEST, "n", KEY, {}, now=later, rand=seeded_rand(2))
    )
    protocol.open_sealed(other, KEY, now=later, guard=guard)
    with pytest.raises(ReplayedFrame):
        protocol.open_sealed(frame, KEY, now=later, guard=guard)


def test_replay_cache_forgets_nonces_outside_the_window_and_stays_bounded() -> None:
    guard = ReplayGuard(window=10, capacity=3)
    for i in range(5):
        guard.check(bytes([i]) * 12, NOW + i, NOW + i)
    assert len(guard._seen) == 3
    guard.check(b"x" * 12, NOW + 100, NOW + 100)
    assert list(guard._seen) == [b"x" * 12]


def test_response_carries_result_or_refusal() -> None:
    rand = seeded_rand()
    ok = decode_one(protocol.seal_result(KEY, "r1", {"a": [1]}, now=NOW, rand=rand))
    assert protocol.open_response(ok, KEY, "r1", now=NOW) == {"a": [1]}
    with pytest.raises(MalformedFrame, match="another request"):
        protocol.open_response(ok, KEY, "r2", now=NOW)
    refusal = ClusterError(ErrorKind.FORBIDDEN, "workers may not")
    no = decode_one(protocol.seal_refusal(KEY, "r1", refusal, now=NOW, rand=rand))
    with pytest.raises(ClusterError, match="workers may not") as info:
        protocol.open_response(no, KEY, "r1", now=NOW)
    assert info.value.kind is ErrorKind.FORBIDDEN


def test_clear_error_frames_become_cluster_errors() -> None:
    frame = decode_one(protocol.encode_error(ErrorKind.INVALID, "invalid join token"))
    assert frame.kind is FrameKind.ERROR
    with pytest.raises(ClusterError, match="invalid join token"):
        protocol.open_response(frame, KEY, "r1", now=NOW)


def test_a_request_frame_is_not_accepted_as_a_response() -> None:
    data, rid = protocol.seal_request(
        FrameKind.REQUEST, "n", KEY, "x", {}, to=TO, now=NOW, rand=seeded_rand()
    )
    with pytest.raises(MalformedFrame, match="expected a response"):
        protocol.open_response(decode_one(data), KEY, rid, now=NOW)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (struct.pack("!I", protocol.MAX_FRAME_BYTES + 1), "exceeds"),
        (struct.pack("!I", 3) + b"abc", "shorter than its header"),
        (struct.pack("!I", 20) + b"GET / HTTP/1.1\r\n\r\n\r\n", "bad magic"),
        (struct.pack("!I", 7) + b"ONCM\x03\x02\x00", "version 3"),
        # A version 1 peer (its frames are not bound to a manager) is told so.
        (struct.pack("!I", 7) + b"ONCM\x01\x02\x00", "version 1"),
        (struct.pack("!I", 7) + b"ONCM\x02\x09\x00", "unknown frame kind"),
        (struct.pack("!I", 9) + b"ONCM\x02\x02\x05ab", "truncated"),
    ],
)
def test_garbage_is_a_malformed_frame_and_breaks_the_stream(data: bytes, reason: str) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    with pytest.raises(MalformedFrame, match=reason):
        decoder.next_frame()
    with pytest.raises(MalformedFrame):
        decoder.next_frame()


def test_sealed_non_json_body_is_malformed() -> None:
    nonce = bytes(12)
    header = protocol._header(FrameKind.REQUEST, "n", nonce)
    body = AESGCM(KEY).encrypt(nonce, b"\xff not json", header)
    with pytest.raises(MalformedFrame, match="not JSON"):
        protocol.open_sealed(decode_one(protocol._framed(header, body)), KEY, now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_malformed(data: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    try:
        while (frame := decoder.next_frame()) is not None:
            if frame.kind is FrameKind.ERROR:
                protocol.decode_error(frame)
            else:
                protocol.open_sealed(frame, KEY, now=NOW)
    except MalformedFrame:
        pass
