"""Offload-mode chunks, sans-IO: how a TCP super-frame (virtio-net header + frame, up to ~64 KB)
crosses the underlay whole between two overlaynet agents, and how the receiver reassembles it.

Not VXLAN, on purpose: the datagrams go to OFFLOAD_PORT (not 4789, which a kernel VTEP listens
on and which Wireshark decodes as VXLAN), and the first octet has VXLAN's I flag clear, so even
one sent to 4789 by mistake is dropped by a Linux vxlan device (vxlan_rcv refuses a header
without the VNI flag) instead of being decapsulated into garbage.

Chunk header (16 octets), then up to `chunk` octets of the super-frame:

    0      1      2      3      4      5      6      7
    | 0x00 | 'O'  | 'N'  | ver  |        VNI         | count |
    |          frame id         | index| 0    | 0    | 0     |

`count` chunks (1..255) per frame, `index` 0..count-1; every chunk but the last carries the same
number of octets (what one UDP-GSO send produces), so the receiver needs no lengths. The frame
id is per sender, counting up. A chunk lost means its frame is dropped and counted (TCP in the
containers retransmits, as after any loss); duplicates and garbage are counted and harmless. A
one-chunk frame (an ACK) keeps no state: like a VXLAN datagram, each copy of it is passed on.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Unassigned by IANA (4789 is VXLAN, 4790 VXLAN-GPE, which Wireshark decodes): offload
#: datagrams never land on a VXLAN socket, kernel or ours.
OFFLOAD_PORT = 4799
#: The largest datagram payload that fits a 1500-octet underlay without IP fragments
#: (1500 - IPv4 20 - UDP 8): chunks up to it leave in UDP-GSO sends, larger ones as single
#: datagrams the kernel fragments.
GSO_CHUNK_LIMIT = 1472
#: Chunk payload per datagram by default: one chunk and its header fill GSO_CHUNK_LIMIT.
DEFAULT_CHUNK = 1456
#: The largest chunk taken from a path MTU: what a 9000-octet (jumbo) underlay carries. A larger
#: MTU (loopback's 65536) would mean one or two chunks per frame, no faster, and UDP GSO's
#: 64 KB limit per send is then reached with one chunk.
MAX_AUTO_CHUNK = 9000 - 28 - 16
MAGIC = b"\x00ON"
VERSION = 1
HEADER_LEN = 16
PREFIX = MAGIC + bytes((VERSION,))
#: Frames at most 255 chunks (one octet); 64 KB in 1456-octet chunks is 46.
MAX_CHUNKS = 255
#: Frames being reassembled at once, over all senders: past this the oldest is dropped as lost.
#: In-order delivery keeps one or two open per sender; the bound only stops garbage (a stream
#: of first chunks) from growing memory.
MAX_PENDING = 64
#: Completed frame ids remembered, so a late duplicate chunk is counted as one, not left open.
RECENT_DONE = 256
#: The last four header octets of chunk i (index, then three zero octets).
_INDEX = [bytes((i, 0, 0, 0)) for i in range(MAX_CHUNKS)]


class ChunkError(ValueError):
    """A datagram that is not a valid chunk; `reason` is its counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_header(vni: int, frame_id: int, index: int, count: int) -> bytes:
    """The 16-octet chunk header."""
    if not 1 <= count <= MAX_CHUNKS or not 0 <= index < count:
        raise ValueError(f"chunk {index} of {count}: need 0 <= index < count <= {MAX_CHUNKS}")
    return (
        PREFIX
        + vni.to_bytes(3, "big")
        + bytes((count,))
        + (frame_id & 0xFFFFFFFF).to_bytes(4, "big")
        + bytes((index, 0, 0, 0))
    )


def split(vni: int, frame_id: int, frame: bytes, chunk: int) -> list[bytes | memoryview]:
    """`frame` as header, piece, header, piece, ...: `chunk` octets per piece (the last may be
    shorter). Ready for one sendmsg with UDP_SEGMENT = HEADER_LEN + chunk."""
    if chunk <= 0:
        raise ValueError("chunk size must be positive")
    count = -(-len(frame) // chunk) or 1
    if count > MAX_CHUNKS:
        raise ValueError(f"{len(frame)} octets need {count} chunks > {MAX_CHUNKS}")
    head = PREFIX + vni.to_bytes(3, "big") + bytes((count,)) + (frame_id & 0xFFFFFFFF).to_bytes(4)
    view = memoryview(frame)
    parts: list[bytes | memoryview] = []
    for i in range(count):
        parts += (head + bytes((i, 0, 0, 0)), view[i * chunk : (i + 1) * chunk])
    return parts


@dataclass(frozen=True, slots=True)
class Chunk:
    """One decoded chunk."""

    vni: int
    frame_id: int
    index: int
    count: int
    payload: bytes


def decode(datagram: bytes) -> Chunk:
    """One datagram → Chunk, or ChunkError naming the counter."""
    if len(datagram) < HEADER_LEN:
        raise ChunkError("offload_short")
    if datagram[:4] != PREFIX:
        raise ChunkError("offload_bad_magic")
    count, index = datagram[7], datagram[12]
    if not count or index >= count or datagram[13:16] != b"\x00\x00\x00":
        raise ChunkError("offload_bad_header")
    return Chunk(
        int.from_bytes(datagram[4:7], "big"),
        int.from_bytes(datagram[8:12], "big"),
        index,
        count,
        datagram[HEADER_LEN:],
    )


class _Pending:
    __slots__ = ("count", "got", "parts", "size")

    def __init__(self, count: int) -> None:
        self.count = count
        self.parts: list[bytes | memoryview | None] = [None] * count
        self.got = 0
        self.size = -1  # octets of every chunk but the last, once one of those is seen


class Reassembler:
    """Chunks in (any order, duplicated, lost, garbage), whole frames out.

    `feed` returns (vni, frame) when a datagram completes a frame. Counters: offload_frames
    (completed), offload_frames_lost (given up: evicted by newer frames or by `expire`),
    offload_duplicate, and the ChunkError reasons (offload_short, offload_bad_magic,
    offload_bad_header, offload_bad_size: a chunk inconsistent with its frame's others).
    """

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.counters: Counter[str] = Counter()
        self.max_pending = max_pending
        self._pending: OrderedDict[tuple[str, int, int], _Pending] = OrderedDict()
        self._done: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._marked: set[tuple[str, int, int]] = set()
        #: Another reassembly that shares these counters and sweeps (the C drain's,
        #: `dataplane.fastoffload`): `expire` calls it, it returns the frames it gave up.
        self.companion: Callable[[], int] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def feed(self, sender: str, datagram: bytes) -> tuple[int, bytes] | None:
        try:
            chunk = decode(datagram)
        except ChunkError as error:
            self.counters[error.reason] += 1
            return None
        if chunk.count == 1:
            self.counters["offload_frames"] += 1
            return chunk.vni, chunk.payload
        key = (sender, chunk.vni, chunk.frame_id)
        if key in self._done:
            self.counters["offload_duplicate"] += 1
            return None
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = _Pending(chunk.count)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.counters["offload_frames_lost"] += 1
        elif entry.count != chunk.count:
            self.counters["offload_bad_header"] += 1
            return None
        if entry.parts[chunk.index] is not None:
            self.counters["offload_duplicate"] += 1
            return None
        n = len(chunk.payload)
        last = chunk.index == chunk.count - 1
        if last:
            if entry.size >= 0 and n > entry.size:
                self.counters["offload_bad_size"] += 1
                return None
        elif entry.size < 0:
            last_part = entry.parts[-1]
            if last_part is not None and len(last_part) > n:
                self.counters["offload_bad_size"] += 1
                return None
            entry.size = n
        elif n != entry.size:
            self.counters["offload_bad_size"] += 1
            return None
        entry.parts[chunk.index] = chunk.payload
        entry.got += 1
        if entry.got < entry.count:
            return None
        del self._pending[key]
        self._finish(key)
        return chunk.vni, b"".join(entry.parts)  # type: ignore[arg-type]

    def feed_buffer(self, sender: str, data: bytes, seg: int) -> list[tuple[int, bytes]]:
        """A receive buffer of `seg`-octet datagrams (the last may be shorter: UDP GRO), what
        `feed` of each would give, in order. Runs of consecutive chunks of one frame are
        checked and stored in bulk (one comparison of all their headers): per-chunk work in
        Python is what limits this path; anything unusual goes chunk by chunk through `feed`."""
        out: list[tuple[int, bytes]] = []
        size = len(data)
        s = 0
        ones = 0
        while s < size:
            if (
                seg > HEADER_LEN
                and data[s + 7 : s + 8] == b"\x01"
                and data[s : s + 4] == PREFIX
                and data[s + 12 : s + 16] == _INDEX[0]
            ):
                # A one-chunk frame (an ACK, a UDP datagram): stateless, as in `feed`, and
                # the most common datagram of all (a GRO buffer of UDP is nothing else).
                out.append(
                    (int.from_bytes(data[s + 4 : s + 7], "big"), data[s + HEADER_LEN : s + seg])
                )
                ones += 1
                s += seg
                continue
            n = 0
            if seg >= HEADER_LEN and size - s > seg and data[s : s + 4] == PREFIX:
                count, index = data[s + 7], data[s + 12]
                n = min(count - index, -(-(size - s) // seg)) if index < count else 0
            if n >= 2:
                head = data[s : s + 12]
                got = b"".join([data[s + j * seg : s + j * seg + HEADER_LEN] for j in range(n)])
                want = b"".join([head + _INDEX[index + j] for j in range(n)])
                if got == want:
                    done = self._store_run(sender, data, s, seg, n, head, index, count)
                    if done is not False:
                        if isinstance(done, tuple):
                            out.append(done)
                        s += n * seg
                        continue
            done = self.feed(sender, data[s : s + seg])
            if done is not None:
                out.append(done)
            s += seg
        if ones:
            self.counters["offload_frames"] += ones
        return out

    def _store_run(
        self,
        sender: str,
        data: bytes,
        s: int,
        seg: int,
        n: int,
        head: bytes,
        index: int,
        count: int,
    ) -> tuple[int, bytes] | bool | None:
        """Store `n` validated consecutive chunks (index `index` on) of one frame; the frame
        when that completes it, None when not yet, False when the run needs the careful path
        (duplicates, sizes to check against chunks seen before)."""
        key = (sender, int.from_bytes(head[4:7], "big"), int.from_bytes(head[8:12], "big"))
        if key in self._done:
            return False
        entry = self._pending.get(key)
        end = s + n * seg if s + n * seg < len(data) else len(data)
        last_len = end - (s + (n - 1) * seg) - HEADER_LEN
        full = seg - HEADER_LEN
        # Views, not copies: the frame is copied once, by the join that completes it (a
        # pending frame keeps its receive buffer alive until then).
        view = memoryview(data)
        # Every chunk but the frame's last is `full`; a shorter one may only end the frame.
        if last_len > full or (last_len < full and index + n != count):
            return False
        if entry is None:
            if n == count:
                pieces = [view[s + j * seg + HEADER_LEN : s + (j + 1) * seg] for j in range(n - 1)]
                pieces.append(view[s + (n - 1) * seg + HEADER_LEN : end])
                self._finish(key)
                return key[1], b"".join(pieces)
            entry = self._pending[key] = _Pending(count)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.counters["offload_frames_lost"] += 1
        else:
            last_part = entry.parts[-1]
            if (
                entry.count != count
                or entry.size not in (-1, full)
                or (last_part is not None and len(last_part) > full)
                or any(p is not None for p in entry.parts[index : index + n])
            ):
                return False  # duplicates or inconsistent sizes: counted one by one
        entry.size = full
        parts = entry.parts
        for j in range(n - 1):
            parts[index + j] = view[s + j * seg + HEADER_LEN : s + (j + 1) * seg]
        parts[index + n - 1] = view[s + (n - 1) * seg + HEADER_LEN : end]
        entry.got += n
        if entry.got < count:
            return None
        del self._pending[key]
        self._finish(key)
        return key[1], b"".join(parts)  # type: ignore[arg-type]

    def _finish(self, key: tuple[str, int, int]) -> None:
        self._done[key] = None
        if len(self._done) > RECENT_DONE:
            self._done.popitem(last=False)
        self.counters["offload_frames"] += 1

    def expire(self) -> int:
        """Give up the frames that were already incomplete at the previous call (the loop
        calls this every sweep interval, seconds: chunks of one frame leave in one send, so
        a frame still open that long will not complete); returns how many."""
        stale = [key for key in self._pending if key in self._marked]
        for key in stale:
            del self._pending[key]
        self._marked = set(self._pending)
        lost = len(stale) + (self.companion() if self.companion is not None else 0)
        if lost:
            self.counters["offload_frames_lost"] += lost
        return lost
