"""Impairments of overlay traffic, decided in the VTEP (this kernel has no netem): a pure, seeded
model that tells, for each datagram leaving toward an impaired peer, whether it is dropped,
when it leaves and whether it leaves twice; and a bounded heap of held datagrams.

Sans-IO: time is an argument, randomness is one `random.Random(seed)` stream per model, so an
experiment with a fixed seed repeats decision for decision. The hot loop (`hotpath`) carries the
decisions out; it costs one attribute check per send while nothing is impaired.

Semantics follow netem's, which learners meet in every tutorial (tc-netem(8)):
- loss P: each datagram is dropped with probability P %.
- delay D, jitter J: each datagram leaves D ± J ms (uniform) after it arrived; a jittered
  datagram may overtake an earlier one, as with netem (no `rate` ordering is kept).
- duplicate P: with probability P % a second copy leaves at the same moment.
- reorder P: with probability P % a datagram skips the delay and leaves at once (netem's
  `reorder` needs a delay; without one it is held REORDER_HOLD instead, so that the next
  datagrams overtake it).
- rate R Mbit/s: a token bucket of one burst; a datagram leaves once the bucket has its bits,
  and one that would be held longer than MAX_DELAY in all (delay and queue) is dropped (a full
  queue).

The agent's side is at the end: `ImpairRequest` (the API's `impair` operation) and
`ImpairState`, the host's peer → impairment table, persisted beside its other state and handed
to the VTEP (`Vtep.set_impairments`) whenever one runs.
"""

from __future__ import annotations

import heapq
import ipaddress
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from overlaynet.api import Request
from overlaynet.errors import InvalidArgument
from overlaynet.paths import write_private

#: The longest any datagram is held: a few seconds is already far beyond any real path, and a
#: bound keeps the heap (and a typo like --delay 100000) from holding traffic forever.
MAX_DELAY = 10.0
#: Held datagrams at most, and their octets: a 1 Gb/s stream delayed 100 ms is ~12 MB, so
#: 16 MiB and 16384 datagrams hold any lab experiment; beyond them a datagram is dropped and
#: counted (`impair_drop_queue_full`) instead of growing the agent's memory.
MAX_HELD = 16384
MAX_HELD_BYTES = 16 * 1024 * 1024
#: Without a delay, a reordered datagram waits this long, so the datagrams behind it go first
#: (a ping -i 0.01 stream: the next one is 10 ms behind; 5 ms reorders back-to-back bursts).
REORDER_HOLD = 0.005
#: Burst of the rate's token bucket: one 64 KiB GSO train's worth, as a NIC's queue would take.
RATE_BURST_BYTES = 65536
#: The rate's bounds: below 0.01 Mbit/s a 1500-octet datagram takes over a second.
MIN_RATE_MBIT = 0.01
MAX_RATE_MBIT = 100_000.0


class ImpairmentError(ValueError):
    """An impairment with a value out of its range; the message names the option."""


@dataclass(frozen=True)
class Impairment:
    """What to do to the datagrams toward one peer (percentages 0..100, milliseconds)."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    rate: float | None = None  # Mbit/s; None: unlimited
    seed: int | None = None  # None: a fresh seed each time the model is built

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= 100:
                raise ImpairmentError(f"--{name} must be a percentage from 0 to 100, not {value}")
        limit = MAX_DELAY * 1000
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= limit:
                raise ImpairmentError(f"--{name} must be milliseconds from 0 to {limit:g}")
        if self.jitter > self.delay:
            raise ImpairmentError("--jitter cannot exceed --delay (a datagram cannot leave early)")
        if self.rate is not None and (
            not math.isfinite(self.rate) or not MIN_RATE_MBIT <= self.rate <= MAX_RATE_MBIT
        ):
            raise ImpairmentError(
                f"--rate must be Mbit/s from {MIN_RATE_MBIT} to {MAX_RATE_MBIT:g}"
            )
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ImpairmentError("--seed must be a number from 0 to 2**63-1")

    @property
    def empty(self) -> bool:
        """Whether it changes nothing (then nothing needs to be installed)."""
        return not (
            self.loss or self.delay or self.duplicate or self.reorder or self.rate is not None
        )

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Impairment:
        """The impairment a `to_doc` wrote (unknown keys refused: a typo must not vanish)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - names)
        if unknown:
            raise ImpairmentError(f"unknown impairment field {unknown[0]!r}")
        for key, value in doc.items():
            wanted: tuple[type, ...] = (int,) if key == "seed" else (int, float)
            if value is not None and (isinstance(value, bool) or not isinstance(value, wanted)):
                raise ImpairmentError(f"impairment field {key!r} must be a number")
        return cls(**doc)

    def describe(self) -> str:
        """One line for `lab ls`: 'loss 20% delay 20ms±2ms rate 10Mbit seed 7'."""
        parts = []
        if self.loss:
            parts.append(f"loss {self.loss:g}%")
        if self.delay:
            parts.append(f"delay {self.delay:g}ms" + (f"±{self.jitter:g}ms" if self.jitter else ""))
        if self.duplicate:
            parts.append(f"duplicate {self.duplicate:g}%")
        if self.reorder:
            parts.append(f"reorder {self.reorder:g}%")
        if self.rate is not None:
            parts.append(f"rate {self.rate:g}Mbit")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return " ".join(parts) or "none"


