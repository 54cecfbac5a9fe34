"""The standalone containers' health plane sleeps while there is nothing to probe (issue 15:
a fixed 0.2 s tick woke every idle agent five times a second) and still probes on time: a
check that appears is followed on the poke, each probe runs when due, the next one an
interval after it ends. Trio's mock clock stands in for the wall clock: time is exact."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from overlaynet.agent.container_health import IDLE_RECHECK, ContainerHealth
from overlaynet.agent.health import ProbeResult
from overlaynet.cluster.services import HealthCheck
from overlaynet.healthlabel import to_label
from overlaynet.model import Container, Status

CHECK = HealthCheck(("CMD-SHELL", "true"), interval=1.0, retries=2)
LABEL = dict([to_label(CHECK).split("=", 1)])
# Simulated window: long enough that a 0.2 s tick would have stepped 300 times.
WINDOW = 60.0


def container(cid: str, labels: dict[str, str]) -> Container:
    return Container(
        cid, f"c{cid}", "alpine", [], "2026-01-01", status=Status.RUNNING, labels=labels
    )


class Host:
    """The containers the plane follows, how often it looked, and when it probed."""

    def __init__(self) -> None:
        self.containers: list[Container] = []
        self.looks = 0
        self.probes: list[float] = []

    def list(self) -> list[Container]:
        self.looks += 1
        return list(self.containers)

    async def probe(self, cid: str, argv: Sequence[str], timeout: float) -> ProbeResult:
        now = trio.current_time()
        self.probes.append(now)
        return ProbeResult(now, now, 0, "ok")


def plane_for(host: Host) -> ContainerHealth:
    return ContainerHealth(host.list, host.probe, clock=trio.current_time)


def test_with_no_check_the_plane_only_looks_at_its_safety_interval() -> None:
    host = Host()
    host.containers = [container("plain", {})]
    plane = plane_for(host)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(plane.run)
            await trio.sleep(WINDOW)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert host.looks <= WINDOW / IDLE_RECHECK + 2
    assert host.probes == []


def test_a_check_that_appears_is_followed_on_the_poke_and_probed_every_interval() -> None:
    host = Host()
    plane = plane_for(host)
    started: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(plane.run)
            await trio.sleep(5.3)  # idle a while, off the safety interval's beat
            host.containers = [container("a", LABEL)]
            plane.poke()
            await trio.sleep(0)  # one scheduler pass: no time passes
            await trio.sleep(0)
            started.append(trio.current_time())
            assert plane.health_of(host.containers[0]) is not None
            await trio.sleep(5 * CHECK.interval + 0.5)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    (start,) = started
    # Docker: the first probe an interval after the start, then an interval after each ends.
    assert host.probes == [start + k * CHECK.interval for k in range(1, 6)]


def test_the_plane_forgets_a_container_that_stopped_on_the_poke() -> None:
    host = Host()
    host.containers = [container("a", LABEL)]
    plane = plane_for(host)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(plane.run)
            await trio.sleep(0.5)
            assert plane.health_of(host.containers[0]) is not None
            host.containers[0].status = Status.EXITED
            plane.poke()
            await trio.sleep(0)
            await trio.sleep(0)
            assert plane.health_of(host.containers[0]) is None
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
