"""Health checks of standalone containers (`run --health-cmd …`, issue 14): the flags become
the container's health-check label, validated as `service create` validates them; the agent's
ContainerHealth probes running containers with one, and leaves task containers to the task
runner."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pytest
import trio

from overlaynet.agent.container_health import ContainerHealth, checked_entries
from overlaynet.agent.health import HealthStatus, ProbeResult
from overlaynet.cli.health_flags import BadHealthFlags, add_health_flags, health_labels
from overlaynet.cluster.services import HealthCheck
from overlaynet.healthlabel import HEALTHCHECK_LABEL, from_labels, to_label
from overlaynet.model import Container, Status


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_health_flags(p)
    return p.parse_args(argv)


def test_flags_become_one_label_that_reads_back_as_the_check() -> None:
    ns = parse("--health-cmd", "test -e /ok", "--health-interval", "500ms",
               "--health-retries", "2", "--health-start-period", "1m")  # fmt: skip
    (label,) = health_labels(ns)
    key, _, value = label.partition("=")
    assert key == HEALTHCHECK_LABEL
    check = from_labels({key: value})
    assert check == HealthCheck(("CMD-SHELL", "test -e /ok"), 0.5, 30.0, 2, 60.0)


def test_no_flags_or_no_healthcheck_add_no_label() -> None:
    assert health_labels(parse()) == []
    assert health_labels(parse("--no-healthcheck")) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--health-interval", "1s"), "need --health-cmd"),
        (("--no-healthcheck", "--health-cmd", "true"), "conflicts"),
        (("--health-cmd", "true", "--health-retries", "0"), "retries"),
        (("--health-cmd", "true", "--health-interval", "0s"), "interval"),
    ],
)
def test_bad_flags_are_one_clear_error(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(BadHealthFlags, match=message):
        health_labels(parse(*argv))


def test_bad_duration_is_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        parse("--health-cmd", "true", "--health-interval", "soon")


def container(cid: str, labels: dict[str, str], status: Status = Status.RUNNING) -> Container:
    return Container(cid, f"c{cid}", "alpine", [], "2026-01-01", status=status, labels=labels)


CHECK = HealthCheck(("CMD-SHELL", "test -e /ok"), interval=1.0, retries=2)
LABEL = dict([to_label(CHECK).split("=", 1)])


def test_only_standalone_containers_with_a_readable_check_are_followed() -> None:
    task = container("t", {**LABEL, "com.docker.swarm.task.id": "t1"})
    task.name = "web.1.t1"
    entries, bad = checked_entries(
        [container("a", LABEL), container("b", {}), container("c", {HEALTHCHECK_LABEL: "{x"}), task]
    )
    assert [e["id"] for e in entries] == ["a"]
    assert bad == 1


def test_starting_then_healthy_then_unhealthy_after_retries() -> None:
    exits = [0, 1, 1]
    calls: list[Sequence[str]] = []
    box = container("a", LABEL)

    clock = [0.0]

    async def probe(cid: str, argv: Sequence[str], timeout: float) -> ProbeResult:
        calls.append(argv)
        return ProbeResult(clock[0], clock[0], exits.pop(0), "out")

    plane = ContainerHealth(lambda: [box], probe)

    async def main() -> None:
        assert plane.step(100.0) == []  # first probe one interval after the start
        assert plane.health_of(box) is not None
        assert plane.health_of(box).status is HealthStatus.STARTING  # type: ignore[union-attr]
        for now, want in ((101.0, HealthStatus.HEALTHY), (102.0, HealthStatus.HEALTHY),
                          (103.0, HealthStatus.UNHEALTHY)):  # fmt: skip
            clock[0] = now
            (due,) = plane.step(now)
            await plane._probe(due)
            assert plane.health_of(box).status is want  # type: ignore[union-attr]

    trio.run(main)
    assert calls[0] == ["/bin/sh", "-c", "test -e /ok"]
    assert plane.counters["health_probes"] == 3
    assert plane.counters["health_probe_failures"] == 2


def test_a_stopped_container_forgets_its_health() -> None:
    box = container("a", LABEL)

    async def probe(cid: str, argv: Sequence[str], timeout: float) -> ProbeResult:
        raise AssertionError("not due")

    plane = ContainerHealth(lambda: [box], probe)
    plane.step(0.0)
    assert plane.health_of(box) is not None
    box.status = Status.EXITED
    plane.step(0.5)
    assert plane.health_of(box) is None
