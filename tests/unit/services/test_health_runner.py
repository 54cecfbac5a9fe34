"""The task runner with health checks (fake agent hooks, real runner and TaskHealth): a task
with a check is reported running only once a probe passed, and an unhealthy one is stopped and
reported failed with Docker's error; a task without a check is reported running at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from overlaynet.agent.health import UNHEALTHY_ERROR, ProbeResult
from overlaynet.agent.tasks import AssignedTask, LocalTask, TaskHooks, TaskRunner

NET = {
    "network_id": "n1",
    "network_name": "atsea",
    "ip": "10.0.0.5",
    "mac": "02:42:0a:00:00:05",
    "subnet": "10.0.0.0/24",
    "gateway": "10.0.0.1",
    "vni": 4097,
}
CHECK = {"test": ["CMD-SHELL", "check"], "interval": 0.01, "timeout": 1.0, "retries": 2}


def entry(state: str, health: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "t1",
        "service_id": "s1",
        "service_name": "web",
        "name": "web.1",
        "image": "alpine",
        "desired_state": "running",
        "state": state,
        "networks": [NET],
        "healthcheck": health,
    }


class FakeWorker:
    """The manager's side (a task in `state`) and this host's single running container."""

    def __init__(self, health: dict[str, Any] | None, codes: list[int]) -> None:
        self.state = "starting"
        self.health = health
        self.codes = codes
        self.reports: list[tuple[str, str | None]] = []
        self.stopped: list[str] = []
        self.removed: list[str] = []
        self.probes = 0

    async def call(self, op: str, **args: Any) -> Any:
        if op == "task.assigned":
            return {"index": 1, "tasks": [entry(self.state, self.health)] if self.live else []}
        self.reports.append((args["state"], args.get("error")))
        self.state = args["state"]
        return {"accepted": True}

    @property
    def live(self) -> bool:
        return self.state not in ("failed", "complete", "shutdown")

    def local(self) -> dict[str, LocalTask]:
        if self.removed:
            return {}
        return {"t1": LocalTask("t1", "c1", running=not self.stopped)}

    async def remove(self, cid: str) -> None:
        self.removed.append(cid)

    async def probe(self, cid: str, argv: Sequence[str], timeout: float) -> ProbeResult:
        assert (cid, list(argv)) == ("c1", ["/bin/sh", "-c", "check"])
        code = self.codes[min(self.probes, len(self.codes) - 1)]
        self.probes += 1
        return ProbeResult(0.0, 0.0, code, "")

    async def stop(self, cid: str, grace: float) -> None:
        self.stopped.append(cid)

    def runner(self) -> TaskRunner:
        async def nothing(*_: Any) -> Any:
            raise AssertionError("not expected")

        hooks = TaskHooks(
            call=self.call,
            local_tasks=self.local,
            create=nothing,
            start=nothing,
            stop=self.stop,
            remove=self.remove,
            active=lambda: True,
            probe=self.probe,
        )
        return TaskRunner(hooks, interval=0.01)


async def steps(worker: FakeWorker, n: int) -> None:
    runner = worker.runner()
    async with trio.open_nursery() as nursery:
        runner._probes = nursery
        for _ in range(n):
            await runner.step()
            await trio.sleep(0.02)
        nursery.cancel_scope.cancel()


async def test_running_is_reported_only_after_a_passing_probe() -> None:
    worker = FakeWorker(CHECK, codes=[1, 0])
    runner = worker.runner()
    async with trio.open_nursery() as nursery:
        runner._probes = nursery
        await runner.step()
        # Before any probe: held at starting, no running report.
        assert worker.reports == [] and runner.health.holds("t1")
        for _ in range(50):
            await trio.sleep(0.02)
            await runner.step()
            if worker.reports:
                break
        nursery.cancel_scope.cancel()
    assert worker.probes >= 2
    assert worker.reports == [("running", None)]


async def test_an_unhealthy_task_is_stopped_and_reported_failed_as_docker() -> None:
    worker = FakeWorker(CHECK, codes=[0, 1, 1])
    await steps(worker, 40)
    assert worker.reports[0] == ("running", None)
    assert ("failed", UNHEALTHY_ERROR) in worker.reports
    assert worker.stopped == ["c1"]
    # Failed, no longer listed: its container goes as any ended task's does.
    assert worker.removed == ["c1"]


async def test_without_a_check_running_is_reported_at_once() -> None:
    for health in (None, {"test": ["NONE"]}):
        worker = FakeWorker(health, codes=[1])
        await steps(worker, 1)
        assert worker.reports == [("running", None)] and worker.probes == 0


async def test_a_stop_waits_until_every_node_dropped_the_task() -> None:
    worker = FakeWorker(None, codes=[0])
    worker.state = "running"
    drained = False

    async def call(op: str, **args: Any) -> Any:
        if op == "task.assigned":
            e = {**entry(worker.state, None), "desired_state": "shutdown", "drained": drained}
            return {"index": 2, "tasks": [e] if worker.live else []}
        return await worker.call(op, **args)

    runner = worker.runner()
    runner.hooks.call = call
    await runner.step()
    await runner.step()
    assert worker.stopped == [] and runner.counters["stops_held_for_drain"] == 2
    drained = True
    await runner.step()
    assert worker.stopped == ["c1"] and worker.reports == [("shutdown", None)]


def test_assigned_task_still_parses_with_a_healthcheck_entry() -> None:
    assert AssignedTask.from_doc(entry("starting", CHECK)).id == "t1"
