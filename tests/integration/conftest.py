"""Lab fixtures shared by every integration package."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from overlaynet import lab as labmod
from tests.integration.labs import Lab, make_lab


@pytest.fixture(scope="module")
def lab2() -> Iterator[Lab]:
    """A two-host lab shared by the tests of one module."""
    yield from make_lab(2)


@pytest.fixture
def fresh_lab() -> Iterator[Lab]:
    """A one-host lab of the test's own, for tests that break things."""
    yield from make_lab(1)


@pytest.fixture(scope="module")
def swarm3() -> Iterator[Lab]:
    """Three hosts in a swarm: node1 the manager, node2 and node3 workers."""
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 3, swarm=True)
        yield Lab(name)
    finally:
        labmod.down(name)
