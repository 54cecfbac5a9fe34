"""Deterministic randomness for cluster tests: a seeded byte source replaces os.urandom."""

from __future__ import annotations

import random
from collections.abc import Callable


def seeded_rand(seed: int = 1) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)
