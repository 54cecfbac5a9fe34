"""Lab fixtures shared by every integration package, and the address invariant (issue 18)
checked after every scenario that used a lab."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from tests.integration.invariants import duplicates_in_lab
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
    yield from make_lab(3, swarm=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After a test that passed, no IP and no MAC is held twice in one network of any lab it
    used, across all the lab's hosts (containers, gossip tables, managers' allocations).

    Checked here, between the test and its fixtures' teardown, so a function-scoped lab is
    still up. A test that failed already is left to say why itself."""
    result = yield
    funcargs = getattr(item, "funcargs", {})
    for lab in {v.name: v for v in funcargs.values() if isinstance(v, Lab)}.values():
        duplicates = duplicates_in_lab(lab.name)
        if duplicates:
            raise AssertionError(
                "addresses given twice after this scenario (issue 18):\n"
                + "\n".join(f"  {d}" for d in duplicates)
            )
    return result
