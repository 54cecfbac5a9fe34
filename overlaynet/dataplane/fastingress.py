"""The ingress drains through the C helper `accel/ingress.c` (issues 15 and 19): the
per-datagram work of `HotLoop._drain_udp` (receive, the in-order TCP run check and merge, the
super-frame's TAP write; with `merge=False`, the lone-frame socket, no merging) in C, and the
delivery of the datagrams `switching.ingress` passes unchanged (UDP, ICMP, ARP, pure ACKs);
every decision that is not per frame stays here, in Python, with the same counters and the
same values as the Python drain.

`drain(loop, sock)` is what the hot loop calls first; it returns False when the C path does not
apply (no compiler, `OVERLAYNET_ACCEL=off`, a sealed network, an armed trace), and the Python
drain runs as before. The C side counts itself the runs and frames of the source MACs it holds
a slot for when they need no learning (`Engine`: per-slot frames, octets and merged writes,
folded into the FDB entries and `rx_merged_writes` at the drain's end). Everything else comes
back, in order, as one record per thing Python must do: a finished run of a MAC without a slot
(counted on its FDB entry, learned, `rx_merged_writes`; the C side writes it on the next call,
so these counters move before the TAP sees it, as in Python; what C counts itself moves at the
drain's end, just after the write), a run of delivered frames of one
network, sender and source MAC (counted as `ingress` counts each of them; written on the next
call as well), any other datagram (passed to `switching.ingress` exactly as the Python drain
does), a failed TAP write, the end (datagrams from non-members, receive errors, whether a
frame counted in C went to a latency queue, how many slots to fold).

What it bought is in the profile of both VTEPs at 4 streams,
`benchmarks/profile_vtep.py --path a2a --streams 4 --system` (profiles/s7-system-a2a-P4-*.md).

Cost on a fresh machine: one `cc` run of a few hundred lines at the VTEP's first drain (cached
by the source's hash, `accel`); without a compiler nothing changes.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from overlaynet.dataplane import accel
from overlaynet.dataplane.fdb import FdbEntry, generation
from overlaynet.dataplane.switching import Network, learn_source

if TYPE_CHECKING:
    from overlaynet.dataplane.hotpath import HotLoop

#: The C side's ABI version (`in_abi`): a library of another version is not used.
ABI = 3
#: The helper's name for `accel.load`.
HELPER = "ingress"
#: Record kinds (`in_step`'s return value).
DONE, RUN, PY, TAPERR, FRAMES = 0, 1, 2, 3, 4
#: C contexts one loop may hold (one per socket it drains: the checksummed and the lone-frame
#: socket); a loop handed yet other sockets drains those in Python. Each holds 1 MiB of buffers.
MAX_ENGINES = 2
#: Source MACs one context counts itself (`IN_SLOTS`): when full, the table is emptied and
#: filled again with the MACs seen from then on.
SLOTS = 1024
#: Host-level counter of the drains the C path took: shows it is on (`network vtep`); the
#: counters the Python drain keeps have the same values either way.
DRAIN_COUNTER = "rx_accel_drains"


class _Record(ctypes.Structure):
    """`struct in_rec`."""

    _fields_ = [
        ("kind", ctypes.c_int32),
        ("net", ctypes.c_int32),
        ("sender", ctypes.c_int32),
        ("count", ctypes.c_int32),
        ("bytes", ctypes.c_int64),
        ("ptr", ctypes.c_uint64),
        ("len", ctypes.c_int32),
        ("not_member", ctypes.c_int32),
        ("rx_error", ctypes.c_int32),
        ("woke", ctypes.c_int32),
        ("mac", ctypes.c_uint8 * 8),
    ]


class _Net(ctypes.Structure):
    """`struct in_net`."""

    _fields_ = [
        ("vni", ctypes.c_uint32),
        ("tap_fd", ctypes.c_int32),
        ("mtu", ctypes.c_int32),
        ("vnet_len", ctypes.c_int32),
        ("latency_fd", ctypes.c_int32),
    ]


_MAC_AT = _Record.mac.offset


def declare_context(
    lib: ctypes.CDLL,
    prefix: str,
    abi: int,
    new_args: list[type[ctypes._SimpleCData[Any]]],
    begin_args: list[type[ctypes._SimpleCData[Any]]],
) -> bool:
    """Set the signatures every drain helper has (`<prefix>_abi`, `_new`, `_free`, `_record`,
    `_set_tables`, `_begin`, `_step`; `_new` and `_begin` take `new_args` and `begin_args`);
    False when its ABI is not `abi`."""

    def function(name: str) -> Any:
        return getattr(lib, f"{prefix}_{name}")

    function("abi").restype = ctypes.c_int
    function("abi").argtypes = []
    if function("abi")() != abi:
        return False
    function("new").restype = ctypes.c_void_p
    function("new").argtypes = new_args
    for name in ("free", "step"):
        function(name).argtypes = [ctypes.c_void_p]
    function("free").restype = None
    function("step").restype = ctypes.c_int
    function("record").restype = ctypes.c_void_p
    function("record").argtypes = [ctypes.c_void_p]
    function("set_tables").restype = ctypes.c_int
    function("set_tables").argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
    ]  # fmt: skip
    function("begin").restype = None
    function("begin").argtypes = [ctypes.c_void_p, *begin_args]
    return True


def _declare(lib: ctypes.CDLL) -> bool:
    """Set the helper's signatures; False when its ABI is not ours."""
    if not declare_context(
        lib, "in", ABI, [], [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    ):
        return False
    return declare_slots(lib, "in")


def declare_slots(lib: ctypes.CDLL, prefix: str) -> bool:
    """Set the signatures of a helper's slot table (`<prefix>_learn`, `_forget`, `_fold`:
    `SlotContext`); False when its size is not `SLOTS` (the Python side's arrays are sized by
    it: a library built with another size must not write past them)."""
    size = getattr(lib, f"{prefix}_slots")
    size.restype = ctypes.c_int
    size.argtypes = []
    if size() != SLOTS:
        return False
    learn = getattr(lib, f"{prefix}_learn")
    learn.restype = ctypes.c_int
    learn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    forget = getattr(lib, f"{prefix}_forget")
    forget.restype = None
    forget.argtypes = [ctypes.c_void_p, ctypes.c_int]
    fold = getattr(lib, f"{prefix}_fold")
    fold.restype = ctypes.c_int
    fold.argtypes = [ctypes.c_void_p, *[ctypes.c_void_p] * 4, ctypes.c_int]
    return True


def load_declared(helper: str, declare: Callable[[ctypes.CDLL], bool]) -> ctypes.CDLL | None:
    """Helper `helper`, loaded (built now if need be) and `declare`d; None when it is
    unavailable or speaks another ABI."""
    lib = accel.load(helper)
    return lib if lib is not None and declare(lib) else None


class Context:
    """A C drain context (`<prefix>_new(*args)`, freed with the object or `close`) and its
    record (at `self._record_at`), for one socket of one hot loop."""

    def __init__(self, lib: ctypes.CDLL, prefix: str, fd: int, *args: int) -> None:
        ctx = getattr(lib, f"{prefix}_new")(*args)
        if not ctx:
            raise MemoryError(f"{prefix}_new")
        self._lib = lib
        self._prefix = prefix
        self._ctx: int = ctx
        self.fd = fd
        self._record_at: int = getattr(lib, f"{prefix}_record")(ctx)
        self._finalizer = weakref.finalize(self, getattr(lib, f"{prefix}_free"), ctx)

    def close(self) -> None:
        self._finalizer()

    def _set_tables(
        self, table: ctypes.Array[Any], nnets: int, members: frozenset[str]
    ) -> list[str]:
        """Give the C side `nnets` networks of `table` and the member addresses (the IPv4
        ones spelled as a socket's sender is); returns the senders by the C side's index."""
        senders: list[str] = []
        for member in members:
            try:
                parsed = ipaddress.IPv4Address(member)
            except ValueError:
                continue  # never an IPv4 socket's sender
            if str(parsed) == member:  # the sender's spelling: anything else never matches
                senders.append(member)
        addresses = (ctypes.c_uint32 * max(1, len(senders)))(
            *(int.from_bytes(socket.inet_aton(m), sys.byteorder) for m in senders)
        )
        set_tables = getattr(self._lib, f"{self._prefix}_set_tables")
        if set_tables(self._ctx, table, nnets, addresses, len(senders)):
            raise MemoryError(f"{self._prefix}_set_tables")
        return senders


class SlotContext(Context):
    """A drain context whose C side counts itself the frames of the source MACs it holds a
    slot for (common.h's table: `<prefix>_learn`, `_forget`, `_fold`) when they need no
    learning: the FDB entry's remote member and whether it is learned.

    Once Python has counted a record of a MAC, `_install` gives it its slot when its entry
    exists. A slot is made for one entry object and what it counts is folded into that object
    only (`_fold`, at the end of each drain and before any slot is dropped), the slot's third
    count into its network's counter `FOLDED`. A network's slots are dropped when its table
    changed (`fdb.generation`; a plain dict counts as changed at every look): the subclass
    calls `_check_all` at each drain's start and `_check`/`_check_all` after what Python
    handled (its learning changes the table mid-drain). `_nets` and `_sender_index` are the C
    side's network and member indexes (set with its tables, after `_forget(-1)`)."""

    #: The network counter the slots' third count adds to.
    FOLDED = ""

    def __init__(self, lib: ctypes.CDLL, prefix: str, fd: int, *args: int) -> None:
        super().__init__(lib, prefix, fd, *args)
        self._learn = getattr(lib, f"{prefix}_learn")
        self._forget_c = getattr(lib, f"{prefix}_forget")
        self._fold_c = getattr(lib, f"{prefix}_fold")
        self._nets: list[Network] = []
        self._senders: list[str] = []
        self._sender_index: dict[str, int] = {}
        #: Slot → the entry it counts for and its network (None: free).
        self._slot_entry: list[FdbEntry | None] = [None] * SLOTS
        self._slot_net: list[Network | None] = [None] * SLOTS
        #: Network index → (its table, the table's generation) when the slots of its MACs
        #: were made; networks without slots are not here.
        self._watched: dict[int, tuple[dict[bytes, FdbEntry], int]] = {}
        self._fold_slots = (ctypes.c_int32 * SLOTS)()
        self._fold_frames = (ctypes.c_int64 * SLOTS)()
        self._fold_bytes = (ctypes.c_int64 * SLOTS)()
        self._fold_merged = (ctypes.c_int64 * SLOTS)()
        self._fold_views = (
            memoryview(self._fold_slots).cast("B").cast("i"),
            memoryview(self._fold_frames).cast("B").cast("q"),
            memoryview(self._fold_bytes).cast("B").cast("q"),
            memoryview(self._fold_merged).cast("B").cast("q"),
        )

    def _fold(self) -> None:
        """Add what the slots counted to their entries and networks, and zero it."""
        n = self._fold_c(
            self._ctx, self._fold_slots, self._fold_frames, self._fold_bytes, self._fold_merged,
            SLOTS,
        )  # fmt: skip
        if not n:
            return
        slots, frames, octets, merged = (view[:n].tolist() for view in self._fold_views)
        slot_entry, slot_net, folded = self._slot_entry, self._slot_net, self.FOLDED
        for slot, count, size, writes in zip(slots, frames, octets, merged, strict=True):
            entry = slot_entry[slot]
            if entry is not None:
                entry.rx_frames += count
                entry.rx_bytes += size
            if writes:
                net = slot_net[slot]
                if net is not None:
                    net.counters[folded] += writes

    def _forget(self, index: int) -> None:
        """Fold, then drop the slots of network `index` (-1: all)."""
        self._fold()
        self._forget_c(self._ctx, index)
        if index < 0:
            self._watched.clear()
            self._slot_entry = [None] * SLOTS
            self._slot_net = [None] * SLOTS
            return
        self._watched.pop(index, None)
        net = self._nets[index]
        for slot, owner in enumerate(self._slot_net):
            if owner is net:
                self._slot_entry[slot] = self._slot_net[slot] = None

    def _check(self, index: int) -> None:
        """Drop network `index`'s slots if its table changed since they were made."""
        watched = self._watched.get(index)
        if watched is not None:
            table, seen = watched
            fdb = self._nets[index].fdb
            if fdb is not table or seen < 0 or generation(fdb) != seen:
                self._forget(index)

    def _check_all(self) -> None:
        """`_check` every network with slots (once per drain: one comparison each)."""
        nets = self._nets
        stale = [
            index
            for index, (table, seen) in self._watched.items()
            if nets[index].fdb is not table or seen < 0 or generation(table) != seen
        ]
        for index in stale:
            self._forget(index)

    def _install(self, index: int, mac: bytes) -> None:
        """After Python counted a record of network `index`'s source `mac`: from now on the
        C side counts it, when it has an entry (checked first: what Python did may have
        changed the table)."""
        self._check(index)
        net = self._nets[index]
        # The generation before the entry (`fdb.FdbTable`'s rule): a change the control
        # thread makes meanwhile then shows at the next check.
        table = net.fdb
        seen = generation(table)
        entry = table.get(mac)
        if entry is None:
            return  # unknown: counted (and maybe learned) by Python, frame by frame
        sender = self._sender_index.get(entry.remote_ip, -1)
        if entry.learned and sender < 0:
            return  # learned at a non-member: every frame is a learning decision
        slot = self._learn(self._ctx, index, mac, sender, entry.learned)
        if slot < 0:
            self._forget(-1)  # full: start again with the MACs seen from now on
            slot = self._learn(self._ctx, index, mac, sender, entry.learned)
        elif self._slot_entry[slot] is not entry and self._slot_entry[slot] is not None:
            self._fold()  # what it counted belongs to the entry it was made for
        if index not in self._watched:
            self._watched[index] = (table, seen)
        self._slot_entry[slot] = entry
        self._slot_net[slot] = net


class Engine(SlotContext):
    """One C drain context (receive buffers, tables, counted source MACs: `SlotContext`) for
    one socket of one hot loop."""

    FOLDED = "rx_merged_writes"

    def __init__(self, lib: ctypes.CDLL, fd: int) -> None:
        super().__init__(lib, "in", fd)
        self._rec = _Record.from_address(self._record_at)
        self._mac_at = self._record_at + _MAC_AT
        #: The tables' sources, compared by identity (the loop swaps them wholesale).
        self._networks: dict[bytes, Network] | None = None
        self._members: frozenset[str] | None = None

    def set_tables(self, networks: dict[bytes, Network], members: frozenset[str]) -> None:
        """Give the C side the networks (index → VNI, TAP fd, MTU, virtio-net header) and
        the member addresses (index → the sender string Python learns with); the counted MACs
        are forgotten (their network and member indexes change)."""
        self._forget(-1)
        nets = list(networks.values())
        table = (_Net * max(1, len(nets)))()
        for i, net in enumerate(nets):
            table[i] = _Net(
                int.from_bytes(net.vni_key, "big"), net.tap_fd, net.mtu, net.vnet_len,
                net.latency_fd,
            )  # fmt: skip
        senders = self._set_tables(table, len(nets), members)
        self._networks, self._members = networks, members
        self._nets, self._senders = nets, senders
        self._sender_index = {sender: i for i, sender in enumerate(senders)}

    def drain(self, loop: HotLoop, merge: bool) -> None:
        """One drain of the socket (`HotLoop._drain_udp`), merging TCP runs with `merge`."""
        networks, members = loop.networks, loop.members
        if networks is not self._networks or members is not self._members:
            self.set_tables(networks, members)
        if self._watched:
            self._check_all()
        counters = loop._counters
        counters[DRAIN_COUNTER] += 1
        ctx, rec, step = self._ctx, self._rec, self._lib.in_step
        nets, senders = self._nets, self._senders
        string_at = ctypes.string_at
        self._lib.in_begin(ctx, self.fd, loop.drain_budget, loop._strict, merge)
        # With a lane (`lane`), the loop's state lock is held here and let go for each C step:
        # the step touches this engine only (one per socket, one thread per socket), so the
        # other thread's Python work goes on meanwhile.
        lock = loop.state_lock
        while True:
            if lock is None:
                kind = step(ctx)
            else:
                lock.release()
                try:
                    kind = step(ctx)
                finally:
                    lock.acquire()
            if kind == RUN:
                # `HotLoop._write_merged`'s bookkeeping; the C side writes on the next step.
                index = rec.net
                net, sender, count = nets[index], senders[rec.sender], rec.count
                mac = string_at(self._mac_at, 6)
                entry = net.fdb.get(mac)
                if entry is not None:
                    entry.rx_frames += count
                    entry.rx_bytes += rec.bytes
                    if entry.learned and entry.remote_ip != sender:
                        learn_source(net, mac, sender)
                else:
                    net.counters["rx_frames_unknown_source"] += count
                    if net.learn_limit:
                        learn_source(net, mac, sender)
                if count > 1:
                    net.counters["rx_merged_writes"] += 1
                self._install(index, mac)
            elif kind == FRAMES:
                # `ingress`'s accounting of each frame; the C side writes them on the next step.
                index = rec.net
                mac = string_at(self._mac_at, 6)
                _account(nets[index], mac, senders[rec.sender], rec.count, rec.bytes, rec.len)
                if rec.woke:
                    loop._woke = True
                self._install(index, mac)
            elif kind == PY:
                _deliver(loop, networks, members, string_at(rec.ptr, rec.len), senders[rec.sender])
                if self._watched:
                    self._check_all()  # `ingress` may have learned
            elif kind == TAPERR:
                nets[rec.net].counters["rx_drop_tap_error"] += rec.count
            else:
                if rec.not_member:
                    counters["rx_drop_not_member"] += rec.not_member
                if rec.rx_error:
                    counters["rx_error"] += rec.rx_error
                if rec.woke:
                    loop._woke = True
                if rec.count:
                    self._fold()
                return


def _account(net: Network, mac: bytes, sender: str, count: int, octets: int, first: int) -> None:
    """What `switching.ingress` counts and learns for `count` frames of source `mac` from
    `sender` (`octets` in all, the first `first`), frame by frame in effect: a learn can only
    happen at the first frame (it leaves the entry at `sender`) or repeats for each (refused)."""
    entry = net.fdb.get(mac)
    if entry is not None and not (entry.learned and entry.remote_ip != sender):
        entry.rx_frames += count
        entry.rx_bytes += octets
        return
    # The first frame learns (or is refused); the others see the table it leaves.
    if entry is not None:
        entry.rx_frames += 1
        entry.rx_bytes += first
        learn_source(net, mac, sender)
    else:
        net.counters["rx_frames_unknown_source"] += 1
        if net.learn_limit:
            learn_source(net, mac, sender)
    count, octets = count - 1, octets - first
    if not count:
        return
    entry = net.fdb.get(mac)
    if entry is not None and not (entry.learned and entry.remote_ip != sender):
        entry.rx_frames += count
        entry.rx_bytes += octets
        return
    # Still unknown (a group or all-zero source, a full table, learning off): each frame again.
    for _ in range(count):
        net.counters["rx_frames_unknown_source"] += 1
        if net.learn_limit:
            learn_source(net, mac, sender)


def _deliver(
    loop: HotLoop,
    networks: dict[bytes, Network],
    members: frozenset[str],
    datagram: bytes,
    sender: str,
) -> None:
    """A datagram the merge does not take: what `_drain_udp` does with it, step for step."""
    loop._deliver_one(networks, members, datagram, sender)


#: Hot loop → its engines by socket fd, or None: the C path is off for it (unavailable, or
#: `disable`d).
_engines: weakref.WeakKeyDictionary[HotLoop, dict[int, Engine] | None] = weakref.WeakKeyDictionary()


def _engine(loop: HotLoop, sock: socket.socket) -> Engine | None:
    """The loop's engine for `sock`, made at its first drain (the helper built then, if need
    be)."""
    try:
        engines = _engines[loop]
    except KeyError:
        engines = {} if load_declared(HELPER, _declare) is not None else None
        _engines[loop] = engines
    if engines is None:
        return None
    fd = sock.fileno()
    engine = engines.get(fd)
    if engine is None:
        # The family is looked at once, here (`sock.family` costs a conversion per call).
        if sock.family != socket.AF_INET:
            return None
        lib = accel.load(HELPER)
        if lib is None or len(engines) >= MAX_ENGINES:
            return None  # yet another socket: the Python drain
        engine = engines[fd] = Engine(lib, fd)
    return engine


def drain(loop: HotLoop, sock: socket.socket, *, merge: bool = True) -> bool:
    """Run the drain of `sock` in C (merging TCP runs with `merge`); False when the C path
    does not apply here and the caller's Python drain must run (helper unavailable or
    disabled, a sealed network: its datagrams are opened first, an armed trace: it sees every
    datagram)."""
    if loop.sealed or loop.tracer is not None:
        return False
    engine = _engine(loop, sock)
    if engine is None:
        return False
    engine.drain(loop, merge)
    return True


def disable(loop: HotLoop) -> None:
    """Keep `loop` on the Python drain (tests comparing both paths, `--accel off`)."""
    old = _engines.get(loop)
    _engines[loop] = None
    for engine in (old or {}).values():
        engine.close()


def active(loop: HotLoop) -> bool:
    """Whether one of `loop`'s drains runs in C (made at its first drain)."""
    return bool(_engines.get(loop))


def available() -> bool:
    """Whether the helper builds, loads and speaks our ABI (built now if need be)."""
    return load_declared(HELPER, _declare) is not None


def describe(loop: HotLoop) -> str:
    """Which drain receives (`network vtep`'s "accel:" line)."""
    if loop in _engines and _engines[loop] is None:
        return "python ingress (off)"
    if not available():
        return f"python ingress ({why_not() or 'unavailable'})"
    if loop.sealed:
        # Sealed datagrams are opened before anything looks at them: the Python drain.
        return "python ingress (an encrypted network on this host)"
    return "c ingress"


def why_not() -> str:
    """Why the helper is not loaded ("" when it is or was not asked for)."""
    return accel.why_not(HELPER)
