"""Piggyback queue: each update is sent about retransmit_mult * log10(N) times, fewest-sent first,
and a newer update about the same subject replaces the older one (memberlist's
TransmitLimitedQueue)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

# A message's type byte and 16-bit length in front of its body (wire/gossip.py).
MESSAGE_HEADER = 3


@dataclass(slots=True)
class _Item:
    subject: Hashable
    encoded: bytes
    transmits: int
    order: int


class BroadcastQueue:
    """Encoded updates waiting to be piggybacked, keyed by what they are about."""

    def __init__(self) -> None:
        self._items: dict[Hashable, _Item] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, subject: Hashable, encoded: bytes) -> None:
        """Queue `encoded`; an update about the same subject is superseded and dropped."""
        self._order += 1
        self._items[subject] = _Item(subject, encoded, 0, self._order)

    def clear(self) -> None:
        self._items.clear()

    def take(self, budget: int, limit: int) -> list[bytes]:
        """As many updates as fit in `budget` bytes, least-transmitted and newest first; each one
        taken counts a transmission and leaves the queue after `limit` of them."""
        if not self._items or budget <= 0:
            return []
        chosen: list[bytes] = []
        used = 0
        # Fewest transmissions first so fresh news spreads; newest first among equals.
        for item in sorted(self._items.values(), key=lambda i: (i.transmits, -i.order)):
            size = len(item.encoded)
            if used + size > budget:
                continue
            chosen.append(item.encoded)
            used += size
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.subject]
            if budget - used < MESSAGE_HEADER + 8:
                break
        return chosen
