"""Replay protection for sealed gossip: an authenticated message is taken once, and only while
it is fresh (its authenticated send time within a window of now). Pure: times are arguments.

Issue 18 replayed 141 captured datagrams 20-56 s later and all were accepted. A window alone
still lets a capture be replayed inside it, and a nonce cache alone grows without end; together
the cache only has to remember the nonces of one window."""

from __future__ import annotations

import heapq

from overlaynet.gossip.config import SwimConfig
from overlaynet.wire.gossip import FutureGossip, MalformedGossip

# Nonces remembered at most. A member receives a few tens of datagrams a second (probes, acks,
# three gossip fanouts per round) and a window holds under ten seconds of them: some hundreds,
# so this leaves room for a hundredfold burst at about 4 MB. When it does fill, the oldest
# nonce is forgotten and nothing sent at or before it is accepted any more: the window
# shrinks, it never opens for a replay.
REPLAY_CACHE = 16384


class StaleGossip(MalformedGossip):
    """Sent longer ago than the replay window: a capture, or a clock far behind ours."""


class ReplayedGossip(MalformedGossip):
    """A message already taken inside the window: a replay (or the network duplicating it)."""


def replay_window(config: SwimConfig) -> float:
    """How old a message may be: the longest a probe can be waiting for its answer, one probe
    period stretched by Lifeguard's largest awareness multiplier (8 in memberlist). Anything
    older answers a probe that has already ended, and a rumour in it is retransmitted anyway.
    The same bound limits clock skew between hosts (NTP keeps them within milliseconds):
    3.2 s in the lab profile, 8 s in memberlist's LAN profile, both under the 20 s of the
    shortest replay in the issue."""
    return config.awareness_max_multiplier * config.probe_interval


class ReplayGuard:
    """Remembers the nonces of the last window. Call `admit` for every message a key opened."""

    def __init__(self, window: float, capacity: int = REPLAY_CACHE) -> None:
        if window <= 0 or capacity <= 0:
            raise ValueError("the window and the capacity must be positive")
        self.window = window
        self.capacity = capacity
        self._seen: set[bytes] = set()
        # (send time, nonce), earliest first: what leaves the cache first.
        self._by_time: list[tuple[float, bytes]] = []
        # Everything forgotten was sent at or before this: refusing those keeps the cache
        # complete for whatever it still admits.
        self._floor = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, sent_at: float, nonce: bytes, now: float) -> None:
        """Take the message, or raise StaleGossip / ReplayedGossip / FutureGossip."""
        if sent_at > now + self.window:
            raise FutureGossip(f"sent {sent_at - now:.1f} s in the future")
        self._expire(now)
        if sent_at < now - self.window or sent_at <= self._floor:
            raise StaleGossip(f"sent {now - sent_at:.1f} s ago")
        if nonce in self._seen:
            raise ReplayedGossip("nonce already seen")
        self._seen.add(nonce)
        heapq.heappush(self._by_time, (sent_at, nonce))
        while len(self._seen) > self.capacity:
            self._forget()

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._by_time and self._by_time[0][0] < horizon:
            self._forget()

    def _forget(self) -> None:
        sent_at, nonce = heapq.heappop(self._by_time)
        self._seen.discard(nonce)
        self._floor = max(self._floor, sent_at)
