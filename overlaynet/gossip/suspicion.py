"""Lifeguard's two local refinements: a suspicion timer that shrinks as independent members
confirm it, and a local health score that slows a struggling node's own verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Suspicion:
    """One suspected member's timer (memberlist suspicion.go, Lifeguard section 4.2).

    The timeout starts at `high` and falls toward `low` as `k` distinct members confirm,
    logarithmically: timeout = max(low, high - (high - low) * log(n + 1) / log(k + 1))."""

    started: float
    k: int
    low: float
    high: float
    # Whoever raised the suspicion is not an independent confirmation of it.
    origin: str = ""
    confirmed_by: set[str] = field(default_factory=set)
    _deadline: float | None = field(default=None, repr=False, compare=False)

    def timeout(self) -> float:
        if self.k < 1:
            return self.low
        n = len(self.confirmed_by)
        frac = math.log(n + 1) / math.log(self.k + 1)
        return max(self.low, self.high - (self.high - self.low) * frac)

    def deadline(self) -> float:
        # Asked on every timer computation; only a confirmation changes it.
        if self._deadline is None:
            self._deadline = self.started + self.timeout()
        return self._deadline

    def restart(self, now: float) -> None:
        """Run the timer again from `now`, keeping the confirmations."""
        self.started = now
        self._deadline = None

    def confirm(self, source: str) -> bool:
        """Count an independent suspicion; True only the first time `source` confirms."""
        if len(self.confirmed_by) >= self.k or source in self.confirmed_by or source == self.origin:
            return False
        self.confirmed_by.add(source)
        self._deadline = None
        return True


class Awareness:
    """Local health multiplier (Lifeguard section 4.1, memberlist awareness.go): failed probes
    without nacks and refuting our own suspicion raise it; each clean probe lowers it."""

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(self.max_multiplier - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
