"""The C egress drain (`accel/egress.c`) behind `HotLoop._drain_tap`, for plain RFC networks.

C does the per-frame work: reading a TAP queue until EAGAIN or the budget into one buffer and
grouping the frames into the batches the Python drain makes (same rules: equal-size frames of
one flow and destination MAC, a shorter frame ends a batch, GSO limits, parked interleaved
flows, nothing held past the drain) and sending the batches with UDP GSO, iovecs pointing into
the buffer. Where a batch goes is Python's decision, made once per destination MAC and kept in
C's table per TAP queue (`eg_learn`: the FDB entry's address, or every peer for unknown
unicast); the table is dropped whenever the network's FDB table (`fdb.generation`) or its peers
changed, so C sends only where the Python drain would. C picks the socket by the same
`flow_hash` (zlib's crc32, in C) and counts per destination; after each drain Python folds the
counts into the `FdbEntry` each one was made for and into the network's counters (the same
`network vtep` shows for the Python path). A batch to a MAC C does not know yet is an event:
Python resolves it, teaches C and C sends it. Frames the batching does not take go to
`HotLoop._egress_one`, unchanged. C's counts move at the drain's end, just after its sends.
This took a Python pass per batch (a TSO super-frame's ~46 segments) off the hot path
(issue 15, CPU per byte): the sending VTEP's share of all CPU time in libpython went
from 9.4 % to 5.0 % and in _ctypes/libffi from 2.2 % to 0.2 % (4 streams at MTU 1450, 8.8 ->
9.7 Gb/s; `perf record -a`, by process and shared object: what
`benchmarks/profile_vtep.py --path a2a --streams 4 --system` tabulates).

With a virtio-net header (batch mode) the loop turns the TAP's offloads on while this drain
serves the network (`HotLoop._tso_wanted`): a read is then a TCP super-frame (TSO4) or a frame
with a partial checksum, and C cuts the super-frame into MSS segments in place and finishes every
checksum, octet for octet what `segment.wire_frames` makes (tests/unit/dataplane/
test_fastegress_tso.py); the segments then batch as frames read one by one did. One read per
super-frame instead of one per segment: the sending VTEP's syscalls were 77 % of it
(benchmarks/profiles/accel-egress.md). A read C cannot finish goes to `HotLoop._egress_offloaded`
(Python's `segment`, which counts what it refuses). Counted: `tx_tso_segmented` (super-frames
cut here), `tx_tso_segments`, `tx_csum_finished`.

Used only where it is exact (`HotLoop._drain_tap` decides per drain); without a compiler, with
`OVERLAYNET_ACCEL=off` or `--accel off` the Python drain does everything, as before, and the
TAP's offloads stay off (frames queued under them drain through `_drain_tap_offload`).
"""

from __future__ import annotations

import array
import ctypes
import errno
import mmap
import socket
import sys
from typing import TYPE_CHECKING

from overlaynet.dataplane import accel
from overlaynet.dataplane.fdb import FdbEntry, generation
from overlaynet.dataplane.switching import Network, flow_hash

if TYPE_CHECKING:
    from overlaynet.dataplane.hotpath import HotLoop

#: The helper's name for `accel.load`.
HELPER = "egress"
#: The C side's interface version (`eg_abi`): a stale build with another one is not used.
ABI = 4
#: Frames one C drain reads before the loop looks at its other fds (open batches are carried
#: to the queue's next drain, so the budget does not cut batches short). 32, as DRAIN_BUDGET:
#: against 64, the same throughput (1 stream 4.99 vs 4.50, 5.27 vs 5.41 Gb/s) and a lower
#: loaded ping p50 (0.36 vs 0.53, 0.41 vs 0.52 ms) in two e2e runs; before batches were
#: carried, smaller budgets cost a quarter of the throughput (benchmarks/profiles/accel-egress.md).
ACCEL_DRAIN_BUDGET = 32
#: Frames the frame table has room for (a `--accel-budget` above is cut to this): the segments
#: of TCP super-frames cut in C count (a 64 KB one at MTU 1450 makes 47), and the C side keeps
#: 64 entries free before each read (EG_TSO_SEGMENTS), so ~9 super-frames fit one carried run.
MAX_FRAMES = 512
#: Buffer octets per frame: an MTU-sized frame (9000-octet jumbo overlays included) fits; the
#: C side stops reading when less than one maximal read (and a super-frame's segment headers)
#: is left, so larger frames only end a drain early.
_PER_FRAME = 9216
#: From hotpath: one maximal read (the C side's EG_READ_SIZE).
_READ_SIZE = 65536 + 64
#: Octets of a queue's buffer: 256 MTU-sized frames, or ~33 super-frames cut into segments
#: (anonymous memory: resident only once used).
_BUFFER = 256 * _PER_FRAME + _READ_SIZE
#: Destinations of one queue's table (the C side's EG_SLOTS): FDB entries and the flood slot.
#: Beyond, batches to further MACs are sent by Python, as before (correct, only slower).
SLOTS = 1024
_EV_ONE = 1
_EV_BATCH = 2
_EV_RAW = 3
_NATIVE = sys.byteorder
#: Octets of a frame `flow_hash` looks at (it reads at most 40).
_HASHED = 64

# Indices of a queue's counts (the C side's EG_C_*): what one drain counted, folded after it.
_GSO_BATCHES, _UNKNOWN, _FALLBACK, _TOO_BIG, _ERROR, _DIRTY, _COUNTED = range(7)
_TSO_SEGMENTED, _TSO_SEGMENTS, _CSUM, _STATUS, _FRAMES, _ACTED, _CARRIED = range(7, 14)
_NCOUNTS = 14
#: Network counters of the C side's sends, by their index in the counts.
_SEND_COUNTERS = (
    (_GSO_BATCHES, "tx_gso_batches"),
    (_UNKNOWN, "tx_unknown_unicast"),
    (_FALLBACK, "tx_gso_fallback"),
    (_TOO_BIG, "tx_drop_too_big"),
    (_ERROR, "tx_error"),
)

_u32 = ctypes.c_uint32
_ptr = ctypes.c_void_p


class _Params(ctypes.Structure):
    """`struct eg_params`: one queue's drain, passed by pointer (one ctypes argument instead
    of 17 per drain)."""

    _fields_ = [
        ("st", _ptr), ("buf", _ptr), ("off", _ptr), ("len", _ptr), ("next", _ptr), ("ev", _ptr),
        ("table", _ptr), ("tx", _ptr), ("tx_gso", _ptr), ("hdr", _ptr), ("slot_counts", _ptr),
        ("dirty", _ptr), ("counts", _ptr), ("fd", ctypes.c_int32), ("cap", _u32),
        ("maxframes", _u32), ("budget", _u32), ("skip", _u32), ("shortest", _u32),
        ("limit", _u32), ("overhead", _u32), ("ntx", _u32), ("port", _u32), ("fresh", _u32),
        ("last", _u32),
    ]  # fmt: skip


def _declare(lib: ctypes.CDLL) -> None:
    """Argument types: ctypes converts exactly (an unsigned address does not overflow)."""
    lib.eg_abi.argtypes = []
    lib.eg_abi.restype = ctypes.c_int
    lib.eg_state_size.argtypes = []
    lib.eg_state_size.restype = ctypes.c_int
    lib.eg_table_size.argtypes = []
    lib.eg_table_size.restype = ctypes.c_int
    lib.eg_slots.argtypes = []
    lib.eg_slots.restype = ctypes.c_int
    lib.eg_run.argtypes = [_ptr]
    lib.eg_run.restype = ctypes.c_int
    lib.eg_run_flush.argtypes = [_ptr]
    lib.eg_run_flush.restype = ctypes.c_int
    lib.eg_act.argtypes = [_ptr, ctypes.c_int, ctypes.c_int]
    lib.eg_act.restype = ctypes.c_int
    lib.eg_learn.argtypes = [_ptr, ctypes.c_char_p, ctypes.c_int, _ptr, _u32, _u32]
    lib.eg_learn.restype = ctypes.c_int
    lib.eg_flush.argtypes = [_ptr, _ptr, _ptr, _u32, _ptr]
    lib.eg_flush.restype = ctypes.c_int
    lib.eg_carried.argtypes = [_ptr]
    lib.eg_carried.restype = ctypes.c_int
    lib.eg_send.argtypes = [
        ctypes.c_int, _ptr, _ptr, _ptr, _ptr, _u32, _u32, _ptr, _u32, ctypes.c_uint16,
        ctypes.c_uint16,
    ]  # fmt: skip
    lib.eg_send.restype = ctypes.c_int
    lib.eg_send_each.argtypes = [
        ctypes.c_int, _ptr, _ptr, _ptr, _ptr, _u32, _u32, _ptr, _u32, ctypes.c_uint16, _ptr,
    ]  # fmt: skip
    lib.eg_send_each.restype = None


def load() -> tuple[ctypes.CDLL | None, str]:
    """The helper, or None and why not (the loader's reason, or an ABI mismatch)."""
    lib = accel.load(HELPER)
    if lib is None:
        return None, accel.why_not(HELPER) or "not loaded"
    _declare(lib)
    if lib.eg_abi() != ABI:
        return None, f"egress helper ABI {lib.eg_abi()}, expected {ABI}"
    if lib.eg_slots() != SLOTS:  # the count arrays are sized here: C must not write past them
        return None, f"egress helper table of {lib.eg_slots()} destinations, expected {SLOTS}"
    return lib, ""


def _array(code: str, count: int) -> tuple[array.array[int], int]:
    arr = array.array(code, bytes(array.array(code).itemsize * count))
    return arr, arr.buffer_info()[0]


class _Queue:
    """One TAP queue's read buffer, frame table, carried batches (`eg_state`), its table of
    where MACs live (`eg_table`) with the entry each slot counts for, and its drain's
    parameters: a batch carried to the queue's next drain points into this buffer."""

    __slots__ = (
        "buf", "buf_addr", "counts", "dirty", "entries", "fdb", "flood", "gen", "hdr", "ips",
        "len", "net", "next", "off", "params", "params_addr", "peers", "slot_counts", "state",
        "table", "tx", "view",
    )  # fmt: skip

    def __init__(
        self, loop: HotLoop, net: Network, cap: int, sizes: tuple[int, int], ev: int, budget: int
    ) -> None:
        self.net = net
        # Anonymous memory: pages become resident only once frames are read into them (a
        # zeroed bytearray would make all of it resident in every idle agent: issue 15's RSS).
        self.buf = mmap.mmap(-1, cap)
        self.view = memoryview(self.buf)
        self.buf_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        self.off, off_addr = _array("I", MAX_FRAMES)
        self.len, len_addr = _array("I", MAX_FRAMES)
        self.next, next_addr = _array("I", MAX_FRAMES)
        self.state = ctypes.create_string_buffer(sizes[0])
        # The MAC table: anonymous memory too (only the routes and slots used are touched).
        self.table = mmap.mmap(-1, sizes[1])
        self.slot_counts, slot_counts_addr = _array("q", 2 * SLOTS)
        self.dirty, dirty_addr = _array("I", SLOTS)
        self.counts, counts_addr = _array("q", _NCOUNTS)
        #: Slot → the FdbEntry it counts for (None: the flood slot, every peer).
        self.entries: list[FdbEntry | None] = []
        self.flood = -1
        self.gen = -2
        self.peers: tuple[str, ...] | None = None
        #: The FDB table the MAC table was made from (another one starts its own count).
        self.fdb: dict[bytes, FdbEntry] | None = None
        assert loop._tx_gso is not None
        self.tx = (ctypes.c_int32 * len(loop._tx))(*(s.fileno() for s in loop._tx))
        tx_gso = (ctypes.c_int32 * len(loop._tx))(*(s.fileno() for s in loop._tx_gso))
        self.hdr = ctypes.create_string_buffer(net.header, len(net.header))
        #: Kept alive for the C side's pointers.
        self.ips: list[object] = [tx_gso]
        skip = net.vnet_len
        self.params = _Params(
            ctypes.addressof(self.state), self.buf_addr, off_addr, len_addr, next_addr, ev,
            ctypes.addressof(ctypes.c_char.from_buffer(self.table)), ctypes.addressof(self.tx),
            ctypes.addressof(tx_gso), ctypes.addressof(self.hdr), slot_counts_addr, dirty_addr,
            counts_addr, net.tap_fd, cap, MAX_FRAMES, budget, skip, skip + 14,
            skip + net.mtu + 14, 8, len(loop._tx), loop._port, 1, 0,
        )  # fmt: skip
        self.params_addr = ctypes.addressof(self.params)


class FastEgress:
    """The C drain for one loop thread: a `_Queue` per TAP queue, the event list and what
    Python still decides (lone frames, the first batch to each MAC)."""

    def __init__(self, lib: ctypes.CDLL, budget: int = ACCEL_DRAIN_BUDGET) -> None:
        self._lib = lib
        self.budget = max(1, min(budget, MAX_FRAMES))
        self._cap = _BUFFER
        self._sizes = (int(lib.eg_state_size()), int(lib.eg_table_size()))
        self._queues: dict[int, _Queue] = {}
        self._ev, self._ev_addr = _array("I", 4 * MAX_FRAMES)
        self._run = lib.eg_run
        #: Whether TAPs with virtio-net headers should hand this drain TCP super-frames and
        #: partial checksums (`HotLoop._tso_wanted`); the C side copes with them either way.
        self.tso = True
        #: The last `drain` found its queue empty (EAGAIN): a TAP's frames made under
        #: offloads since switched off are all out (`Network.tso_backlog`).
        self.emptied = False
        #: Peer address → its IPv4 as the C side takes it (network order in memory).
        self._ips: dict[str, int] = {}

    @classmethod
    def create(cls, budget: int = ACCEL_DRAIN_BUDGET) -> tuple[FastEgress | None, str]:
        """A FastEgress, or None and the reason the helper is unavailable."""
        lib, reason = load()
        return (cls(lib, budget), "") if lib is not None else (None, reason)

    def _ip(self, host: str) -> int:
        found = self._ips.get(host)
        if found is None:
            found = self._ips[host] = int.from_bytes(socket.inet_aton(host), _NATIVE)
        return found

    def _queue(self, loop: HotLoop, net: Network, fd: int) -> _Queue:
        q = self._queues.get(fd)
        if q is None or q.net is not net:
            # A new queue, or the fd now belongs to another network: whatever the old one
            # carried has nowhere to go (`HotLoop._flush_carried` dropped it too).
            q = self._queues[fd] = _Queue(
                loop, net, self._cap, self._sizes, self._ev_addr, self.budget
            )
            q.params.fd = fd
        return q

    def _check(self, q: _Queue, net: Network) -> None:
        """Drop the queue's MAC table when it may be stale: the FDB table changed (or is a
        plain dict, `fdb.generation` -1, or another table) or the peers were replaced. What
        the slots counted is folded first (a drain that raised in `_act` left it unfolded):
        it belongs to the entries the slots were made for."""
        gen = generation(net.fdb)
        if gen != q.gen or gen < 0 or net.peers is not q.peers or net.fdb is not q.fdb:
            if q.counts[_COUNTED]:
                self._fold(net, q)
            q.gen = gen
            q.peers = net.peers
            q.fdb = net.fdb
            q.entries = []
            q.flood = -1
            q.params.fresh = 1

    def forget(self, fd: int) -> None:
        """Drop a closed queue's buffers."""
        self._queues.pop(fd, None)

    def flush(self, loop: HotLoop, net: Network, fd: int) -> None:
        """Send what the queue's C drain carried (the Python drain takes the queue over)."""
        q = self._queues.get(fd)
        if q is None or q.net is not net or not self._lib.eg_carried(q.params.st):
            return
        self._check(q, net)
        words = self._lib.eg_run_flush(q.params_addr)
        counts = q.counts
        if counts[_ACTED] < words:
            self._act(loop, net, q, words, counts[_ACTED])
        if counts[_COUNTED]:
            self._fold(net, q)

    def drain(self, loop: HotLoop, net: Network, fd: int) -> bool:
        """One drain of TAP queue `fd` of `net` (a plain RFC network, batching on): read,
        group, send the finished batches. True when open batches are carried to the queue's
        next drain (the budget ran out with frames still queued), as the Python drain does."""
        q = self._queue(loop, net, fd)
        self._check(q, net)
        params = q.params
        if params.budget != self.budget:
            params.budget = self.budget
        lock = loop.state_lock
        if lock is None:
            words = self._run(q.params_addr)
        else:
            # With a lane (`lane`) the loop's state lock is let go for the C drain, which
            # touches this instance's queue and event list only (each thread has its own).
            lock.release()
            try:
                words = self._run(q.params_addr)
            finally:
                lock.acquire()
        counts = q.counts
        status = counts[_STATUS]
        self.emptied = status == 0
        if status < 0:
            net.counters["tap_read_error"] += 1
        if counts[_TSO_SEGMENTED] or counts[_CSUM]:
            tally = net.counters
            if counts[_TSO_SEGMENTED]:
                tally["tx_tso_segmented"] += counts[_TSO_SEGMENTED]
                tally["tx_tso_segments"] += counts[_TSO_SEGMENTS]
            if counts[_CSUM]:
                tally["tx_csum_finished"] += counts[_CSUM]
            counts[_TSO_SEGMENTED] = counts[_TSO_SEGMENTS] = counts[_CSUM] = 0
        if counts[_ACTED] < words:
            self._act(loop, net, q, words, counts[_ACTED])
        if counts[_COUNTED]:
            self._fold(net, q)
        return bool(counts[_CARRIED])

    def _fold(self, net: Network, q: _Queue) -> None:
        """What C counted in the drain into the network's counters and, per slot, into the
        FdbEntry the slot was made for (only that object: a replaced entry is another one)."""
        counts = q.counts
        counters = net.counters
        for at, name in _SEND_COUNTERS:
            if counts[at]:
                counters[name] += counts[at]
                counts[at] = 0
        dirty = counts[_DIRTY]
        if dirty:
            slot_counts, entries = q.slot_counts, q.entries
            for k in range(dirty):
                slot = q.dirty[k]
                entry = entries[slot]
                if entry is not None:
                    entry.tx_frames += slot_counts[2 * slot]
                    entry.tx_bytes += slot_counts[2 * slot + 1]
                slot_counts[2 * slot] = slot_counts[2 * slot + 1] = 0
            counts[_DIRTY] = 0
        counts[_COUNTED] = 0

    def _learn(
        self, q: _Queue, mac: bytes, entry: FdbEntry | None, targets: tuple[str, ...]
    ) -> bool:
        """Teach the queue's table where `mac` goes (`entry`'s address, or None: every peer,
        one flood slot for all unknown MACs). False: no room, Python sends to it."""
        slot = q.flood if entry is None else -1
        ips = (ctypes.c_uint32 * len(targets))(*(self._ip(host) for host in targets))
        got = self._lib.eg_learn(
            ctypes.addressof(ctypes.c_char.from_buffer(q.table)), mac, slot,
            ctypes.addressof(ips), len(targets), int(entry is None),
        )  # fmt: skip
        if got < 0:
            return False
        if got == len(q.entries):
            q.entries.append(entry)
            if entry is None:
                q.flood = got
        return True

    def _act(self, loop: HotLoop, net: Network, q: _Queue, words: int, p: int) -> None:
        """Carry out the events from word `p` on that C left: lone frames to the single-frame
        path, a batch to a MAC C does not know yet resolved here (C is taught and sends it,
        or, without room in its table, Python sends it as C would)."""
        skip = net.vnet_len
        ev = self._ev
        off, lens, view = q.off, q.len, q.view
        act = self._lib.eg_act
        while p < words:
            kind, i = ev[p], ev[p + 1]
            if kind == _EV_ONE:
                p += 2
                start = off[i]
                loop._egress_one(net, bytes(view[start + skip : start + lens[i]]))
            elif kind == _EV_RAW:
                # A frame made under offloads that C left as it was read (a super-frame it
                # has no room to cut, a header it cannot honour): `segment`, in Python.
                p += 2
                start = off[i]
                loop._egress_offloaded(net, bytes(view[start : start + lens[i]]))
            else:
                count, first = i, ev[p + 3]
                start = off[first] + skip
                mac = bytes(view[start : start + 6])
                entry = net.fdb.get(mac)
                if entry is None and not net.peers:
                    # No peers and not in the FDB: the single-frame path, frame by frame, as
                    # the Python drain does (it never batches these).
                    for k in range(p + 3, p + 3 + count):
                        one = off[ev[k]]
                        loop._egress_one(net, bytes(view[one + skip : one + lens[ev[k]]]))
                    p += 3 + count
                    continue
                targets = entry.targets if entry is not None else net.peers
                if self._learn(q, mac, entry, targets):
                    reached = act(q.params_addr, p, words)
                    if reached != p:
                        p = reached
                        continue
                self._send(loop, net, q, p, entry, targets)
                p += 3 + count
            if p < words and ev[p] == _EV_BATCH:
                p = act(q.params_addr, p, words)

    def _send(
        self, loop: HotLoop, net: Network, q: _Queue, p: int, entry: FdbEntry | None,
        targets: tuple[str, ...],
    ) -> None:  # fmt: skip
        """Count and send the batch at event word `p` here, as C would (its table is full):
        socket by `flow_hash`, UDP GSO, the GSO-refused fallback."""
        ev, counters = self._ev, net.counters
        count, total, first = ev[p + 1], ev[p + 2], ev[p + 3]
        if entry is not None:
            entry.tx_frames += count
            entry.tx_bytes += total
        else:
            counters["tx_unknown_unicast"] += count
        skip = net.vnet_len
        start = q.off[first]
        frame = bytes(q.view[start + skip : start + q.len[first]][:_HASHED])
        tx, tx_gso = loop._tx, loop._tx_gso
        assert tx_gso is not None
        index = flow_hash(frame) % len(tx)
        idx = self._ev_addr + 4 * (p + 3)
        params = q.params
        args = (params.buf, params.off, params.len, idx, count, skip, params.hdr)
        port = int.from_bytes(loop._port.to_bytes(2, "big"), _NATIVE)
        send = self._lib.eg_send
        for host in targets:
            ip = self._ip(host)
            if count == 1:
                rc = send(tx[index].fileno(), *args, ip, port, 0)
                if rc < 0:
                    counters["tx_drop_too_big" if rc == -errno.EMSGSIZE else "tx_error"] += 1
                continue
            counters["tx_gso_batches"] += 1
            rc = send(tx_gso[index].fileno(), *args, ip, port, q.len[first] - skip + 8)
            if rc < 0:
                # GSO refused: the same datagrams one by one, each failure counted.
                counters["tx_gso_fallback"] += 1
                errors = (ctypes.c_uint32 * 2)()
                self._lib.eg_send_each(tx[index].fileno(), *args, ip, port, errors)
                if errors[0]:
                    counters["tx_drop_too_big"] += errors[0]
                if errors[1]:
                    counters["tx_error"] += errors[1]
