"""The VTEP's hot loop: one epoll loop over the UDP sockets and every TAP, draining each until
EAGAIN, in a thread of its own (FASTPATH.md: one loop for both directions beat two threads).

Egress batches: consecutive equal-size frames of one flow to one peer leave in one UDP-GSO
sendmsg (the kernel cuts them into standard VXLAN datagrams and computes the outer UDP
checksum); a lone frame leaves through a twin socket on the same port with UDP checksum 0.
Ingress merges: datagrams from the checksummed socket (see `offload`) that carry in-order TCP
segments of one flow become one super-frame and one TAP write, also across recv calls until
EAGAIN; the segments of a GRO buffer are checked with one masked comparison of all their headers
at once where possible (Python work per segment is what limits this path). Everything else is
written frame by frame. Decisions about single frames come from
`switching`; this module moves bytes and keeps the batching bookkeeping.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from overlaynet.dataplane.fdb import LEARNED_MAX_AGE, FdbEntry, age_learned
from overlaynet.dataplane.impair import ALL_PEERS, HeldQueue, ImpairModel
from overlaynet.dataplane.offload import (
    IPV4_MAX_TOTAL,
    PLAIN_VNET_HDR,
    VNET_HDR_LEN,
    UdpRuns,
    super_frame_headers,
    vnet_header,
)
from overlaynet.dataplane.pacing import Pacer, PacerArgs
from overlaynet.dataplane.seal import SEAL_OVERHEAD, Sealer
from overlaynet.dataplane.segment import SegmentError, wire_frames
from overlaynet.dataplane.switching import (
    Network,
    Verdict,
    egress,
    flow_hash,
    ingress,
    learn_source,
    too_big,
)
from overlaynet.dataplane.tap import set_offloads
from overlaynet.wire import chunks

if TYPE_CHECKING:
    from overlaynet.dataplane.fastegress import FastEgress
    from overlaynet.dataplane.lane import Lane
    from overlaynet.dataplane.tracing import Tracer

#: Frames read from a TAP, and datagrams received from the underlay (a GRO buffer counts for
#: the datagrams in it), before the loop looks at its other fds again. It bounds how long a lone
#: frame (a ping, an ACK) waits behind the other direction's bulk: 256 GRO buffers of 44
#: segments were ~3 ms of merging, and a ping under a 1-stream load took 3.4 ms (issue 15);
#: 128 was ~3 full batches or super-frames. 32 (with `LOOP_NICE`) halved the ping under a
#: 1-stream load again, 1.13-1.28 -> 0.39-0.78 ms in one run, for -3 % on the stream
#: (benchmarks/profiles/loaded-latency-budget.md); 16 cost a quarter of the throughput.
DRAIN_BUDGET = 32
#: Octets of an offload-mode TAP read that count as one frame of `DRAIN_BUDGET`: a 1500-octet
#: frame's worth, so a 64 KB super-frame counts as the ~44 frames it stands for.
OFFLOAD_BUDGET_UNIT = 1500
#: Seconds an offload peer that refused offload datagrams (ICMP port unreachable: no VTEP in
#: offload mode there, e.g. a kernel VTEP given as an offload peer by mistake) gets RFC 7348
#: before offload is tried again.
OFFLOAD_REFUSED_FOR = 30.0
#: From <linux/in.h>: queue ICMP errors of a socket's datagrams (read with MSG_ERRQUEUE).
IP_RECVERR = 11
#: Nice value of the loop's thread: every frame waits for this thread's wake-up, on a busy
#: 2-core machine a wait for a CPU behind iperf3 and everything else (the kernel's VXLAN runs in
#: softirq, ahead of all processes). Alone it moved the loaded ping little; with a budget of 32
#: see above. It does not help an idle ping (no CPU to wait for).
LOOP_NICE = -10
#: How the loop's priority follows its work (`HotLoop.nice_policy`): "fixed" keeps `nice`;
#: "yield" steps down to nice 0 and yields the CPU after a pass that wrote a lone non-TCP
#: frame (DNS, ping) to a TAP, so the process it woke gets a CPU before the loop's next
#: bulk drain; "bulk" runs at `bulk_nice` while the loop finds work on every pass (moving bulk)
#: and at `nice` from the moment it finds none, so lone frames are still taken at once on an
#: otherwise idle host. Measured in benchmarks/profiles/dns-under-load.md. "paced" runs at 0
#: while a stream of lone frames wakes the loop thousands of times a second (at -10 it preempts
#: the receiver on every datagram: UDP loss at 80 %, issue 15) and at `nice` for pings and bulk;
#: the decision is `pacing.Pacer`'s, measured in benchmarks/profiles/s9-paced.md. Its sign of
#: a lone frame: a pass that drained a TAP latency queue or delivered a non-TCP frame to one
#: (bulk IPv4 TCP, ACKs included, never does; the queue split knows IPv4 TCP only, so IPv6 or
#: VLAN-tagged TCP counts as lone). Both run as "fixed" with a lane (its deliveries would read
#: as the main loop's) or when the loop's nice value was refused or is not negative.
#: "paced-wake", the first version kept for comparison:
#: a pass that slept first (bursty paced UDP at -10 rarely does, bulk through offload often).
NICE_POLICIES = ("fixed", "yield", "bulk", "paced", "paced-wake")
#: Passes in a row that found work before "bulk" steps down to `bulk_nice`: a ping and its
#: reply are one or two passes; a TCP stream keeps the loop busy for thousands.
BULK_PASSES = 8
#: Seconds between aging sweeps of learned FDB entries (Linux vxlan sweeps every FDB_AGE_INTERVAL,
#: 10 s); the loop also wakes this often when idle, which costs nothing measurable.
AGE_SWEEP_INTERVAL = 10.0
#: Read buffer: larger than any frame a TAP or the underlay (a GRO buffer) can hand us, so
#: oversized input is seen whole and counted instead of silently truncated.
READ_SIZE = 65536 + 64
#: From <linux/udp.h>: UDP_SEGMENT (send one buffer as equal-size datagrams, "UDP GSO") and
#: UDP_GRO (receive coalesced datagrams plus their size in a control message).
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: UDP-GSO totals are capped at 65,507 octets (FASTPATH.md, "Traps") and at 64 segments
#: (UDP_MAX_SEGMENTS in <linux/udp.h> before 6.x raised it).
GSO_MAX_BYTES = 65507
GSO_MAX_SEGMENTS = 64
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_NATIVE = sys.byteorder

# Offsets inside a VXLAN datagram (VXLAN 8, Ethernet 14, IPv4 20, TCP) for the merge checks.
_ETHERTYPE_IPV4_IHL5 = b"\x08\x00\x45"
_ETHERTYPE_IPV4 = b"\x08\x00"
_TCP_ACK = 0x10
_PSH = 0x08
_MIN_TCP_DATAGRAM = 8 + 14 + 20 + 20
_STRICT_FLAGS = b"\x08\x00\x00\x00"


def _header_mask(end: int) -> int:
    """For datagram headers of `end` octets read as one big-endian integer: ones everywhere but
    the fields that differ between consecutive segments of one TCP run and are rebuilt for the
    super-frame (IPv4 identification and header checksum, TCP checksum). The sequence number
    stays: it is compared against the expected one."""
    mask = (1 << (8 * end)) - 1
    for first, last in ((26, 28), (32, 34), (58, 60)):
        mask &= ~(((1 << (8 * (last - first))) - 1) << (8 * (end - last)))
    return mask


#: Header masks by header length: VXLAN, Ethernet, IPv4 (20) and TCP with 20..60 octets.
_HEADER_MASKS = {42 + tcp: _header_mask(42 + tcp) for tcp in range(20, 61, 4)}
#: From this many full segments on, a GRO buffer's remaining headers are checked in one go.
_BULK_MIN = 4
_BULK: dict[tuple[int, int, int], tuple[int, int, struct.Struct]] = {}


def _bulk_constants(end: int, count: int, mask: int, seg: int) -> tuple[int, int, struct.Struct]:
    """For `count` datagrams of `seg` octets whose headers (`end` octets) are concatenated
    and read as one integer: RAMP (i at the lowest bit of header i's sequence number, so
    plen * RAMP is what the sequence numbers advance by), the mask repeated, and a Struct that
    splits the datagrams into header, payload, header, payload... Cached: few combinations
    occur. (Multiplying by a long factor is slow in Python, hence repeated bytes instead.)"""
    key = (end, count, seg)
    found = _BULK.get(key)
    if found is None:
        width, seq_shift = 8 * end, 8 * (end - 50)
        ramp = sum(i << (width * (count - 1 - i) + seq_shift) for i in range(count))
        mask_all = int.from_bytes(mask.to_bytes(end, "big") * count, "big")
        layout = struct.Struct(f"{end}s{seg - end}s" * count)
        found = _BULK[key] = (ramp, mask_all, layout)
    return found


#: A batch `_drain_tap` put aside for another flow: parts, count, size, most, entry, targets.
_Parked: TypeAlias = tuple[list[bytes], int, int, int, FdbEntry | None, tuple[str, ...]]
#: A drain's open batches carried to the queue's next drain: parts, count, size, most, flow key,
#: destination MAC, entry, targets, and the parked batches.
_Carried: TypeAlias = tuple[
    list[bytes], int, int, int, bytes, bytes, FdbEntry | None, tuple[str, ...], dict[bytes, _Parked]
]


def effective_policy(policy: str, nice: int, niced: bool, *, lane: bool) -> str:
    """The nice policy the loop runs: `policy`, or "fixed" where it cannot do its job. Every
    policy is fixed at nice 0. The paced ones step to 0 so that the processes a stream feeds
    get the CPU first: from a positive nice that step would do the opposite, and from a nice
    value the kernel refused (`niced` False) it would change nothing while its counters said
    otherwise; with a lane the urgent fds are the lane's and its deliveries set `_woke` too,
    so the main loop's bulk passes would read as lone."""
    if not nice:
        return "fixed"
    if policy.startswith("paced") and (nice > 0 or not niced or lane):
        return "fixed"
    return policy


