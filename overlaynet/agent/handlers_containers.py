"""The agent's container requests: create (run), start, stop, rm, ls, inspect, wait, top,
logs, exec, and image ls.

`ContainerRequests(agent)` is bound to the agent as its other planes are (`LbPlane`,
`TracePlane`): the dispatch table names its methods; requests on one container go one at a time
(`agent._container`), records and kernel work through `agent._state`, slow waits outside it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from overlaynet.agent import containers, exec_tty, views
from overlaynet.agent import requests as rq
from overlaynet.agent.health import health_doc
from overlaynet.errors import ApiError, InvalidArgument, Unavailable
from overlaynet.host import command_lookup, netns, process
from overlaynet.model import Container, Status

if TYPE_CHECKING:
    from overlaynet.agent.daemon import Agent

log = logging.getLogger("overlaynet.agent")
# How often the agent looks for containers whose process ended (Docker learns it from
# containerd events; a poll this often keeps `ps` and `run`'s exit code prompt).
POLL_INTERVAL = 0.2


class ContainerRequests:
    """The handlers of the container.* and image.ls requests."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def container_create(self, req: rq.ContainerCreate, fds: tuple[int, ...] = ()) -> Any:
        if req.attach and len(fds) != 1:
            raise InvalidArgument(
                "run -i attaches the client's stdin: send it as one file descriptor with the "
                "request (SCM_RIGHTS)"
            )
        stdin_fd = fds[0] if req.attach else None
        local, swarm_net = await self.agent._target(req.network)
        allocation = await self.agent._allocate(local or swarm_net, req.ip)
        try:
            c = await self.agent._state(
                partial(self.agent.runtime.container_create, req, swarm_net, allocation)
            )
        except BaseException:
            await self.agent._release_allocation(local or swarm_net, allocation)
            raise
        log.info("container created", extra={"fields": {"container": c.name, "id": c.id}})
        if req.start:
            async with self.agent._container(c.id):
                try:
                    await self.agent._state(
                        partial(self.agent.runtime.container_start, c.id, stdin_fd)
                    )
                except ApiError:
                    with trio.CancelScope(shield=True):
                        await self._remove(c.id, force=True)
                    raise
        return {"id": c.id, "name": c.name}

    async def container_start(self, req: rq.ContainerStart) -> Any:
        async with self.agent._container(req.container) as cid:
            c = await self.agent._state(partial(self.agent.runtime.container_start, cid))
        return {"id": c.id, "name": c.name}

    async def container_stop(self, req: rq.ContainerStop) -> Any:
        async with self.agent._container(req.container) as cid:
            c, running = await self.agent._state(partial(self.agent.runtime.begin_stop, cid))
            if running is not None:
                # The slow part (up to the timeout), outside the state lock: other containers'
                # requests and the planes go on meanwhile.
                await trio.to_thread.run_sync(partial(process.stop, running, req.timeout))
            await self.agent._state(self.agent.runtime.poll)
        return {"id": c.id, "name": c.name}

    async def container_rm(self, req: rq.ContainerRm) -> Any:
        async with self.agent._container(req.container) as cid:
            c = await self._remove(cid, req.force)
        return {"id": c.id, "name": c.name}

    async def _remove(self, cid: str, force: bool) -> Container:
        """Remove a container, then give its swarm addresses back (its endpoints are gone)."""
        swarm_eps = self.agent.runtime.swarm_endpoints(self.agent.runtime.containers[cid])
        c = await self.agent._state(partial(self.agent.runtime.container_rm, cid, force))
        await self.agent._release(swarm_eps)
        return c

    async def container_ls(self, req: rq.ContainerLs) -> Any:
        containers = list(self.agent.runtime.containers.values())
        by_id = {c.id: c for c in containers}
        runtime = self.agent.runtime
        rows = views.container_rows(containers, req.all, time.time(), runtime.networks)
        for row in rows:
            # `Up 3 seconds (healthy)`: a task's health check, as Docker's ps shows it.
            c = by_id[row["id"]]
            health = self.agent.task_runner.health_of(c) or self.agent.container_health.health_of(c)
            if health is not None and row["state"] == "running":
                row["status"] += " " + health.status.ps_suffix
        return rows

    async def container_inspect(self, req: rq.ContainerInspect) -> Any:
        rt = self.agent.runtime
        c = rt.container(req.container)
        ns = rt.container_netns(c)
        key = netns.path(ns) if ns else f"/proc/{os.getpid()}/ns/net"
        doc = views.container_doc(c, rt.networks, key, rt.exec_pid(c))
        health = self.agent.task_runner.health_of(c) or self.agent.container_health.health_of(c)
        if health is not None and c.status == Status.RUNNING:
            doc["State"]["Health"] = health_doc(health)
        return doc

    async def container_wait(self, req: rq.ContainerWait) -> Any:
        while True:
            c: Container = self.agent.runtime.container(req.container)
            if c.status != Status.RUNNING:
                return {"StatusCode": c.exit_code or 0}
            await trio.sleep(POLL_INTERVAL / 2)

    async def container_top(self, req: rq.ContainerTop) -> Any:
        return await trio.to_thread.run_sync(partial(self.agent.runtime.top, req.container))

    async def container_logs(self, req: rq.ContainerLogs) -> Any:
        """A piece of the container's output; `running` tells a follower to ask again."""
        c = self.agent.runtime.container(req.container)
        data = await trio.to_thread.run_sync(
            partial(self.agent.runtime.read_log, c, req.offset, req.limit)
        )
        return {
            "data": base64.b64encode(data).decode(),
            "offset": req.offset + len(data),
            "running": c.status == Status.RUNNING,
        }

    async def container_exec(self, req: rq.ContainerExec, fds: tuple[int, ...] = ()) -> Any:
        """Run a command in the container on the client's own stdin, stdout and stderr."""
        if len(fds) != 3:
            raise InvalidArgument(
                "exec attaches the client's stdin, stdout and stderr: send them as three file "
                "descriptors with the request (SCM_RIGHTS)"
            )
        c = self.agent.runtime.container(req.container)
        argv, env = self.agent.runtime.exec_spec(c, req.cmd, req.env, req.term)
        missing = await trio.to_thread.run_sync(self._exec_missing, c, req.cmd, env)
        if missing is not None:
            # As docker: the reason on the client's stderr, 127 (not found) or 126.
            with contextlib.suppress(OSError):
                os.write(fds[2], f"{missing.message}\n".encode())
            return {"ExitCode": missing.status}
        if req.term is not None:  # -t: a pseudo-terminal of its own, as docker's exec -t
            pid = self.agent.runtime.exec_pid(c)
            root = Path(f"/proc/{pid}/root")
            return {"ExitCode": await exec_tty.run_on_pty(argv, env, fds, root)}
        try:
            proc = await trio.lowlevel.open_process(
                argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], env=env
            )
        except OSError as e:
            raise Unavailable(f"cannot exec in {c.name}: {e}") from None
        try:
            code = await proc.wait()
        finally:
            if proc.returncode is None:  # the client hung up: the command ends with it
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
        return {"ExitCode": code}

    def _exec_missing(
        self, c: Container, cmd: Sequence[str], env: dict[str, str]
    ) -> command_lookup.Missing | None:
        """Why `cmd` cannot start in the running container (looked up in its root as its
        first process sees it), or None."""
        pid = self.agent.runtime.exec_pid(c)
        if pid is None:
            return None  # it just ended: the exec itself reports that
        return command_lookup.check(
            [Path(f"/proc/{pid}/root")], cmd, env.get("PATH", containers.EXEC_PATH)
        )

    async def image_ls(self, req: rq.ImageLs) -> Any:
        return await trio.to_thread.run_sync(self.agent.runtime.image_rows)
