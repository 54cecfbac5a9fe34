"""Offload mode's ingress drain through the C helper `accel/offload.c` (issue 15): the
per-datagram work of `HotLoop._drain_offload` (receive the GRO buffers, reassemble the chunks
as `chunks.Reassembler.feed` does, merge UDP runs as `offload.UdpRuns` does, write each frame
to its TAP queue as `HotLoop._deliver_whole` does) in C; the FDB accounting and learning
stay here, with the same counters and values as the Python drain, except for the frames of
source MACs the C side holds a slot for (`fastingress.SlotContext`, the same rules as the
ingress drain's): those it counts itself, folded into their FDB entries and
`rx_offload_frames` at each drain's end (just after the frame's write: the counters of the
frames Python counts move before it, as in the Python drain).

`drain(loop)` is what `_drain_offload` calls first; False when the C path does not apply (no
compiler, `OVERLAYNET_ACCEL=off`, `disable`d, an IPv6 socket, an unusual `max_pending`, or the
Python reassembler still holds partial frames) and the Python drain runs as before.

Partial frames and the switch: the C side keeps its own reassembly state across drains and
shares the Python one's counters and sweeps (`Reassembler.companion`: its frames expire with
the Python one's). The C drain takes over only when the Python reassembler holds nothing, so no
frame is split between the two; `disable` (at start-up, `--accel off`, tests) gives up the C
side's partial frames, counted as `offload_frames_lost` (TCP in the containers retransmits,
as after any loss).

`send_whole(loop, net, data, hosts, entry)` is `HotLoop._send_whole` with `chunks.split` and
the UDP-GSO sends in C (headers built on the stack, iovecs into the frame: no copies); the
counters, frame ids and error handling (a refused send reads the ICMP errors and is retried
once) stay here.

Cost on a fresh machine: one `cc` run of a few hundred lines at the VTEP's first offload drain
(cached by the source's hash, `accel`); without a compiler nothing changes.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import sys
import time
import weakref
from typing import TYPE_CHECKING

from overlaynet.dataplane import accel
from overlaynet.dataplane.fastingress import (
    SlotContext,
    _account,
    declare_context,
    declare_slots,
    load_declared,
)
from overlaynet.dataplane.hotpath import GSO_MAX_BYTES, GSO_MAX_SEGMENTS
from overlaynet.dataplane.offload import USO_WRITES
from overlaynet.dataplane.switching import Network
from overlaynet.wire import chunks

if TYPE_CHECKING:
    from overlaynet.dataplane.fdb import FdbEntry
    from overlaynet.dataplane.hotpath import HotLoop

#: Peer addresses remembered as parsed (a lab has a few hundred hosts at most).
ADDRESS_CACHE = 4096

#: The C side's ABI version (`of_abi`): a library of another version is not used.
ABI = 4
#: The helper's name for `accel.load`.
HELPER = "offload"
#: Record kinds (`of_step`'s return value).
DONE, FRAME, RUNT, TAPERR = 0, 1, 2, 3
#: The record's counter slots, in the C side's order: the reassembler's (and UdpRuns') counters,
#: then the host's. Where each one goes: `_REASSEMBLY` into `Reassembler.counters`.
COUNTERS = (
    "offload_frames",
    "offload_frames_lost",
    "offload_duplicate",
    "offload_short",
    "offload_bad_magic",
    "offload_bad_header",
    "offload_bad_size",
    "offload_udp_merged",
    "offload_udp_merged_writes",
    "rx_drop_not_member",
    "rx_error",
    "rx_drop_offload_refused",
)
_REASSEMBLY = 9
#: The most frames the C side reassembles at once (`OF_PENDING_CAP`).
PENDING_CAP = 1024
#: Host-level counter of the drains the C path took: shows it is on; every other counter has
#: the same value either way.
DRAIN_COUNTER = "rx_accel_offload_drains"


class _Record(ctypes.Structure):
    """`struct of_rec`."""

    _fields_ = [
        ("kind", ctypes.c_int32),
        ("net", ctypes.c_int32),
        ("sender", ctypes.c_int32),
        ("woke", ctypes.c_int32),
        ("bytes", ctypes.c_int64),
        ("mac", ctypes.c_uint8 * 8),
        ("counted", ctypes.c_int32),
        ("slots", ctypes.c_int32),
        ("counters", ctypes.c_int64 * len(COUNTERS)),
    ]


class _Net(ctypes.Structure):
    """`struct of_net`."""

    _fields_ = [
        ("vni", ctypes.c_uint32),
        ("tap_fd", ctypes.c_int32),
        ("latency_fd", ctypes.c_int32),
        ("pad", ctypes.c_int32),
    ]


_MAC_AT = _Record.mac.offset


def _declare(lib: ctypes.CDLL) -> bool:
    """Set the helper's signatures; False when its ABI is not ours."""
    if not declare_context(
        lib, "of", ABI, [ctypes.c_int], [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    ):
        return False
    for name in ("of_pending", "of_expire", "of_clear"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.of_drain.restype = ctypes.c_int
    lib.of_drain.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.of_send.restype = ctypes.c_int
    lib.of_send.argtypes = [
        ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32,
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_int,
    ]  # fmt: skip
    return declare_slots(lib, "of")


class Engine(SlotContext):
    """One C drain context (receive buffer, reassembly state, tables, counted source MACs:
    `SlotContext`, their delivered frames folded into `rx_offload_frames`) for a hot loop's
    offload socket."""

    FOLDED = "rx_offload_frames"

    def __init__(self, lib: ctypes.CDLL, fd: int, max_pending: int) -> None:
        super().__init__(lib, "of", fd, max_pending)
        self._rec = _Record.from_address(self._record_at)
        self._mac_at = self._record_at + _MAC_AT
        #: What the tables were made from: the loop's dicts by identity, and per network
        #: whether it takes offload and its queues (attributes the control side may change).
        self._signature: tuple[object, ...] = ()

    @property
    def pending(self) -> int:
        """Frames the C side holds partially."""
        return int(self._lib.of_pending(self._ctx))

    def expire(self) -> int:
        """`Reassembler.expire` for the C side's frames; how many were given up."""
        return int(self._lib.of_expire(self._ctx))

    def clear(self) -> int:
        """Give up every partial frame; how many."""
        return int(self._lib.of_clear(self._ctx))

    def _tables(self, loop: HotLoop) -> None:
        networks, members = loop.networks, loop.members
        signature: tuple[object, ...] = (
            id(networks),
            id(members),
            *((n.offload and n.seal is None, n.tap_fd, n.latency_fd) for n in networks.values()),
        )
        if signature == self._signature:
            return
        # The counted MACs' network and member indexes change with the tables.
        self._forget(-1)
        # Only networks `_deliver_whole` delivers to; the C side counts the rest as refused.
        nets = [n for n in networks.values() if n.offload and n.seal is None]
        table = (_Net * max(1, len(nets)))()
        for i, net in enumerate(nets):
            table[i] = _Net(int.from_bytes(net.vni_key, "big"), net.tap_fd, net.latency_fd, 0)
        senders = self._set_tables(table, len(nets), members)
        self._signature = signature
        self._nets, self._senders = nets, senders
        self._sender_index = {sender: i for i, sender in enumerate(senders)}

    def drain(self, loop: HotLoop) -> None:
        """One drain of the offload socket (`HotLoop._drain_offload`)."""
        self._tables(loop)
        if self._watched:
            self._check_all()
        counters = loop._counters
        counters[DRAIN_COUNTER] += 1
        ctx, rec, step = self._ctx, self._rec, self._lib.of_step
        nets, senders = self._nets, self._senders
        string_at = ctypes.string_at
        mac_at = self._mac_at
        kind = self._lib.of_drain(ctx, self.fd, loop.drain_budget, USO_WRITES)
        while True:
            if kind == FRAME:
                # `_deliver_whole`'s bookkeeping; the C side writes on the next step.
                index = rec.net
                net = nets[index]
                octets = rec.bytes
                mac = string_at(mac_at, 6)
                _account(net, mac, senders[rec.sender], 1, octets, octets)
                net.counters["rx_offload_frames"] += 1
                if rec.woke:
                    loop._woke = True
                self._install(index, mac)  # its next frames are counted in C
            elif kind == RUNT:
                nets[rec.net].counters["rx_offload_runt"] += 1
            elif kind == TAPERR:
                nets[rec.net].counters["rx_drop_tap_error"] += 1
            else:
                if rec.woke:
                    loop._woke = True
                if rec.slots:
                    self._fold()
                if not rec.counted:
                    return
                values = rec.counters
                reassembly = loop.reassembler.counters
                for i, name in enumerate(COUNTERS):
                    value = values[i]
                    if value:
                        (reassembly if i < _REASSEMBLY else counters)[name] += value
                return
            kind = step(ctx)


#: Hot loop → its engine, or None: the C path is off for it (unavailable, or `disable`d).
_engines: weakref.WeakKeyDictionary[HotLoop, Engine | None] = weakref.WeakKeyDictionary()


def _engine(loop: HotLoop) -> Engine | None:
    """The loop's engine, made at its first offload drain (the helper built then, if need be)."""
    try:
        return _engines[loop]
    except KeyError:
        pass
    engine: Engine | None = None
    lib = load_declared(HELPER, _declare)
    sock = loop._off_rx
    reassembler = loop.reassembler
    if (
        lib is not None
        and sock is not None
        and sock.family == socket.AF_INET
        and 1 <= reassembler.max_pending <= PENDING_CAP
    ):
        engine = Engine(lib, sock.fileno(), reassembler.max_pending)
        reassembler.companion = engine.expire
    _engines[loop] = engine
    return engine


def drain(loop: HotLoop) -> bool:
    """Run the offload drain in C; False when the C path does not apply here and the caller's
    Python drain must run (helper unavailable or disabled; partial frames in the Python
    reassembler, which finish or expire there first)."""
    engine = _engines.get(loop, False)
    if engine is False:
        engine = _engine(loop)
    if engine is None or loop.reassembler.pending:
        return False
    engine.drain(loop)  # type: ignore[union-attr]
    return True


#: The helper, declared, for the egress sends (None: unavailable); loaded at the first send.
_sender: list[ctypes.CDLL | None] = []
#: Peer address → its IPv4 address as the C side takes it (network order in a native int).
_addresses: dict[str, int] = {}


def _send_lib() -> ctypes.CDLL | None:
    if not _sender:
        _sender.append(load_declared(HELPER, _declare))
    return _sender[0]


def _address(host: str) -> int | None:
    found = _addresses.get(host)
    if found is None:
        try:
            found = int.from_bytes(socket.inet_aton(host), sys.byteorder)
        except OSError:
            return None
        if len(_addresses) > ADDRESS_CACHE:
            _addresses.clear()  # peers come and go; the cache only saves a parse per frame
        _addresses[host] = found
    return found


def send_whole(
    loop: HotLoop, net: Network, data: bytes, hosts: tuple[str, ...], entry: FdbEntry | None
) -> bool:
    """`HotLoop._send_whole` with the chunking and sends in C: the same datagrams, sends,
    counters and error handling; False when the C path does not apply (helper unavailable or
    the loop `disable`d, no IPv4 offload socket, a frame of more than MAX_CHUNKS chunks, a peer
    that is not an IPv4 address) and the Python sends must run."""
    if _engines.get(loop, False) is None:
        return False
    sock = loop._off_tx
    lib = _send_lib()
    if lib is None or sock is None or sock.family != socket.AF_INET:
        return False
    chunk = loop._off_chunk
    size = len(data)
    count = -(-size // chunk) or 1
    if count > chunks.MAX_CHUNKS:
        return False  # `chunks.split` refuses it, as before
    addresses = [_address(host) for host in hosts]
    if None in addresses:
        return False
    loop._frame_id = frame_id = (loop._frame_id + 1) & 0xFFFFFFFF
    if entry is not None:
        entry.tx_frames += 1
        entry.tx_bytes += size - 10
    else:
        net.counters["tx_unknown_unicast"] += 1
    port = loop._off_port
    most = (
        max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // (chunk + chunks.HEADER_LEN)))
        if loop.off_gso
        else 1
    )
    send, fd, vni, counters = lib.of_send, sock.fileno(), net.vni, net.counters
    for address in addresses:
        counters["tx_offload_frames"] += 1
        counters["tx_offload_chunks"] += count
        for i in range(0, count, most):
            n = count - i if count - i < most else most
            for _attempt in (1, 2):
                error = send(fd, data, size, vni, frame_id, chunk, count, i, n, address, port)
                if not error:
                    break
                if error == errno.ECONNREFUSED:
                    # An ICMP error about an earlier datagram (to any peer) is reported by
                    # the next send: it is read from the error queue, this one retried.
                    loop._read_offload_errors(time.monotonic())
                    continue
                counters["tx_drop_too_big" if error == errno.EMSGSIZE else "tx_error"] += 1
                break
    return True


def disable(loop: HotLoop) -> None:
    """Keep `loop` on the Python drain (tests comparing both paths, `--accel off`); the C
    side's partial frames are given up and counted as lost."""
    old = _engines.get(loop)
    _engines[loop] = None
    if old is not None:
        lost = old.clear()
        if lost:
            loop.reassembler.counters["offload_frames_lost"] += lost
        if loop.reassembler.companion == old.expire:
            loop.reassembler.companion = None
        old.close()


def active(loop: HotLoop) -> bool:
    """Whether the loop's offload drain runs in C (made at its first drain)."""
    return _engines.get(loop) is not None


def available() -> bool:
    """Whether the helper builds, loads and speaks our ABI (built now if need be)."""
    return load_declared(HELPER, _declare) is not None


def describe(loop: HotLoop) -> str:
    """Which code moves offload datagrams (`network vtep`'s "accel:" line of an offload
    network): "c offload" (reassembly, delivery and sends), or Python and why."""
    if not available():
        return f"python offload ({why_not() or 'unavailable'})"
    if loop in _engines and _engines[loop] is None:
        return "python offload (off)"
    return "c offload"


def why_not() -> str:
    """Why the helper is not loaded ("" when it is or was not asked for)."""
    return accel.why_not(HELPER)
