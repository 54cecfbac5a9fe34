"""Shared test set-up: tests that need root and real namespaces are marked and skip without it."""

from __future__ import annotations

import os
import re
import signal

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration and e2e tests need root; skip them with a clear reason otherwise."""
    skip = pytest.mark.skip(reason="needs root: real network namespaces (CI runs as root)")
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path or "/e2e/" in path:
            item.add_marker(pytest.mark.root)
            if not IS_ROOT:
                item.add_marker(skip)


# Test labs are named t + 8 hex digits (tests/integration/labs.py), benchmark labs b + 8.
_TEST_LAB = re.compile(r"^[tb][0-9a-f]{8}$")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Labs an interrupted earlier run left behind would collide with this run: remove them.
    Only test and benchmark labs whose building process is gone: never a lab a person made,
    nor one another test run is using right now.

    Also: a suite started in the background by a non-interactive shell (`tools/test.sh &`,
    `nohup … &`) inherits SIGINT ignored (POSIX), and an ignored signal stays ignored across
    exec: the CLIs and containers the tests start could not be interrupted, so the tests of
    Ctrl-C would fail for the harness's sake. Children get the default disposition again."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not IS_ROOT:
        return
    from overlaynet import lab

    for name in lab.all_labs():
        owner = lab.owner_pid(name)
        if _TEST_LAB.match(name) and (owner is None or not _alive(owner)):
            lab.down(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