class ImpairModel:
    """The decisions for one impaired direction: `decide(now, size)` per datagram."""

    def __init__(self, impairment: Impairment) -> None:
        self.impairment = impairment
        self.rng = random.Random(impairment.seed)
        self._delay = impairment.delay / 1000
        self._jitter = impairment.jitter / 1000
        self._bytes_per_second = (
            impairment.rate * 1_000_000 / 8 if impairment.rate is not None else 0.0
        )
        self._burst_time = (
            RATE_BURST_BYTES / self._bytes_per_second if self._bytes_per_second else 0.0
        )
        self._tat = -math.inf

    def decide(self, now: float, size: int) -> tuple[tuple[float, ...], str]:
        """When a datagram of `size` octets arriving at `now` leaves: () dropped, one moment,
        or two (a duplicate); and the counter to bump ('' for none). The random stream is
        consumed in a fixed order (loss, reorder, jitter, duplicate), so one seed repeats."""
        imp = self.impairment
        rng = self.rng
        if imp.loss and rng.random() * 100 < imp.loss:
            return (), "impair_drop_loss"
        counter = ""
        if imp.reorder and rng.random() * 100 < imp.reorder:
            at = now if self._delay else now + REORDER_HOLD
            counter = "impair_reordered"
        else:
            at = now + self._delay
            if self._jitter:
                at += rng.uniform(-self._jitter, self._jitter)
        if self._bytes_per_second:
            # GCRA, the token bucket's virtual-clock form: `_tat` is when the bucket would be
            # full again; a datagram conforms once that is at most one burst ahead.
            tat = max(self._tat, at)
            leave = max(at, tat - self._burst_time)
            if leave - now > MAX_DELAY:  # held at most MAX_DELAY in all, delay included
                return (), "impair_drop_rate"
            self._tat = tat + size / self._bytes_per_second
            at = leave
        if imp.duplicate and rng.random() * 100 < imp.duplicate:
            return (at, at), "impair_duplicated"
        return (at,), counter or ("impair_delayed" if at > now else "")


T = TypeVar("T")