class HotLoop:
    """Moves frames TAP → UDP and UDP → TAP for every registered network until `stop()`.

    `rx` receives everything the kernel does not sort onto `rx_checked` (datagrams with a
    non-zero, kernel-verified UDP checksum; None: nothing is merged). `tx[i]` sends lone
    datagrams with checksum 0; `tx_gso[i]`, bound to the same port, sends GSO batches
    (None: no batching, one datagram per frame).

    Thread-safety: the control side (another thread) swaps `networks` and `members` for new
    objects and registers fds through epoll, which the kernel serialises; the loop only reads.
    """

    def __init__(
        self,
        rx: socket.socket,
        tx: list[socket.socket],
        port: int,
        counters: Counter[str],
        *,
        strict: bool = False,
        rx_checked: socket.socket | None = None,
        tx_gso: list[socket.socket] | None = None,
    ) -> None:
        if not tx:
            raise ValueError("at least one sending socket is needed")
        if tx_gso is not None and len(tx_gso) != len(tx):
            raise ValueError("one GSO socket per sending socket")
        self._rx = rx
        self._rx_checked = rx_checked
        self._tx = tx
        self._tx_gso = tx_gso
        self._port = port
        self._counters = counters
        self._strict = strict
        #: VNI octets → network, for ingress; replaced wholesale on change.
        self.networks: dict[bytes, Network] = {}
        self._by_fd: dict[int, Network] = {}
        #: TAP queues that carry no TCP bulk (`Network.latency_fd`): drained before the others.
        self._urgent: frozenset[int] = frozenset()
        self.members: frozenset[str] = frozenset()
        #: VNI octets → sealer of every encrypted network: its datagrams are opened before
        #: anything else looks at them. Replaced wholesale; empty (the default): no cost.
        self.sealed: dict[bytes, Sealer] = {}
        self._poller = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wake_r, select.EPOLLIN)
        self._poller.register(rx.fileno(), select.EPOLLIN)
        if rx_checked is not None:
            self._poller.register(rx_checked.fileno(), select.EPOLLIN)
        self._stopping = False
        #: Peer address (or `impair.ALL_PEERS`) → impairment model of the datagrams sent to it
        #: (`lab impair`). Replaced wholesale; empty (the default): one truth test per send.
        self.impaired: dict[str, ImpairModel] = {}
        #: Impaired datagrams waiting for their moment: socket, datagram, peer, network.
        self._held: HeldQueue[tuple[socket.socket, bytes, str, Network]] = HeldQueue()
        #: Seconds without a received frame after which a learned FDB entry is forgotten.
        self.learned_max_age = LEARNED_MAX_AGE
        #: The armed packet trace (`tracing.Tracer`), set and cleared by the VTEP; None (the
        #: default) costs one check per drain and per frame.
        self.tracer: Tracer | None = None
        #: Nice value for the loop's thread (0: leave it), applied when `serve()` starts.
        self.nice = LOOP_NICE
        #: One of NICE_POLICIES; `bulk_nice` is the "bulk" policy's value while moving bulk.
        self.nice_policy = "fixed"
        self.bulk_nice = 0
        #: Keyword arguments of the "paced" policy's `pacing.Pacer` (its thresholds; tests
        #: lower them); empty: its defaults.
        self.pacing: PacerArgs = {}
        #: A pass wrote a lone non-TCP frame to a TAP: someone was woken ("yield" policy).
        self._woke = False
        #: Frames (datagrams) one drain takes before the loop looks at its other fds again.
        self.drain_budget = DRAIN_BUDGET
        #: The C egress drain (`fastegress.FastEgress`, its own budget) for plain RFC networks;
        #: None (the default): the Python drain for every network.
        self.fast_egress: FastEgress | None = None
        #: TAP queue fd → the open batch and the parked ones of a drain that ran out of budget
        #: (`_drain_tap`), with its network, resumed by the queue's next drain (None: the C
        #: drain holds them). Only the loop touches it (a removed network's entry is dropped
        #: by `_flush_carried`).
        self._carried: dict[int, tuple[Network, _Carried | None]] = {}
        #: Offload mode (`set_offload`): the socket offload datagrams arrive on, the one they
        #: leave from, the peers' offload port, the chunk size, the chunks' reassembly.
        self._off_rx: socket.socket | None = None
        self._off_fd = -1
        self._off_tx_fd = -1
        #: Offload peer → monotonic time until which it gets RFC 7348: it refused offload
        #: datagrams (`_read_offload_errors`). Only the loop touches it.
        self.refused: dict[str, float] = {}
        self._off_tx: socket.socket | None = None
        self._off_port = chunks.OFFLOAD_PORT
        self._off_chunk = chunks.DEFAULT_CHUNK
        #: Chunks leave in UDP-GSO sends (each datagram within the path MTU), or, False, one
        #: datagram per chunk that the kernel fragments (chunks above the MTU).
        self.off_gso = True
        self._frame_id = 0
        self.reassembler = chunks.Reassembler()
        #: One-chunk frames (ACKs, UDP datagrams) waiting to leave together in one GSO send:
        #: parts, count, datagram size, hosts, most per send, network. Only the loop's
        #: `_drain_tap_offload` fills it and empties it before it returns.
        self._small: _SmallBatch | None = None
        #: The lane (`lane.Lane`, `set_lane`): a second thread serving the urgent fds; None
        #: (the default): this thread serves every fd.
        self._lane: Lane | None = None
        #: Monotonic time of the next aging sweep (`_pass`).
        self._next_sweep = 0.0
        #: Held by each thread for its Python work while a lane runs (released around the long
        #: C calls: `lane`'s docstring lists what it guards); None without a lane: no cost.
        self.state_lock: threading.Lock | None = None

    def set_lane(self, mode: str, nice: int | None = None) -> None:
        """Serve the urgent fds (the checksum-0 socket, every second TAP queue) in a thread of
        their own (`lane.LANE_MODES`: "off" none, "fifo", "nice"), `nice` its nice value (None:
        `lane.LANE_NICE`); before `serve` and before any network is added."""
        from overlaynet.dataplane.lane import LANE_MODES, Lane

        if mode not in LANE_MODES:
            raise ValueError(f"lane must be one of {', '.join(LANE_MODES)}, not {mode!r}")
        if self.networks:
            raise RuntimeError("set_lane before any network is added")
        if mode == "off" or self._lane is not None:
            return
        # The checksum-0 socket carries only lone frames when a checksummed twin takes the
        # bulk; without one (batching off, no reuseport filter) it carries everything, which
        # stays with the main loop. (A kernel VTEP peer sends its bulk with checksum 0 too:
        # `lane`'s docstring.)
        lone = self._rx if self._rx_checked is not None else None
        if lone is not None:
            self._poller.unregister(lone.fileno())
        self._lane = Lane(self, mode, lone)
        if nice is not None:
            self._lane.nice = nice
        self.state_lock = threading.Lock()

    @property
    def lane(self) -> Lane | None:
        return self._lane

    def set_offload(self, rx: socket.socket, tx: socket.socket, port: int, chunk: int) -> None:
        """Serve offload mode: `rx` receives offload datagrams (any network's), `tx` sends
        them to peers' `port`, super-frames cut into `chunk`-octet chunks. Once, before any
        network in offload mode is added."""
        self._off_port = port
        self.set_offload_chunk(chunk)
        self._off_tx = tx
        self._off_tx_fd = tx.fileno()
        # EPOLLERR is reported whatever the mask: the ICMP errors queued by IP_RECVERR.
        self._poller.register(self._off_tx_fd, select.EPOLLERR)
        self._off_rx = rx
        self._off_fd = rx.fileno()
        self._poller.register(self._off_fd, select.EPOLLIN)

    def set_offload_chunk(self, chunk: int, *, gso: bool | None = None) -> None:
        """Chunk payload octets from now on (one attribute each: safe while the loop runs);
        `gso` None: GSO when a chunk fits a 1500-octet underlay without fragments."""
        self.off_gso = chunk + chunks.HEADER_LEN <= chunks.GSO_CHUNK_LIMIT if gso is None else gso
        self._off_chunk = chunk

    @property
    def offload_chunk(self) -> int:
        return self._off_chunk

    def add(self, net: Network) -> None:
        """Start moving frames for `net`."""
        self.networks = {**self.networks, net.vni_key: net}
        self._by_fd = {**self._by_fd, **dict.fromkeys(net.tap_fds, net)}
        self._urgent = self._urgent | {net.latency_fd} if len(net.tap_fds) > 1 else self._urgent
        lane = self._lane
        for fd in net.tap_fds:
            if lane is not None and fd in self._urgent:
                lane.register(fd)
            else:
                self._poller.register(fd, select.EPOLLIN)

    def remove(self, net: Network) -> None:
        """Stop moving frames for `net`; safe while the loop runs."""
        # The owner may already have closed the TAP fd, which takes it out of epoll anyway.
        for fd in net.tap_fds:
            with contextlib.suppress(OSError):
                self._poller.unregister(fd)
            if self._lane is not None:
                self._lane.unregister(fd)
        self._urgent = self._urgent - {net.latency_fd}
        self._by_fd = {fd: n for fd, n in self._by_fd.items() if n is not net}
        self.networks = {k: n for k, n in self.networks.items() if n is not net}
        self.sealed = {k: s for k, s in self.sealed.items() if k != net.vni_key}

    def stop(self) -> None:
        """Ask `serve()` to return; callable from any thread or a signal handler."""
        self._stopping = True
        # A full pipe means a wake-up is already pending.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")
        if self._lane is not None:
            self._lane.wake()

    def close(self) -> None:
        """Release the epoll fd and the wake pipe (not the sockets or TAPs: their owner does)."""
        self._poller.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._lane is not None:
            self._lane.close()

    def arm(self) -> None:
        """Clear an earlier `stop()`; called before each `serve()` so that a stop arriving
        before the thread gets going is not lost."""
        self._stopping = False
        _drain_pipe(self._wake_r)
        if self._lane is not None:
            self._lane.arm()

    def serve(self) -> None:
        """Run until `stop()`; with a lane (`set_lane`), its thread runs as long (started
        here, stopped and joined before this returns)."""
        lane = self._lane
        if lane is None:
            self._serve()
            return
        lock = self.state_lock
        assert lock is not None
        lane.start()
        try:
            self._serve(lock)
        finally:
            self._stopping = True
            lane.join()
        if lane.error is not None:
            # The lane died (its exception stopped the loop): the VTEP must not go on
            # half-served, with nobody on its pings and latency queues.
            raise RuntimeError("the lane thread failed") from lane.error

    def _serve(self, lock: threading.Lock | None = None) -> None:
        """The main loop; with `lock` (a lane runs), each pass's work holds it."""
        rx_fd = self._rx.fileno()
        checked_fd = -1 if self._rx_checked is None else self._rx_checked.fileno()
        wake_fd = self._wake_r
        poll = self._poller.poll
        monotonic = time.monotonic
        self._next_sweep = monotonic() + AGE_SWEEP_INTERVAL
        # The held datagrams' heap itself: a list's truth test per wake-up is all that
        # impairments cost while nothing is held.
        held = self._held.heap
        carried = self._carried
        niced = self._set_priority() if self.nice else True
        if lock is not None:
            with lock:
                self._apply_tso()
        else:
            self._apply_tso()  # wishes made before the loop ran (`arm` cleared their wake-up)
        policy = effective_policy(self.nice_policy, self.nice, niced, lane=lock is not None)
        tid = threading.get_native_id()
        busy = 0  # "bulk": passes in a row that found work
        # "paced", "paced-wake": passes counted toward the pacer's sample, how many were lone,
        # and the pacer (None under every other policy: one truth test per pass). "paced": a
        # pass is lone when it drained an urgent TAP queue (looked up in the next pass's
        # branch, in the `ready` it drained) or delivered a non-TCP frame (`_woke`, below).
        passes = lone = 0
        by_frames = policy == "paced"
        lone_pass = False
        ready: list[tuple[int, int]] = []
        pacer = Pacer(self.nice, 0, **self.pacing) if policy.startswith("paced") else None
        if pacer is not None:
            pacer.start(monotonic())
            sample = pacer.sample
        pass_ = self._pass
        while not self._stopping:
            # A timeout only so learned entries age on an idle host: one clock read per
            # wake-up, not per frame.
            # Batches carried over from a drain: no sleeping before their queue's next turn.
            timeout = (
                0 if carried else AGE_SWEEP_INTERVAL if not held else self._until_due(monotonic())
            )
            if policy == "bulk":
                ready = poll(0)
                if ready or carried:
                    busy += 1
                    if busy == BULK_PASSES:
                        self._counters["nice_bulk_steps"] += 1
                        self._renice(tid, self.bulk_nice)
                else:
                    if busy >= BULK_PASSES:
                        self._counters["nice_idle_steps"] += 1
                        self._renice(tid, self.nice)
                    busy = 0
                    ready = poll(timeout)
            elif pacer is not None:
                if by_frames:
                    # The last pass: lone if it delivered a non-TCP frame or drained an
                    # urgent TAP queue (the kernel queues non-TCP flows there).
                    if not lone_pass:
                        urgent = self._urgent
                        for fd, _events in ready:
                            if fd in urgent:
                                lone_pass = True
                                break
                    if lone_pass:
                        lone += 1
                        lone_pass = False
                    # One poll per pass, as "fixed"; stepped down, the sleep is short so the
                    # loop notices the stream's end and takes its nice back.
                    short = pacer.nice != pacer.high and timeout > pacer.quiet
                    ready = poll(pacer.quiet if short else timeout)
                    if short and not ready:
                        self._pace(tid, pacer.on_quiet(monotonic()))
                        passes = lone = 0
                        continue
                else:
                    ready = poll(0)
                    if not ready and not carried:
                        # Nothing at once: this pass is a wake-up ("paced-wake"'s lone pass).
                        lone += 1
                        if pacer.nice != pacer.high and timeout > pacer.quiet:
                            ready = poll(pacer.quiet)
                            if not ready:
                                self._pace(tid, pacer.on_quiet(monotonic()))
                                passes = lone = 0
                                continue
                        else:
                            ready = poll(timeout)
                passes += 1
                if passes == sample:
                    # Samples spent stepped down, against all: how much of its time the
                    # loop ran at 0 (a step count alone does not say).
                    self._counters["pacer_samples"] += 1
                    self._counters["pacer_lone"] += lone
                    if pacer.nice != pacer.high:
                        self._counters["pacer_samples_paced"] += 1
                        self._counters["pacer_lone_paced"] += lone
                    self._pace(tid, pacer.on_sample(monotonic(), lone))
                    passes = lone = 0
            else:
                ready = poll(timeout)
            if lock is None:
                pass_(ready, rx_fd, checked_fd, wake_fd)
            else:
                with lock:
                    pass_(ready, rx_fd, checked_fd, wake_fd)
            if self._woke:
                self._woke = False
                if policy == "yield":
                    # Nice 0 for the yield: at -10 the woken process's deadline is behind
                    # the loop's, and the scheduler would pick the loop again.
                    self._renice(tid, 0)
                    os.sched_yield()
                    self._renice(tid, self.nice)
                else:
                    lone_pass = True  # "paced": it delivered a non-TCP frame

    def _pass(
        self, ready: list[tuple[int, int]], rx_fd: int, checked_fd: int, wake_fd: int
    ) -> None:
        """One pass of the main loop over the fds `ready` reports (and the timers)."""
        now = time.monotonic()
        if self._carried:
            self._flush_carried(ready)
        if self._held.heap:
            self._release_due(now)
        if now >= self._next_sweep:
            self._age_learned(now)
            if self._off_rx is not None:
                self.reassembler.expire()
                if self.refused:
                    self.refused = {h: t for h, t in self.refused.items() if t > now}
            self._next_sweep = now + AGE_SWEEP_INTERVAL
        if len(ready) > 1:
            # Lone frames first: the checksum-0 socket carries pings, ACKs and ARP, the TAP
            # queues in `_urgent` no TCP; cheap to pass on and waited for, while the other
            # fds may hold a drain's worth of bulk (a ping reply waited 1.35 ms median
            # behind it under a 1-stream load). With a lane they are not in this epoll.
            urgent = self._urgent
            ready.sort(key=lambda event: 0 if event[0] == rx_fd else 2 - (event[0] in urgent))
        for fd, _events in ready:
            if fd == checked_fd:
                self._drain_udp(self._rx_checked, merge=True)  # type: ignore[arg-type]
            elif fd == rx_fd:
                self._drain_udp(self._rx, merge=False)
            elif fd == wake_fd:
                _drain_pipe(wake_fd)
                self._apply_tso()
            else:
                net = self._by_fd.get(fd)
                if net is not None:
                    self._drain_tap(net, fd)
                elif fd == self._off_fd:
                    # Looked up each time: the socket may come after `serve` started.
                    self._drain_offload()
                elif fd == self._off_tx_fd:
                    self._read_offload_errors(now)

    def _pace(self, tid: int, nice: int | None) -> None:
        """Carry out the pacer's answer (None: keep the nice value) and count the step."""
        if nice is not None and self._renice(tid, nice):
            # Counted only when made: a refused step is `priority_refused`, not a step.
            self._counters["nice_paced_steps" if nice != self.nice else "nice_unpaced_steps"] += 1

    def _renice(self, tid: int, nice: int) -> bool:
        """Set thread `tid`'s nice value; False (counted) when the kernel refuses."""
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            self._counters["priority_refused"] += 1
            return False
        return True

    def _set_priority(self) -> bool:
        """Give the loop's own thread (not the rest of the process) the `nice` value: every
        frame waits for this thread's wake-up, which on a busy machine is a wait for a CPU
        (the kernel's VXLAN runs in softirq and never waits behind processes). Refused
        (no CAP_SYS_NICE): counted, False, and the loop runs at its inherited priority."""
        return self._renice(threading.get_native_id(), self.nice)

    def _flush_carried(self, ready: list[tuple[int, int]]) -> None:
        """Drain the queues holding carried batches that epoll no longer reports (they became
        empty at the very end of the last drain): the drain finds EAGAIN and sends them."""
        listed = {fd for fd, _events in ready}
        for fd, (owner, _state) in [(fd, c) for fd, c in self._carried.items() if fd not in listed]:
            if self._by_fd.get(fd) is owner:
                self._drain_tap(owner, fd)
            else:  # the network was removed meanwhile: its frames have nowhere to go
                del self._carried[fd]

    # -- impairments (`impair`): only reached while some peer is impaired ---------------------

    def _until_due(self, now: float) -> float:
        """The poll timeout while datagrams are held: until the first is due."""
        due = self._held.next_deadline()
        return AGE_SWEEP_INTERVAL if due is None else min(AGE_SWEEP_INTERVAL, max(0.0, due - now))

    def _release_due(self, now: float) -> None:
        """Send the held datagrams whose moment has come (also after `lab heal`: held
        traffic is late, never lost)."""
        for sock, datagram, host, net in self._held.due(now):
            try:
                sock.sendto(datagram, (host, self._port))
            except OSError as error:
                net.counters[_send_error(error)] += 1

    def _impair(
        self, net: Network, parts: list[bytes], targets: tuple[str, ...], sock: socket.socket
    ) -> tuple[str, ...]:
        """Carry out the impairment models' decisions for the datagrams (`parts`: VXLAN
        header, frame, ...) toward the impaired hosts among `targets`, one datagram at a time:
        drop, send now, or hold until due (twice for a duplicate). Returns the targets left
        for the normal path."""
        impaired = self.impaired
        everyone = impaired.get(ALL_PEERS)
        now = time.monotonic()
        rest: list[str] = []
        for host in targets:
            model = impaired.get(host, everyone)
            if model is None:
                rest.append(host)
                continue
            for i in range(0, len(parts), 2):
                datagram = parts[i] + parts[i + 1]
                moments, counter = model.decide(now, len(datagram))
                if counter:
                    net.counters[counter] += 1
                for at in moments:
                    if at <= now:
                        try:
                            sock.sendto(datagram, (host, self._port))
                        except OSError as error:
                            net.counters[_send_error(error)] += 1
                    elif not self._held.push(at, len(datagram), (sock, datagram, host, net)):
                        net.counters["impair_drop_queue_full"] += 1
        return tuple(rest)

    def _age_learned(self, now: float) -> None:
        """Forget the learned FDB entries that received nothing for `learned_max_age` (in the
        loop's own thread: learning happens here too, so the two never race)."""
        for net in self._by_fd.values():
            if net.learn_limit or net.learned:
                expired, net.learned = age_learned(net.fdb, now, self.learned_max_age)
                if expired:
                    net.counters["fdb_learned_expired"] += expired

    # -- egress -------------------------------------------------------------------------------

    def _drain_tap(self, net: Network, fd: int = -1, lane: Lane | None = None) -> None:
        """Egress: frames from one TAP, encapsulated and sent to the peers in GSO batches of
        equal-size frames of one flow (a shorter frame may end a batch: the kernel allows a
        short last segment). Unicast to a MAC the FDB does not know is batched the same way,
        to every peer: toward a kernel VTEP whose endpoints nobody announced, that is all
        the traffic (issue 19), and it must not cost more than a known destination.

        Several flows interleave in the one TAP queue (with 4 TCP streams, every 2 or 3
        frames: issue 15), so a batch interrupted by another flow is parked, not sent, and
        resumed when its flow comes back; each flow's frames keep their order, and every
        batch leaves by the end of the drain, when the TAP is empty: nothing waits for more."""
        if fd < 0:
            fd = net.tap_fd
        if net.tap_tso is not self._tso_wanted(net):
            self._switch_tso(net)
        # The lane drains its queues with its own C drain and keeps its own carried batches.
        fast = self.fast_egress if lane is None else lane.fast
        carried_map = self._carried if lane is None else lane.carried
        held = carried_map.get(fd)
        in_c = held is not None and held[1] is None
        if fast is not None and (held is None or in_c) and self._c_egress(net):
            # The C drain (`fastegress`), where it is exact: a plain RFC network, nothing to
            # seal, trace or impair. Decided per drain: arming a trace switches at once. Its
            # carried batches are marked in `_carried` with no state (they live in C). It
            # cuts the TAP's super-frames and finishes partial checksums itself.
            # With a lane, the other thread may switch the TAP's offloads while this drain is
            # in C (the lock let go): its "emptied" then predates the switch, and the queue
            # must stay in the new backlog. `_switch_tso` replaces the set: compared by identity.
            backlog = net.tso_backlog
            if fast.drain(self, net, fd):
                carried_map[fd] = (net, None)
            elif in_c:
                del carried_map[fd]
            if fast.emptied and fd in backlog and net.tso_backlog is backlog:
                net.tso_backlog = backlog - {fd}
            return
        if in_c and fast is not None:
            del carried_map[fd]
            fast.flush(self, net, fd)  # sent first: the rest goes on behind them
        if net.tap_tso or fd in net.tso_backlog:
            # Offloads on (offload mode, or their switch-off failed), or frames queued while
            # they were: super-frames and partial checksums, which only this path takes.
            if self._drain_tap_offload(net, fd) and not net.tap_tso:
                net.tso_backlog = net.tso_backlog - {fd}
            return
        read = os.read
        skip = net.vnet_len
        limit = skip + net.mtu + 14  # longer (VLAN-tagged, too big): the slow path decides
        shortest = skip + 14
        fdb_get = net.fdb.get
        header = net.header
        send = self._send
        batching = self._tx_gso is not None
        tracer = self.tracer
        # A sealed segment is longer: GSO limits count the datagram as it leaves.
        overhead = 8 + SEAL_OVERHEAD if net.seal is not None else 8
        parts: list[bytes] = []  # VXLAN header, inner frame, VXLAN header, inner frame, ...
        count = most = size = 0
        key = dst = b""
        entry: FdbEntry | None = None
        targets: tuple[str, ...] = ()
        # Batches put aside for another flow's frames, by flow (ports and addresses) and
        # destination MAC: parts, count, size, most, FDB entry, targets.
        parked: dict[bytes, _Parked] = {}
        carried = carried_map.pop(fd, None)
        if carried is not None and carried[0] is net and carried[1] is not None:
            parts, count, size, most, key, dst, entry, targets, parked = carried[1]
        for _ in range(self.drain_budget):
            try:
                frame = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                net.counters["tap_read_error"] += 1
                break
            if tracer is not None:
                tracer.egress(net, frame[skip:])
            n = len(frame)
            if count:
                # The common case first, with as little work as possible: one more frame of
                # the batch's size, flow and destination (validated when the batch began).
                if (
                    n == size
                    and frame[skip + 26 : skip + 38] == key
                    and frame[skip : skip + 6] == dst
                    and count < most
                ):
                    parts += (header, frame[skip:])
                    count += 1
                    continue
                if frame[skip + 26 : skip + 38] == key and frame[skip : skip + 6] == dst:
                    if shortest <= n < size and count < most:
                        # A shorter frame of the same flow ends the batch (a short last one).
                        parts += (header, frame[skip:])
                        send(net, parts, count + 1, size - skip, entry, targets)
                        count = 0
                        continue
                    send(net, parts, count, size - skip, entry, targets)
                else:
                    parked[key + dst] = (parts, count, size, most, entry, targets)
                count = 0
            if not shortest <= n <= limit:
                self._egress_one(net, frame[skip:] if skip else frame)
                continue
            key, dst = frame[skip + 26 : skip + 38], frame[skip : skip + 6]
            if parked:
                resumed = parked.pop(key + dst, None)
                if resumed is not None:
                    parts, count, size, most, entry, targets = resumed
                    if shortest <= n <= size and count < most:
                        parts += (header, frame[skip:])
                        count += 1
                        if n < size:
                            send(net, parts, count, size - skip, entry, targets)
                            count = 0
                        continue
                    send(net, parts, count, size - skip, entry, targets)
                    count = 0
            found = fdb_get(dst)
            if found is not None:
                targets = found.targets
            elif frame[skip] & 0x01 or not net.peers:
                # Broadcast and multicast (ARP answered locally, flooding), no peers: one by one.
                self._egress_one(net, frame[skip:] if skip else frame)
                continue
            else:
                targets = net.peers  # unknown unicast: head-end replication, batched
            parts = [header, frame[skip:]]
            count, size, entry = 1, n, found
            most = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // (n - skip + overhead)) if batching else 1
            if most == 1:
                send(net, parts, 1, n - skip, entry, targets)
                count = 0
        else:
            # The budget ran out with frames still queued: the open batches wait for this
            # queue's next turn (`serve` comes back to it at once, or flushes them should the
            # queue turn out empty), so a small budget does not cut batches short.
            if count or parked:
                state = (parts, count, size, most, key, dst, entry, targets, parked)
                carried_map[fd] = (net, state)
            return
        if count:
            send(net, parts, count, size - skip, entry, targets)
        for parts, count, size, _most, entry, targets in parked.values():
            send(net, parts, count, size - skip, entry, targets)

    def _send(
        self,
        net: Network,
        parts: list[bytes],
        count: int,
        inner: int,
        entry: FdbEntry | None,
        targets: tuple[str, ...],
    ) -> None:
        """One batch of `count` datagrams of `inner` + 8 octets (the last may be shorter) to
        each host in `targets`: GSO when there are several, checksum 0 when alone. `entry` is
        the destination's FDB entry (its counters), None for unknown unicast."""
        if entry is not None:
            entry.tx_frames += count
            entry.tx_bytes += inner * count if count == 1 else sum(map(len, parts[1::2]))
        else:
            net.counters["tx_unknown_unicast"] += count
        index = flow_hash(parts[1]) % len(self._tx)
        port = self._port
        seal = net.seal
        if seal is not None:
            parts = seal.seal_parts(parts)
            inner += SEAL_OVERHEAD
        if self.impaired:
            targets = self._impair(net, parts, targets, self._tx[index])
        if count == 1:
            datagram = parts[0] + parts[1]
            sendto = self._tx[index].sendto
            for host in targets:
                try:
                    sendto(datagram, (host, port))
                except OSError as error:
                    net.counters[_send_error(error)] += 1
            return
        gso = [(SOL_UDP, UDP_SEGMENT, (inner + 8).to_bytes(2, _NATIVE))]
        sendmsg = self._tx_gso[index].sendmsg  # type: ignore[index]
        for host in targets:
            net.counters["tx_gso_batches"] += 1  # before: the receiver may look right away
            try:
                sendmsg(parts, gso, 0, (host, port))
            except OSError:
                # GSO refused (an underlay MTU below the frames, a kernel without UDP GSO):
                # the same datagrams one by one, so each failure is counted as what it is.
                net.counters["tx_gso_fallback"] += 1
                for i in range(0, len(parts), 2):
                    try:
                        self._tx[index].sendto(parts[i] + parts[i + 1], (host, port))
                    except OSError as one:
                        net.counters[_send_error(one)] += 1

    def _egress_one(self, net: Network, frame: bytes) -> None:
        """A frame the batching path does not handle: `switching.egress` decides."""
        verdict, data, targets = egress(net, frame)
        if verdict is Verdict.DROP:
            return
        if verdict is Verdict.REPLY:
            with contextlib.suppress(OSError):
                os.write(net.latency_fd, PLAIN_VNET_HDR + data if net.vnet_len else data)
            return
        sock = self._tx[flow_hash(frame) % len(self._tx)]
        sendto = sock.sendto
        if net.seal is not None:
            sealed_header, sealed_frame = net.seal.seal(data[:8], data[8:])
            data = sealed_header + sealed_frame
        if self.impaired:
            targets = self._impair(net, [data[:8], data[8:]], targets, sock)
        for host in targets:
            try:
                sendto(data, (host, self._port))
            except OSError as error:
                net.counters[_send_error(error)] += 1

    # -- ingress ------------------------------------------------------------------------------

    def _drain_udp(self, sock: socket.socket, *, merge: bool) -> None:
        """Ingress: datagrams (or GRO buffers of equal-size datagrams from one sender) from the
        underlay, decapsulated into the right TAP; with `merge`, runs of in-order TCP segments
        of one flow are written as one super-frame."""
        # The same drain in C when its helper is built and allowed (`fastingress`: it returns
        # False for sealed networks, an armed trace, OVERLAYNET_ACCEL=off); both sockets.
        from overlaynet.dataplane import fastingress

        if fastingress.drain(self, sock, merge=merge):
            return
        recvmsg = sock.recvmsg
        write = os.write
        networks, members, counters = self.networks, self.members, self._counters
        sealed = self.sealed
        strict = self._strict
        tracer = self.tracer
        # The pending super-frame: its network, first segment's headers, the constant parts
        # every further segment must repeat, the next sequence number, the payloads.
        p_net: Network | None = None
        p_first = b""
        p_sender = ""
        p_hend = p_dlen = p_plen = p_total = p_cap = p_mask = p_expect = p_step = 0
        payloads: list[bytes] = []
        budget = self.drain_budget
        while budget > 0:
            try:
                data, seg, sender = _gro_read(recvmsg)
            except BlockingIOError:
                break
            except OSError:
                counters["rx_error"] += 1
                break
            size = len(data)
            budget -= -(-size // seg) if size else 1
            if tracer is not None:
                tracer.ingress(data[:seg], sender, members, networks, bool(sealed))
            if sender not in members:
                # One count per datagram, also for those the kernel coalesced (and for empty ones).
                counters["rx_drop_not_member"] += -(-size // seg) if size else 1
                continue
            if sealed and size:
                opened = self._unseal(data, seg, sender, sealed)
                if opened is None:
                    continue
                data, seg = opened
                size = len(data)
                if tracer is not None:
                    # Only now can the trace see an encrypted network's inner frame.
                    tracer.ingress(data[:seg], sender, members, networks, False)
            s = 0
            while True:
                if merge and p_net is not None and seg == p_dlen:
                    # Several full segments left that may continue the run: check them all
                    # with one comparison of their concatenated headers and take the payloads
                    # of those up to the first that differs; from there, one by one.
                    # As many as the super-frame's 64 KiB leave room for.
                    k = min((size - s) // seg, (p_cap - p_total) // p_plen + 1)
                    if k >= _BULK_MIN:
                        ramp, mask, layout = _bulk_constants(p_hend, k, p_mask, seg)
                        pieces = layout.unpack_from(data, s)  # header, payload, header, ...
                        got = int.from_bytes(b"".join(pieces[0::2]), "big") & mask
                        # Header i: the next expected one advanced by i payloads of sequence.
                        want = int.from_bytes(p_expect.to_bytes(p_hend, "big") * k, "big")
                        want += p_plen * ramp
                        width = 8 * p_hend
                        good = (
                            k if got == want else (width * k - (got ^ want).bit_length()) // width
                        )
                        if good:
                            payloads += pieces[1 : 2 * good : 2]
                            p_total += good * p_plen
                            p_expect += good * p_step
                            s += good * seg
                            if s >= size:
                                break
                e = s + seg if s + seg < size else size
                if merge:
                    # One comparison for the whole header: everything but the rebuilt fields
                    # must equal the first segment's, with the sequence number advanced.
                    if (
                        p_net is not None
                        and e - s == p_dlen
                        and int.from_bytes(data[s : s + p_hend], "big") & p_mask == p_expect
                        and p_total <= p_cap
                    ):
                        payloads.append(data[s + p_hend : e])
                        p_total += p_plen
                        # A carry out of the sequence field (wrap-around) makes the next
                        # comparison fail: the run just ends there.
                        p_expect += p_step
                        s = e
                        if s >= size:
                            break
                        continue
                    if p_net is not None:
                        # The run's last segment may be shorter and may carry PSH: it joins
                        # and ends the run (what Linux GRO does), else the run ends before it.
                        n = e - s
                        if p_hend < n <= p_dlen and p_total <= p_cap:
                            got = int.from_bytes(data[s : s + p_hend], "big") & p_mask
                            want = p_expect - ((p_dlen - n) << (8 * (p_hend - 26)))
                            if got == want or got == want | (_PSH << (8 * (p_hend - 56))):
                                payloads.append(data[s + p_hend : e])
                                self._write_merged(
                                    p_net, p_first, payloads, p_plen, p_total + n - p_hend,
                                    p_sender, push=got != want,
                                )  # fmt: skip
                                p_net = None
                                s = e
                                if s >= size:
                                    break
                                continue
                        self._write_merged(p_net, p_first, payloads, p_plen, p_total, p_sender)
                        p_net = None
                    # Can this segment start a super-frame? IPv4 without options, TCP, not a
                    # fragment, flags exactly ACK (SYN/FIN/RST/PSH/URG/ECN end merging, as in
                    # Linux GRO), payload present, lengths consistent, known network.
                    n = e - s
                    if (
                        n > _MIN_TCP_DATAGRAM
                        and data[s] & 0x08
                        and data[s + 20 : s + 23] == _ETHERTYPE_IPV4_IHL5
                        and data[s + 31] == 6
                        and data[s + 55] == _TCP_ACK
                        and not (data[s + 28] & 0x3F or data[s + 29])
                        and (not strict or (data[s : s + 4] == _STRICT_FLAGS and not data[s + 7]))
                    ):
                        net = networks.get(data[s + 4 : s + 7])
                        hend = 42 + (data[s + 54] >> 4) * 4
                        if (
                            net is not None
                            and net.vnet_len
                            and hend >= 62
                            and hend < n
                            and n - 8 <= net.mtu + 14
                            and int.from_bytes(data[s + 24 : s + 26], "big") == n - 22
                        ):
                            p_net, p_hend, p_dlen, p_plen = net, hend, n, n - hend
                            p_sender = sender
                            p_first = data[s + 8 : s + hend]
                            p_mask = _HEADER_MASKS[hend]
                            p_step = p_plen << (8 * (hend - 50))
                            p_expect = (int.from_bytes(data[s : s + hend], "big") & p_mask) + p_step
                            p_total = p_plen
                            p_cap = IPV4_MAX_TOTAL - (hend - 22) - p_plen
                            payloads = [data[s + hend : e]]
                            s = e
                            if s >= size:
                                break
                            continue
                target, inner = ingress(
                    networks, members, data[s:e] if seg != size else data, sender, counters,
                    strict=strict,
                )  # fmt: skip
                if target is not None:
                    # TCP to the bulk queue, the rest to the latency queue (`Network`).
                    queue_fd = (
                        target.tap_fd
                        if inner[23:24] == b"\x06" and inner[12:14] == _ETHERTYPE_IPV4
                        else target.latency_fd
                    )
                    if queue_fd != target.tap_fd:
                        self._woke = True
                    try:
                        write(queue_fd, PLAIN_VNET_HDR + inner if target.vnet_len else inner)
                    except OSError:
                        target.counters["rx_drop_tap_error"] += 1
                s = e
                if s >= size:
                    break
        if p_net is not None:
            self._write_merged(p_net, p_first, payloads, p_plen, p_total, p_sender)

    def _unseal(
        self, data: bytes, seg: int, sender: str, sealed: dict[bytes, Sealer]
    ) -> tuple[bytes, int] | None:
        """Open the sealed datagrams of a receive buffer (those of an encrypted network's VNI;
        others pass as they are): the plain buffer and its segment size, for the usual path
        (merging included), or None when nothing is left to pass on. A datagram that does not
        authenticate, or a plain one for an encrypted network, is dropped and counted
        (`rx_drop_unauthenticated`). Should the opened datagrams no longer be a run of equal
        sizes (GRO joined trains of two networks), they are delivered one by one here."""
        size = len(data)
        if seg >= size:
            seal = sealed.get(data[4:7])
            if seal is None:
                return data, seg
            plain = seal.open(data, sender)
            if plain is None:
                self._count_unauthenticated(data[4:7])
                return None
            return plain, len(plain)
        seal = sealed.get(data[4:7])
        if seal is not None:
            # The usual buffer: one sealed train of one network, opened in one go.
            run = seal.open_run(data, seg, sender)
            if run is not None:
                parts, bad = run
                if bad:
                    self._count_unauthenticated(data[4:7], bad)
                if not parts:
                    return None
                first = len(parts[0]) + len(parts[1])
                if len(parts[-2]) + len(parts[-1]) <= first and all(
                    len(p) == first - 8 for p in parts[1:-2:2]
                ):
                    return b"".join(parts), first
                self._deliver_each(
                    [parts[i] + parts[i + 1] for i in range(0, len(parts), 2)], sender
                )
                return None
        out: list[bytes] = []
        for s in range(0, size, seg):
            datagram = data[s : s + seg]
            seal = sealed.get(datagram[4:7])
            if seal is None:
                out.append(datagram)
                continue
            plain = seal.open(datagram, sender)
            if plain is None:
                self._count_unauthenticated(datagram[4:7])
            else:
                out.append(plain)
        if not out:
            return None
        first = len(out[0])
        if all(len(d) == first for d in out[:-1]) and len(out[-1]) <= first:
            return b"".join(out), first
        self._deliver_each(out, sender)
        return None

    def _deliver_each(self, datagrams: list[bytes], sender: str) -> None:
        """Opened datagrams that cannot go on as one run: each to its TAP as it is."""
        for datagram in datagrams:
            self._deliver_one(self.networks, self.members, datagram, sender)

    def _deliver_one(
        self, networks: dict[bytes, Network], members: frozenset[str], datagram: bytes, sender: str
    ) -> None:
        """One datagram through `switching.ingress` to its network's TAP: IPv4 TCP to the bulk
        queue, the rest to the latency queue (whose reader was woken: `_woke`). `_drain_udp`
        inlines the same steps (a call per frame costs there)."""
        target, inner = ingress(
            networks, members, datagram, sender, self._counters, strict=self._strict
        )
        if target is None:
            return
        queue_fd = (
            target.tap_fd
            if inner[23:24] == b"\x06" and inner[12:14] == _ETHERTYPE_IPV4
            else target.latency_fd
        )
        if queue_fd != target.tap_fd:
            self._woke = True
        try:
            os.write(queue_fd, PLAIN_VNET_HDR + inner if target.vnet_len else inner)
        except OSError:
            target.counters["rx_drop_tap_error"] += 1

    def _count_unauthenticated(self, vni_key: bytes, count: int = 1) -> None:
        net = self.networks.get(vni_key)
        (net.counters if net is not None else self._counters)["rx_drop_unauthenticated"] += count

    @staticmethod
    def _write_merged(
        net: Network,
        first: bytes,
        payloads: list[bytes],
        segment: int,
        total: int,
        sender: str,
        *,
        push: bool = False,
    ) -> None:
        """Write a run of merged segments: one GSO super-frame (with PSH when the last segment
        had it), or the lone segment as it came (the kernel then checks its checksums)."""
        count = len(payloads)
        entry = net.fdb.get(first[6:12])
        if entry is not None:
            entry.rx_frames += count
            entry.rx_bytes += count * len(first) + total
            if entry.learned and entry.remote_ip != sender:
                learn_source(net, first[6:12], sender)
        else:
            net.counters["rx_frames_unknown_source"] += count
            if net.learn_limit:
                learn_source(net, first[6:12], sender)
        try:
            if count == 1:
                os.writev(net.tap_fd, [PLAIN_VNET_HDR, first, payloads[0]])
                return
            headers = super_frame_headers(first, len(first), total, push=push)
            # Counted before the write, so whoever reads the TAP already sees the count.
            net.counters["rx_merged_writes"] += 1
            os.writev(net.tap_fd, [vnet_header(segment, len(first), gso=True), headers, *payloads])
        except OSError:
            net.counters["rx_drop_tap_error"] += count

    # -- offload mode (`wire.chunks`, `segment`) ----------------------------------------------

    def poke(self) -> None:
        """Wake the loop to apply changed TAP offload wishes (`Network.tso_allowed`) now,
        not at the TAP's next frame, and to recompute its sleep (the lane held impaired
        datagrams); callable from any thread."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"t")

    def _apply_tso(self) -> None:
        """Switch every network's TAP whose offloads differ from what is wanted."""
        for net in self.networks.values():
            if net.tap_tso is not self._tso_wanted(net):
                self._switch_tso(net)

    def _c_egress(self, net: Network) -> bool:
        """Whether the C egress drain serves `net` now: a plain RFC network with GSO sockets,
        nothing sealed, traced or impaired (`fastegress`)."""
        return (
            not net.offload
            and net.seal is None
            and self.tracer is None
            and not self.impaired
            and self._tx_gso is not None
        )

    def _tso_wanted(self, net: Network) -> bool:
        """Whether `net`'s TAP should hand over super-frames now. Offload mode: only while
        every peer takes them whole (no RFC-only peer, none refused offload, no sealing or
        impairments, which act on RFC datagrams). Otherwise: while the C drain serves the
        network (it cuts them into RFC segments with one read per super-frame instead of one
        per frame: issues 15 and 19); anything else turns them off, the Python path finishing
        what was queued under them (`tso_backlog`)."""
        if not net.offload:
            fast = self.fast_egress
            return (
                fast is not None
                and fast.tso
                and net.tso_allowed
                and net.vnet_len == VNET_HDR_LEN
                and self._c_egress(net)
            )
        if not net.tso_allowed or net.seal is not None or self.impaired:
            return False
        refused = self.refused
        return not refused or not any(host in refused for host in net.offload_peers)

    def _switch_tso(self, net: Network) -> None:
        """Turn the TAP's offloads on or off (TUNSETOFFLOAD, one call for the device). Off: the
        frames already queued were made under offloads, so each queue goes through the offload
        path until it runs empty (`tso_backlog`). On: waits until no batch of the RFC path is
        carried over in a queue by the Python drain (the C drain and the offload path would
        never send it; the C drain's own carried batches go on in C)."""
        wanted = not net.tap_tso
        carried = self._carried
        if wanted and any(fd in carried and carried[fd][1] is not None for fd in net.tap_fds):
            return
        lane = self._lane
        if wanted and lane is not None:
            theirs = lane.carried
            if any(fd in theirs and theirs[fd][1] is not None for fd in net.tap_fds):
                return
        try:
            set_offloads(net.tap_fd, tso=wanted, csum=wanted)
        except OSError:
            net.counters["tap_offload_error"] += 1
            # Not retried per frame: the TAP keeps its offloads, which the offload path handles.
            net.tso_allowed = net.tap_tso
            return
        net.tap_tso = wanted
        net.tso_backlog = frozenset() if wanted else frozenset(net.tap_fds)
        net.counters["tap_tso_on" if wanted else "tap_tso_off"] += 1

    def _drain_tap_offload(self, net: Network, fd: int) -> bool:
        """Egress of a TAP with offloads: each read is a virtio-net header and a frame, maybe a
        TCP super-frame or a partial checksum. Toward offload peers it leaves whole, in chunks;
        toward every other peer finished for the RFC wire (segmented, checksummed: `segment`),
        in GSO batches. A frame with nothing left to do takes the usual single-frame path.
        True when the queue ran empty (not the budget out)."""
        read = os.read
        tracer = self.tracer
        offload_peers = net.offload_peers
        # Impairments act per RFC datagram and sealing on VXLAN: such networks use RFC only.
        whole = bool(offload_peers) and net.seal is None and not self.impaired
        # The budget counts MTU-sized frames, as the other drains do: a super-frame is many,
        # and an ACK queued behind 32 of them waited ~2 MB of work (cwnd-bound transfers).
        budget = self.drain_budget * OFFLOAD_BUDGET_UNIT
        emptied = False
        while budget > 0:
            try:
                data = read(fd, READ_SIZE)
            except BlockingIOError:
                emptied = True
                break
            except OSError:
                net.counters["tap_read_error"] += 1
                break
            budget -= len(data) if len(data) > OFFLOAD_BUDGET_UNIT else OFFLOAD_BUDGET_UNIT
            # The frame itself is sliced out only where needed: a 64 KB copy per super-frame
            # is work the offload path does not have to do.
            vnet = data[:10]
            if tracer is not None:
                tracer.egress(net, data[10:])
            if len(data) < 24:
                net.counters["tap_runt"] += 1
                continue
            if vnet == PLAIN_VNET_HDR:
                if self._small is not None:
                    self._flush_small()
                self._egress_one(net, data[10:])
                continue
            entry, targets = _offload_targets(net, data)
            if whole and targets:
                refused = self.refused
                ours: tuple[str, ...]
                if len(targets) == 1:  # the usual known unicast: no generator per frame
                    peer = targets[0]
                    ours = targets if peer in offload_peers and peer not in refused else ()
                else:
                    ours = tuple(t for t in targets if t in offload_peers and t not in refused)
                if ours:
                    if len(data) <= self._off_chunk and self.off_gso:
                        self._queue_small(net, data, ours, entry)
                    else:
                        if self._small is not None:
                            self._flush_small()
                        self._send_whole(net, data, ours, entry)
                    if len(ours) == len(targets):
                        continue
                    targets = tuple(t for t in targets if t not in ours)
            if self._small is not None:
                self._flush_small()  # whatever leaves otherwise keeps its order behind them
            self._finish(net, data, entry, targets)
        if self._small is not None:
            self._flush_small()
        return emptied

    def _egress_offloaded(self, net: Network, data: bytes) -> None:
        """One read (virtio-net header and frame) made under TAP offloads that the C drain
        left to Python (`fastegress`): finished for the RFC wire as `_drain_tap_offload`
        finishes it, so no partial checksum reaches the wire or the single-frame path."""
        if len(data) < 24:
            net.counters["tap_runt"] += 1
        elif data[:10] == PLAIN_VNET_HDR:
            self._egress_one(net, data[10:])
        else:
            entry, targets = _offload_targets(net, data)
            self._finish(net, data, entry, targets)

    def _finish(
        self, net: Network, data: bytes, entry: FdbEntry | None, targets: tuple[str, ...]
    ) -> None:
        """A read made under offloads, RFC-ready (`segment.wire_frames`: segmented, checksums
        finished), to `targets` in GSO batches, or without targets the single-frame path."""
        try:
            frames = wire_frames(data[:10], data[10:])
        except SegmentError as error:
            net.counters[error.reason] += 1
            return
        net.counters["tx_offload_finished"] += 1
        if too_big(net.mtu, frames[0]) or too_big(net.mtu, frames[-1]):
            # Segments are at most the first's size; a lone frame is both. A read whose virtio-
            # net header has stray fields but no flags is the frame as it came: check it as
            # `switching.egress` does (RFC 7348 section 4.3: never fragmented). A super-frame
            # cut over the MTU is dropped whole, counted once (the C drain leaves it here).
            net.counters["tx_drop_too_big"] += 1
            return
        if not targets:
            for one in frames:
                self._egress_one(net, one)
            return
        self._send_finished(net, frames, entry, targets)

    def _send_finished(
        self, net: Network, frames: list[bytes], entry: FdbEntry | None, targets: tuple[str, ...]
    ) -> None:
        """Wire-ready frames (equal sizes but the last) to `targets` in GSO batches."""
        header = net.header
        size = len(frames[0])
        overhead = 8 + SEAL_OVERHEAD if net.seal is not None else 8
        most = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // (size + overhead))
        for i in range(0, len(frames), most):
            batch = frames[i : i + most]
            parts: list[bytes] = []
            for one in batch:
                parts += (header, one)
            self._send(net, parts, len(batch), size, entry, targets)

    def _send_whole(
        self, net: Network, data: bytes, hosts: tuple[str, ...], entry: FdbEntry | None
    ) -> None:
        """One virtio-net header and frame, in chunks, to offload peers `hosts`: UDP-GSO sends
        of MTU-sized chunks (or, with chunks above the MTU, one IP-fragmented datagram each)."""
        # The same sends in C when its helper is built and allowed (`fastoffload`: it returns
        # False when the Python sends must run).
        from overlaynet.dataplane import fastoffload

        if fastoffload.send_whole(self, net, data, hosts, entry):
            return
        sock = self._off_tx
        if sock is None:
            net.counters["tx_offload_no_socket"] += 1
            return
        self._frame_id = frame_id = (self._frame_id + 1) & 0xFFFFFFFF
        chunk = self._off_chunk
        parts = chunks.split(net.vni, frame_id, data, chunk)
        count = len(parts) // 2
        if entry is not None:
            entry.tx_frames += 1
            entry.tx_bytes += len(data) - 10
        else:
            net.counters["tx_unknown_unicast"] += 1
        port = self._off_port
        gso = self.off_gso
        most = (
            max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // (chunk + chunks.HEADER_LEN)))
            if gso
            else 1
        )
        cmsg = [(SOL_UDP, UDP_SEGMENT, (chunk + chunks.HEADER_LEN).to_bytes(2, _NATIVE))]
        sendmsg = sock.sendmsg
        for host in hosts:
            net.counters["tx_offload_frames"] += 1
            net.counters["tx_offload_chunks"] += count
            address = (host, port)
            for i in range(0, count, most):
                piece = parts[2 * i : 2 * (i + most)]
                for _attempt in (1, 2):
                    try:
                        sendmsg(piece, cmsg if len(piece) > 2 else (), 0, address)
                        break
                    except ConnectionRefusedError:
                        # An ICMP error about an earlier datagram (to any peer) is reported
                        # by the next send: it is read from the error queue, this one retried.
                        self._read_offload_errors(time.monotonic())
                    except OSError as error:
                        net.counters[_send_error(error)] += 1
                        break

    def _queue_small(
        self, net: Network, data: bytes, hosts: tuple[str, ...], entry: FdbEntry | None
    ) -> None:
        """A one-chunk frame for `hosts`, added to the open batch of equal-size ones (a run of
        ACKs or UDP datagrams leaves in one GSO send, as on the RFC wire); a different size or
        set of hosts, or a full batch, sends the open one first."""
        size = len(data) + chunks.HEADER_LEN
        batch = self._small
        if batch is not None and (
            batch.size != size or batch.hosts != hosts or batch.count >= batch.most
        ):
            self._flush_small()
            batch = None
        self._frame_id = frame_id = (self._frame_id + 1) & 0xFFFFFFFF
        # `chunks.encode_header(net.vni, frame_id, 0, 1)`, without its checks per datagram.
        head = chunks.PREFIX + net.vni_key + b"\x01" + frame_id.to_bytes(4) + b"\x00\x00\x00\x00"
        if batch is None:
            self._small = _SmallBatch(net, [head, data], size, hosts)
        else:
            batch.parts += (head, data)
            batch.count += 1
        if entry is not None:
            entry.tx_frames += 1
            entry.tx_bytes += len(data) - 10
        else:
            net.counters["tx_unknown_unicast"] += 1
        net.counters["tx_offload_frames"] += len(hosts)
        net.counters["tx_offload_chunks"] += len(hosts)

    def _flush_small(self) -> None:
        """Send the open batch of one-chunk frames (`_queue_small`)."""
        batch, self._small = self._small, None
        sock = self._off_tx
        if batch is None or sock is None:
            return
        net = batch.net
        cmsg = [(SOL_UDP, UDP_SEGMENT, batch.size.to_bytes(2, _NATIVE))] if batch.count > 1 else []
        for host in batch.hosts:
            for _attempt in (1, 2):
                try:
                    sock.sendmsg(batch.parts, cmsg, 0, (host, self._off_port))
                    break
                except ConnectionRefusedError:
                    self._read_offload_errors(time.monotonic())
                except OSError as error:
                    net.counters[_send_error(error)] += 1
                    break

    def _read_offload_errors(self, now: float) -> None:
        """The offload socket's queued ICMP errors: a peer whose offload port is closed
        (port unreachable) gets RFC 7348 for OFFLOAD_REFUSED_FOR seconds, counted."""
        sock = self._off_tx
        if sock is None:
            return
        while True:
            try:
                _data, ancillary, _flags, address = sock.recvmsg(
                    1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._counters["offload_error_queue_error"] += 1
                return
            for level, kind, value in ancillary:
                refused = (
                    level == socket.IPPROTO_IP
                    and kind == IP_RECVERR
                    and int.from_bytes(value[:4], _NATIVE) == errno.ECONNREFUSED
                )
                if refused and address:
                    if address[0] not in self.refused:
                        self._counters["offload_peer_refused"] += 1
                    self.refused = {**self.refused, address[0]: now + OFFLOAD_REFUSED_FOR}

    def _drain_offload(self) -> None:
        """Ingress of offload datagrams (GRO buffers of chunks): reassembled, then written to
        the TAP whole, virtio-net header as the sender's TAP gave it (a GSO write: the kernel
        segments toward the container); consecutive datagrams of one UDP flow leave in one
        GSO write (`offload.UdpRuns`), flushed before the drain returns."""
        # The same drain in C when its helper is built and allowed (`fastoffload`: it returns
        # False when the Python drain must run).
        from overlaynet.dataplane import fastoffload

        if fastoffload.drain(self):
            return
        sock = self._off_rx
        assert sock is not None
        recvmsg = sock.recvmsg
        members, counters = self.members, self._counters
        feed = self.reassembler.feed
        feed_buffer = self.reassembler.feed_buffer
        runs = UdpRuns(self.reassembler.counters)
        merge, deliver = runs.add, self._deliver_whole
        budget = self.drain_budget
        while budget > 0:
            try:
                data, seg, sender = _gro_read(recvmsg)
            except BlockingIOError:
                break
            except OSError:
                counters["rx_error"] += 1
                break
            size = len(data)
            datagrams = -(-size // seg) if size else 1
            budget -= datagrams
            if sender not in members:
                counters["rx_drop_not_member"] += datagrams
                continue
            if seg >= size:
                done = feed(sender, data)
                if done is not None:
                    for out in merge(sender, *done):
                        deliver(*out)
                continue
            for vni, frame in feed_buffer(sender, data, seg):
                for out in merge(sender, vni, frame):
                    deliver(*out)
        for out in runs.flush():
            deliver(*out)

    def _deliver_whole(self, sender: str, vni: int, data: bytes) -> None:
        """A reassembled virtio-net header and frame into its network's TAP."""
        net = self.networks.get(vni.to_bytes(3, "big"))
        if net is None or not net.offload or net.seal is not None:
            # Only networks that advertised offload take it (an encrypted one never does).
            self._counters["rx_drop_offload_refused"] += 1
            return
        if len(data) < 10 + 14:
            net.counters["rx_offload_runt"] += 1
            return
        src = data[16:22]
        entry = net.fdb.get(src)
        if entry is not None:
            entry.rx_frames += 1
            entry.rx_bytes += len(data) - 10
            if entry.learned and entry.remote_ip != sender:
                learn_source(net, src, sender)
        else:
            net.counters["rx_frames_unknown_source"] += 1
            if net.learn_limit:
                learn_source(net, src, sender)
        net.counters["rx_offload_frames"] += 1
        queue_fd = (
            net.tap_fd
            if data[33:34] == b"\x06" and data[22:24] == _ETHERTYPE_IPV4
            else net.latency_fd
        )
        if queue_fd != net.tap_fd:
            self._woke = True
        try:
            os.write(queue_fd, data)
        except OSError:
            net.counters["rx_drop_tap_error"] += 1


class _SmallBatch:
    """One-chunk offload datagrams of one size for the same hosts, sent in one GSO send."""

    __slots__ = ("count", "hosts", "most", "net", "parts", "size")

    def __init__(self, net: Network, parts: list[bytes], size: int, hosts: tuple[str, ...]) -> None:
        self.net = net
        self.parts = parts
        self.count = 1
        self.size = size
        self.hosts = hosts
        self.most = max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size))


def _offload_targets(net: Network, data: bytes) -> tuple[FdbEntry | None, tuple[str, ...]]:
    """The FDB entry and hosts of a read made under offloads (virtio-net header, frame): none
    for broadcast, multicast and unknown unicast without peers (the single-frame path)."""
    entry = net.fdb.get(data[10:16])
    if entry is not None:
        return entry, entry.targets
    if data[10] & 0x01 or not net.peers:
        return None, ()  # flooded or answered here: the single-frame path, finished
    return None, net.peers  # unknown unicast: head-end replication


def _gro_read(
    recvmsg: Callable[[int, int], tuple[bytes, list[tuple[int, int, bytes]], int, Any]],
) -> tuple[bytes, int, str]:
    """One receive from a UDP_GRO socket: the buffer, its segment size (the datagrams the
    kernel coalesced are that long, the last maybe shorter; the buffer's own length when
    nothing was coalesced) and the sender's address. Raises what recvmsg raises."""
    data, ancillary, _flags, address = recvmsg(READ_SIZE, _GRO_CMSG_SPACE)
    seg = len(data)
    for level, kind, value in ancillary:
        if level == SOL_UDP and kind == UDP_GRO:
            seg = int.from_bytes(value[:4], _NATIVE) or seg
    return data, seg, address[0]


def _send_error(error: OSError) -> str:
    """The counter for a failed send: EMSGSIZE means the underlay path MTU is below the frame
    (DF is always set, RFC 7348 section 4.3)."""
    return "tx_drop_too_big" if error.errno == errno.EMSGSIZE else "tx_error"


def _drain_pipe(fd: int) -> None:
    """Empty the wake pipe so level-triggered epoll stops reporting it."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass
