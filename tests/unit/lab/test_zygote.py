"""The fork server's agent processes (no root): a forked agent starts with fresh process state,
its end is read as `subprocess.Popen` reads a child's, and the supervisor restarts it by
forking again."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from overlaynet.lab import supervise, zygote


@pytest.fixture
def supervisor_signals() -> Iterator[None]:
    """The test process plays the supervisor: its handlers are put back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _report(path: Path) -> Callable[[], int]:
    """An agent that writes down the process state it started with."""

    def run() -> int:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        path.write_text(
            json.dumps(
                {
                    "term": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
                    "int": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                    "blocked": sorted(int(s) for s in blocked),
                    "random": random.random(),
                }
            )
        )
        return 0

    return run


def test_a_forked_agent_gets_default_signals_an_empty_mask_and_its_own_random(
    tmp_path: Path, supervisor_signals: None
) -> None:
    # As in a supervisor: its own stop handler installed, the random state the same for all.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    random.seed(1)
    seen = []
    for n in range(2):
        out = tmp_path / f"agent{n}.json"
        assert zygote.fork_agent(_report(out)).wait() == 0
        seen.append(json.loads(out.read_text()))
    for doc in seen:
        assert doc["term"] and doc["int"]
        assert signal.SIGTERM not in doc["blocked"] and signal.SIGINT not in doc["blocked"]
    assert seen[0]["random"] != seen[1]["random"]
    assert random.random() not in (seen[0]["random"], seen[1]["random"])
    # The supervisor's mask is as it was before the fork.
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_forked_agents_end_reads_as_popen_reads_a_childs() -> None:
    assert zygote.fork_agent(lambda: 3).wait() == 3

    def crash() -> int:
        raise RuntimeError("boom")

    assert zygote.fork_agent(crash).wait() == 1

    def usage_error() -> int:
        raise SystemExit(2)

    assert zygote.fork_agent(usage_error).wait() == 2

    def sleep() -> int:
        time.sleep(30)
        return 0

    agent = zygote.fork_agent(sleep)
    assert agent.poll() is None
    agent.send_signal(signal.SIGKILL)
    assert agent.wait() == -signal.SIGKILL
    assert agent.poll() == -signal.SIGKILL
    agent.send_signal(signal.SIGKILL)  # reaped: the pid is not signalled again


def test_the_supervisor_forks_a_failed_agent_again(
    tmp_path: Path, supervisor_signals: None
) -> None:
    starts = tmp_path / "starts"

    def run() -> int:
        with starts.open("a") as f:
            f.write(f"{os.getpid()}\n")
        # The first start fails on its own, the second is stopped cleanly.
        return 1 if len(starts.read_text().splitlines()) == 1 else 0

    pid_file = tmp_path / "supervisor.pid"
    ready: list[bool] = []
    code = supervise.supervise(
        pid_file, lambda: zygote.fork_agent(run), lambda: ready.append(pid_file.exists())
    )
    assert code == 0 and ready == [True]
    pids = starts.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1] and str(os.getpid()) not in pids
    assert not pid_file.exists()


def test_the_agents_arguments_name_the_host_the_lab_and_its_log() -> None:
    argv = zygote.agent_argv("lab1", "node7")
    assert argv[:4] == ["--host", "node7", "--lab", "lab1"]
    assert argv[4] == "--log-file" and "node7" in argv[5]
