"""The C egress drain (`accel/egress.c`) behind `HotLoop._drain_tap`, for plain RFC networks.

C does the per-frame work: reading a TAP queue until EAGAIN or the budget into one buffer and
grouping the frames into the batches the Python drain makes (same rules: equal-size frames of
one flow and destination MAC, a shorter frame ends a batch, GSO limits, parked interleaved
flows, nothing held past the drain). Python keeps every decision that is not per frame, per
batch: the FDB lookup, the counters (the same `network vtep` shows for the Python path), the
sending socket by `flow_hash`, the targets (unknown unicast: every peer); C then sends the batch
with UDP GSO, iovecs pointing into the buffer. Frames the batching does not take go to
`HotLoop._egress_one`, unchanged.

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
from overlaynet.dataplane.switching import Network, flow_hash

if TYPE_CHECKING:
    from overlaynet.dataplane.hotpath import HotLoop

#: The helper's name for `accel.load`.
HELPER = "egress"
#: The C side's interface version (`eg_abi`): a stale build with another one is not used.
ABI = 3
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
_EV_ONE = 1
_EV_RAW = 3
_NATIVE = sys.byteorder
#: Octets of a frame `flow_hash` looks at (it reads at most 40).
_HASHED = 64

_u32 = ctypes.c_uint32
_ptr = ctypes.c_void_p


def _declare(lib: ctypes.CDLL) -> None:
    """Argument types: ctypes converts exactly (an unsigned address does not overflow)."""
    lib.eg_abi.argtypes = []
    lib.eg_abi.restype = ctypes.c_int
    lib.eg_state_size.argtypes = []
    lib.eg_state_size.restype = ctypes.c_int
    lib.eg_drain.argtypes = [
        _ptr, ctypes.c_int, _ptr, _u32, _ptr, _ptr, _ptr, _u32, _u32, _u32, _u32, _u32, _u32,
        _ptr, _ptr, _ptr, _ptr,
    ]  # fmt: skip
    lib.eg_drain.restype = ctypes.c_int
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
    return lib, ""


def _u32_array(count: int) -> tuple[array.array[int], int]:
    arr = array.array("I", bytes(4 * count))
    return arr, arr.buffer_info()[0]


class _Queue:
    """One TAP queue's read buffer, frame table and carried batches (`eg_state`): a batch
    carried to the queue's next drain points into this buffer."""

    __slots__ = (
        "buf", "buf_addr", "len", "len_addr", "net", "next", "next_addr", "off", "off_addr",
        "state", "state_addr", "view",
    )  # fmt: skip

    def __init__(self, net: Network, cap: int, state_size: int) -> None:
        self.net = net
        # Anonymous memory: pages become resident only once frames are read into them (a
        # zeroed bytearray would make all of it resident in every idle agent: issue 15's RSS).
        self.buf = mmap.mmap(-1, cap)
        self.view = memoryview(self.buf)
        self.buf_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        self.off, self.off_addr = _u32_array(MAX_FRAMES)
        self.len, self.len_addr = _u32_array(MAX_FRAMES)
        self.next, self.next_addr = _u32_array(MAX_FRAMES)
        self.state = ctypes.create_string_buffer(state_size)
        self.state_addr = ctypes.addressof(self.state)