class HeldQueue(Generic[T]):
    """Datagrams waiting for their moment: a heap by due time (ties in arrival order), bounded
    in count and octets. Pure: the loop pushes with `now` and pops what `due(now)` returns."""

    def __init__(self, max_items: int = MAX_HELD, max_bytes: int = MAX_HELD_BYTES) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        #: (due, arrival number, octets, item), a heap by due time; non-empty while anything
        #: is held (the hot loop tests exactly that).
        self.heap: list[tuple[float, int, int, T]] = []
        self._seq = 0
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self.heap)

    def push(self, at: float, size: int, item: T) -> bool:
        """Hold `item` until `at`; False (nothing held) when the queue is full."""
        if len(self.heap) >= self.max_items or self.held_bytes + size > self.max_bytes:
            return False
        self._seq += 1
        heapq.heappush(self.heap, (at, self._seq, size, item))
        self.held_bytes += size
        return True

    def next_deadline(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def due(self, now: float) -> list[T]:
        """Everything due at `now`, earliest first (equal moments in the order pushed)."""
        out: list[T] = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            _at, _seq, size, item = heapq.heappop(heap)
            self.held_bytes -= size
            out.append(item)
        return out


# ---- the agent's record: peer → impairment, persisted so a restart keeps it -----------------

#: The key of an impairment toward every peer (no --to).
ALL_PEERS = ""


def load(path: Path) -> dict[str, Impairment]:
    """The impairments saved at `path` ({} when none); a damaged file is an error that says
    which file, never silently an unimpaired host."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ImpairmentError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ImpairmentError(f"{path} is not a map of peer to impairment")
    return {str(peer): Impairment.from_doc(spec) for peer, spec in doc.items()}


def save(path: Path, table: dict[str, Impairment]) -> None:
    """Write the table (owner-only, replaced whole so a crash leaves the old or the new)."""
    if not table:
        path.unlink(missing_ok=True)
        return
    write_private(path, json.dumps({p: i.to_doc() for p, i in sorted(table.items())}, indent=2))


def updated(
    table: dict[str, Impairment], peer: str, impairment: Impairment | None
) -> dict[str, Impairment]:
    """The table with `peer`'s entry set (or removed: None or an empty impairment); clearing
    ALL_PEERS clears every entry, as `lab heal nodeX` means."""
    out = dict(table)
    if impairment is None or impairment.empty:
        if peer == ALL_PEERS:
            return {}
        out.pop(peer, None)
    else:
        out[peer] = impairment
    return out


# ---- the agent's side: one request, a table kept in the host's state -------------------------


@dataclass(frozen=True)
class ImpairRequest(Request):
    """Set (`action="set"`), end (`"clear"`) or show (`"show"`) the impairment of overlay
    datagrams this host sends to `peer` (an underlay address; "" every peer). `lab impair`
    sends it; the answer is the host's whole table."""

    OP: ClassVar[str] = "impair"
    action: str = "show"
    peer: str = ALL_PEERS
    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    rate: float | None = None
    seed: int | None = None

    def check(self) -> None:
        if self.action not in ("set", "clear", "show"):
            raise InvalidArgument("argument 'action' must be set, clear or show")
        if self.peer:
            try:
                ipaddress.IPv4Address(self.peer)
            except ValueError:
                raise InvalidArgument(f"peer {self.peer!r} is not an IPv4 address") from None
        try:
            self.impairment()
        except ImpairmentError as e:
            raise InvalidArgument(str(e)) from None

    def impairment(self) -> Impairment:
        return Impairment(
            self.loss, self.delay, self.jitter, self.duplicate, self.reorder, self.rate, self.seed
        )


class _ImpairableVtep(Protocol):
    def set_impairments(self, table: dict[str, Impairment]) -> None: ...


class ImpairState:
    """The agent's impairments: kept in `path` (so a restarted agent impairs as before) and
    given to the VTEP whenever it runs (`vtep()` returns it, or None before it starts)."""

    def __init__(self, path: Path, vtep: Callable[[], _ImpairableVtep | None]) -> None:
        self.path = path
        self._vtep = vtep
        try:
            self.table = load(path)
        except ImpairmentError:
            # A damaged file must not keep the agent from starting; it is set aside, named.
            path.replace(path.with_suffix(".damaged"))
            self.table = {}

    def apply(self, vtep: _ImpairableVtep) -> None:
        """Give the table to a VTEP that has just started."""
        vtep.set_impairments(self.table)

    def doc(self) -> dict[str, Any]:
        return {
            "impairments": {p or "*": i.to_doc() for p, i in sorted(self.table.items())},
            "described": {p or "*": i.describe() for p, i in sorted(self.table.items())},
            "vtep": self._vtep() is not None,
        }

    async def handle(self, req: ImpairRequest) -> Any:
        if req.action != "show":
            spec = req.impairment() if req.action == "set" else None
            self.table = updated(self.table, req.peer, spec)
            save(self.path, self.table)
            vtep = self._vtep()
            if vtep is not None:
                vtep.set_impairments(self.table)
        return self.doc()