class FastEgress:
    """The C drain for one loop thread: a `_Queue` per TAP queue, the event list and the
    per-batch decisions."""

    def __init__(self, lib: ctypes.CDLL, budget: int = ACCEL_DRAIN_BUDGET) -> None:
        self._lib = lib
        self.budget = max(1, min(budget, MAX_FRAMES))
        self._cap = _BUFFER
        self._state_size = int(lib.eg_state_size())
        self._queues: dict[int, _Queue] = {}
        self._ev, self._ev_addr = _u32_array(4 * MAX_FRAMES)
        self._out = (ctypes.c_int * 1)()
        self._frames = (ctypes.c_uint32 * 1)()
        self._errors = (ctypes.c_uint32 * 2)()
        #: The C side's tallies of one drain: super-frames cut, segments made, checksums
        #: finished (`tx_tso_segmented`, `tx_tso_segments`, `tx_csum_finished`).
        self._stats = (ctypes.c_uint32 * 3)()
        #: Whether TAPs with virtio-net headers should hand this drain TCP super-frames and
        #: partial checksums (`HotLoop._tso_wanted`); the C side copes with them either way.
        self.tso = True
        #: The last `drain` found its queue empty (EAGAIN): a TAP's frames made under
        #: offloads since switched off are all out (`Network.tso_backlog`).
        self.emptied = False
        #: Peer address → its IPv4 as the C side takes it (network order in memory).
        self._ips: dict[str, int] = {}
        #: VXLAN header octets of each network seen, kept alive for the C side's pointer.
        self._headers: dict[bytes, tuple[ctypes.Array[ctypes.c_char], int]] = {}

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

    def _header(self, net: Network) -> int:
        found = self._headers.get(net.header)
        if found is None:
            raw = ctypes.create_string_buffer(net.header, len(net.header))
            found = self._headers[net.header] = (raw, ctypes.addressof(raw))
        return found[1]

    def _queue(self, net: Network, fd: int) -> _Queue:
        q = self._queues.get(fd)
        if q is None or q.net is not net:
            # A new queue, or the fd now belongs to another network: whatever the old one
            # carried has nowhere to go (`HotLoop._flush_carried` dropped it too).
            q = self._queues[fd] = _Queue(net, self._cap, self._state_size)
        return q

    def forget(self, fd: int) -> None:
        """Drop a closed queue's buffers."""
        self._queues.pop(fd, None)

    def flush(self, loop: HotLoop, net: Network, fd: int) -> None:
        """Send what the queue's C drain carried (the Python drain takes the queue over)."""
        q = self._queues.get(fd)
        if q is None or q.net is not net or not self._lib.eg_carried(q.state_addr):
            return
        words = self._lib.eg_flush(
            q.state_addr, q.len_addr, q.next_addr, net.vnet_len, self._ev_addr
        )
        self._act(loop, net, q, words)

    def drain(self, loop: HotLoop, net: Network, fd: int) -> bool:
        """One drain of TAP queue `fd` of `net` (a plain RFC network, batching on): read,
        group, send the finished batches. True when open batches are carried to the queue's
        next drain (the budget ran out with frames still queued), as the Python drain does."""
        q = self._queue(net, fd)
        skip = net.vnet_len
        words = self._lib.eg_drain(
            q.state_addr, fd, q.buf_addr, self._cap, q.off_addr, q.len_addr, q.next_addr,
            MAX_FRAMES, self.budget, skip, skip + 14, skip + net.mtu + 14, 8, self._ev_addr,
            self._out, self._frames, self._stats,
        )  # fmt: skip
        status = self._out[0]
        self.emptied = status == 0
        if status < 0:
            net.counters["tap_read_error"] += 1
        stats = self._stats
        if stats[0] or stats[2]:
            counters = net.counters
            if stats[0]:
                counters["tx_tso_segmented"] += stats[0]
                counters["tx_tso_segments"] += stats[1]
            if stats[2]:
                counters["tx_csum_finished"] += stats[2]
            stats[0] = stats[1] = stats[2] = 0
        if words:
            self._act(loop, net, q, words)
        return bool(self._lib.eg_carried(q.state_addr))

    def _act(self, loop: HotLoop, net: Network, q: _Queue, words: int) -> None:
        """Carry out `words` words of events: lone frames to the single-frame path, batches
        counted and sent to their targets."""
        skip = net.vnet_len
        ev = self._ev[:words].tolist()
        off, lens, view = q.off, q.len, q.view
        fdb_get = net.fdb.get
        counters = net.counters
        tx, tx_gso = loop._tx, loop._tx_gso
        assert tx_gso is not None
        send, send_each = self._lib.eg_send, self._lib.eg_send_each
        buf_addr, off_addr, len_addr = q.buf_addr, q.off_addr, q.len_addr
        header = self._header(net)
        port = int.from_bytes(loop._port.to_bytes(2, "big"), _NATIVE)
        p = 0
        while p < words:
            i = ev[p + 1]
            if ev[p] == _EV_ONE:
                p += 2
                start = off[i]
                loop._egress_one(net, bytes(view[start + skip : start + lens[i]]))
                continue
            if ev[p] == _EV_RAW:
                # A frame made under offloads that C left as it was read (a super-frame it
                # has no room to cut, a header it cannot honour): `segment`, in Python.
                p += 2
                start = off[i]
                loop._egress_offloaded(net, bytes(view[start : start + lens[i]]))
                continue
            count, total, first = i, ev[p + 2], ev[p + 3]
            idx = self._ev_addr + 4 * (p + 3)
            p += 3 + count
            start = off[first]
            frame = view[start + skip : start + lens[first]]
            entry = fdb_get(bytes(frame[:6]))
            targets: tuple[str, ...]
            if entry is not None:
                targets = entry.targets
                entry.tx_frames += count
                entry.tx_bytes += total
            elif not net.peers:
                # No peers and not in the FDB: the single-frame path, frame by frame, as the
                # Python drain does (it never batches these).
                for k in range(p - count, p):
                    one = off[ev[k]]
                    loop._egress_one(net, bytes(view[one + skip : one + lens[ev[k]]]))
                continue
            else:
                targets = net.peers
                counters["tx_unknown_unicast"] += count
            index = flow_hash(bytes(frame[:_HASHED])) % len(tx)
            if count == 1:
                sock = tx[index].fileno()
                for host in targets:
                    rc = send(
                        sock, buf_addr, off_addr, len_addr, idx, 1, skip, header,
                        self._ip(host), port, 0,
                    )  # fmt: skip
                    if rc < 0:
                        counters["tx_drop_too_big" if rc == -errno.EMSGSIZE else "tx_error"] += 1
                continue
            segment = lens[first] - skip + 8
            sock = tx_gso[index].fileno()
            for host in targets:
                counters["tx_gso_batches"] += 1  # before: the receiver may look right away
                ip = self._ip(host)
                rc = send(
                    sock, buf_addr, off_addr, len_addr, idx, count, skip, header, ip, port,
                    segment,
                )  # fmt: skip
                if rc < 0:
                    # GSO refused: the same datagrams one by one, each failure counted.
                    counters["tx_gso_fallback"] += 1
                    errors = self._errors
                    errors[0] = errors[1] = 0
                    send_each(
                        tx[index].fileno(), buf_addr, off_addr, len_addr, idx, count, skip,
                        header, ip, port, errors,
                    )  # fmt: skip
                    if errors[0]:
                        counters["tx_drop_too_big"] += errors[0]
                    if errors[1]:
                        counters["tx_error"] += errors[1]
