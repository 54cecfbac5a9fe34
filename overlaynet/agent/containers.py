"""One host's containers: create, start (the process, a `-t` pseudo-terminal), exec, logs,
poll, stop, top and remove.

The decisions are `hostcore`'s; the records and the kernel follow through `HostRecords`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from overlaynet.agent import hostcore, views
from overlaynet.agent.hostrecords import (
    KERNEL_ERRORS,
    Allocation,
    HostRecords,
    now_iso,
    rmtree,
)
from overlaynet.agent.requests import ContainerCreate, labels_of
from overlaynet.errors import ApiError, Conflict, InvalidArgument, Unavailable
from overlaynet.host import command_lookup, netns, process
from overlaynet.images import catalog, rootfs
from overlaynet.model import SANDBOX_LABEL, Container, Driver, Network, Status
from overlaynet.names import BadName, check_container_name, new_id

log = logging.getLogger(__name__)

# Adjectives and names for containers started without --name, as Docker does (names-generator).
_LEFT = ("admiring", "brave", "clever", "dreamy", "eager", "focused", "gallant", "happy", "keen")
_RIGHT = ("babbage", "curie", "dijkstra", "hopper", "lovelace", "noether", "shannon", "turing")

# Who a container is, in its environment: the service images (overlaynet/web) print them.
ENV_NAME = "OVERLAYNET_NAME"
ENV_NODE = "OVERLAYNET_NODE"
# Docker's default PATH for a process started in a container (exec included).
EXEC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The label that marks a task's container and names its task, as Docker's (agent/tasks.py's).
TASK_LABEL = "com.docker.swarm.task.id"
# Containers whose start does not wait for their init to run inside the image root: the agent's
# own callers wait for it (`wait_started`) after the start, outside the state lock, so the next
# container's create and start on this host are not held up by this one's set-up (about 0.25 s
# each under load: a `service create` starts several per host). The task runner reports a task
# running only after that wait; a load-balancer sandbox's process only holds its place.
ROOT_WAITED_BY_CALLER = (TASK_LABEL, SANDBOX_LABEL)


class ContainerOps(HostRecords):
    """The container requests of a host's runtime (a part of `Runtime`)."""

    def _pick_name(self) -> str:
        taken = {c.name for c in self.containers.values()}
        for left in _LEFT:
            for right in _RIGHT:
                if f"{left}_{right}" not in taken:
                    return f"{left}_{right}"
        return f"container_{len(taken)}"

    def container_create(
        self,
        req: ContainerCreate,
        swarm_net: Network | None = None,
        allocation: Allocation | None = None,
        more: Sequence[tuple[Network, Allocation]] = (),
    ) -> Container:
        """A container with its namespace and first endpoint; `swarm_net` and `allocation`
        come from the managers when the network is a swarm one. `more`: further swarm
        networks already on this host (a task's other attachments, with the managers'
        addresses), connected before the one reconciliation that builds them all: one pass
        over the host's kernel state per task instead of one per network (each pass was
        most of a task's create, about 0.1 s under load)."""
        name = req.name or self._pick_name()
        try:
            check_container_name(name, "container")
        except BadName as e:
            raise InvalidArgument(str(e)) from None
        if req.hostname is not None:
            hostcore.check_hostname(req.hostname)
        image = self._image(req.image)
        cmd = list(req.cmd) or list(image.cmd)
        if not cmd:
            raise InvalidArgument(f"No command specified: image {req.image} has no default command")
        for other in self.containers.values():
            if other.name == name:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able '
                    "to reuse that name."
                )
        net = self.attach_target(req.network, swarm_net)
        try:
            if req.ip and net.driver in (Driver.HOST, Driver.NULL):
                raise InvalidArgument(f"--ip is not allowed on network {net.name}")
            if req.aliases and not net.has_name_resolution:
                raise InvalidArgument(
                    "network-scoped aliases are only supported for user-defined networks"
                )
        except ApiError:
            self._retire_if_unused(net)  # a swarm network brought here for nothing goes again
            raise
        c = Container(
            id=new_id(),
            name=name,
            image=req.image,
            cmd=cmd,
            created=now_iso(),
            network_mode="host" if net.driver == Driver.HOST else net.name,
            # The image's env, then who the container is (the service images print it), then
            # the user's -e on top, as Docker merges an image's ENV with `run -e`.
            env=image.environment([f"{ENV_NAME}={name}", f"{ENV_NODE}={self.host}", *req.env]),
            open_stdin=req.interactive,
            labels=labels_of(req.labels),
            hostname=req.hostname or "",
            tty=req.tty,
        )
        ns = self.container_netns(c)
        self.container_dir(c).mkdir(parents=True, exist_ok=True)

        def undo() -> None:
            self.containers.pop(c.id, None)

        try:
            if net.driver in (Driver.BRIDGE, Driver.OVERLAY):
                ep = self._new_endpoint(c, net, req.ip, list(req.aliases), True, allocation)
                c.endpoints.append(ep)  # before building: a failure below releases it
            for extra, extra_allocation in more:
                target = self.attach_target(extra.id)
                if c.endpoint_on(target.id):
                    raise Conflict(f"{c.name} is attached to network {target.name} twice")
                first = not c.endpoints
                c.endpoints.append(self._new_endpoint(c, target, None, [], first, extra_allocation))
            self.containers[c.id] = c
            what = (
                f"cannot connect {c.name} to {net.name}" if c.endpoints else f"cannot create {name}"
            )
            self._apply_or_undo(undo, what, probe=[ns] if ns else [])
            self.store.put_container(c)
        except BaseException:
            undo()
            with contextlib.suppress(*KERNEL_ERRORS):
                self._reconcile()
            rmtree(self.container_dir(c))
            self._retire_if_unused(net)
            for extra, _ in more:
                if extra.id in self.networks:
                    self._retire_if_unused(self.networks[extra.id])
            raise
        self._write_container_files(c)
        self.generation += 1
        self._container_event(c, "create")
        if c.endpoint_on(net.id):
            self._network_event(net, "connect", c)
        for extra, _ in more:
            self._network_event(self.networks[extra.id], "connect", c)
        return c

    def container_start(self, ref: str, stdin_fd: int | None = None) -> Container:
        """Start it; `stdin_fd`: the client's stdin for `run -i` attached (else a FIFO for
        `-i`, nothing without)."""
        c = self.container(ref)
        if c.status == Status.RUNNING and self._alive(c):
            return c
        self._launch(c, stdin_fd)
        return c

    def _image(self, ref: str) -> catalog.Image:
        """The image a reference names in the catalog as it is now (read at every create and
        start, so an edited catalog counts at once); an unknown one is NotFound naming it."""
        return catalog.load().resolve(ref)

    def image_rows(self) -> list[dict[str, object]]:
        """The image catalog as `image ls` lists it (reads the catalog files and sizes)."""
        images = catalog.load().list()
        return views.image_rows(images, {i.reference: rootfs.size(i) for i in images})

    def _launch(self, c: Container, stdin_fd: int | None = None) -> None:
        d = self.container_dir(c)
        ns = self.container_netns(c)
        image = self._image(c.image)
        try:
            # Kept if it exists: a restarted container (or agent) finds its own files again.
            root = rootfs.prepare(image, d, c.uts_name)
        except (catalog.ImageError, OSError) as e:
            raise Unavailable(f"cannot prepare the root filesystem of {c.name}: {e}") from None
        roots = [Path("/")] if root is None else [root.upper, root.lower]
        missing = command_lookup.check(
            roots, c.cmd, command_lookup.path_of(c.env, process.LAUNCH_PATH)
        )
        if missing is not None:
            raise InvalidArgument(missing.message)
        # `run -t`: a pseudo-terminal whose output the agent copies to the log and whose input
        # is the client's (with -i); without -i nothing writes to it and the command waits.
        tty = c.tty
        spec = process.Launch(
            netns_path=netns.path(ns) if ns else None,
            cmd=c.cmd,
            hostname=c.uts_name,
            hosts_file=d / "hosts",
            resolv_file=d / "resolv.conf",
            log_file=d / "output.log",
            exit_file=d / "exitcode",
            env=c.env,
            stdin_fifo=d / "stdin" if c.open_stdin and stdin_fd is None and not tty else None,
            stdin_fd=None if tty else stdin_fd,
            root=root,
            busybox=rootfs.BUSYBOX,
            tty=tty,
        )
        try:
            if tty:
                started = process.spawn(spec)
                proc, run = started.proc, started.running
                assert started.pty_master is not None
                client_input = os.dup(stdin_fd) if stdin_fd is not None else None
                relay = process.relay_tty(started.pty_master, spec.log_file, client_input)
                self._tty_relays[c.id] = relay
            else:
                proc, run = process.start(spec)
        except OSError as e:
            raise Unavailable(f"cannot start {c.name}: {e}") from None
        self._children[c.id] = proc
        waited_by_caller = any(label in c.labels for label in ROOT_WAITED_BY_CALLER)
        if root is not None and not waited_by_caller:
            _wait_in_root(c.name, run)
        c.pid, c.pid_start = run.pid, run.start_ticks
        c.status, c.exit_code = Status.RUNNING, None
        c.desired_running = True
        c.started_at, c.finished_at = now_iso(), None
        self.store.put_container(c)
        self.generation += 1
        self._container_event(c, "start")

    def exec_spec(
        self, c: Container, cmd: Iterable[str], env: Iterable[str], term: str | None
    ) -> tuple[list[str], dict[str, str]]:
        """How `exec` enters a running container (beside `_launch`, which starts it): its
        namespaces through its process, with Docker's exec environment."""
        pid = self.exec_pid(c)
        if c.status != Status.RUNNING or pid is None:
            raise Conflict(f"container {c.name} is not running")
        wanted = {
            "PATH": EXEC_PATH,
            "HOSTNAME": c.uts_name,
            "HOME": "/root",
            "TERM": term or "",
        }
        for item in [*c.env, *env]:
            key, _, value = item.partition("=")
            wanted[key] = value
        # The mount namespace puts the command in the container's root; -p in its pid
        # namespace (nsenter forks for it), so `ps` inside shows the container's processes.
        argv = ["nsenter", "-t", str(pid), "-n", "-m", "-u", "-p", "--", *cmd]
        return argv, {k: v for k, v in wanted.items() if v}

    def exec_pid(self, c: Container) -> int | None:
        """The host pid of the container's first process in its own namespaces (what `exec`
        enters and `inspect` shows as State.Pid); None unless it runs."""
        run = self._running(c)
        if c.status != Status.RUNNING or run is None or not self._alive(c):
            return None
        return process.exec_pid(run)

    def read_log(self, c: Container, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes of the container's output from `offset` (b"" at its end)."""
        try:
            with open(self.container_dir(c) / "output.log", "rb") as f:
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    def wait_started(self, c: Container) -> None:
        """Wait (no lock needed: it only reads /proc) until a started container's init runs
        inside its image root: what `container_start` skips for ROOT_WAITED_BY_CALLER."""
        run = self._running(c)
        if run is not None and c.status == Status.RUNNING:
            _wait_in_root(c.name, run)

    def _running(self, c: Container) -> process.Running | None:
        if c.pid is None or c.pid_start is None:
            return None
        return process.Running(c.pid, c.pid_start)

    def _alive(self, c: Container) -> bool:
        proc = self._children.get(c.id)
        if proc is not None:
            return proc.poll() is None
        run = self._running(c)
        return run is not None and process.alive(run)

    def begin_stop(self, ref: str) -> tuple[Container, process.Running | None]:
        """Record that the container should not run; the process to stop, if it runs.

        The stop itself (`process.stop`, up to its timeout) is the caller's, outside the state
        lock: a slow stop must not hold up other requests or the planes."""
        c = self.container(ref)
        c.desired_running = False
        self.store.put_container(c)
        run = self._running(c) if c.status == Status.RUNNING else None
        return c, run

    def poll(self) -> list[Container]:
        """Notice containers whose process has ended; returns those that just did."""
        for cid, relay in list(self._tty_relays.items()):
            if relay.poll() is not None:
                del self._tty_relays[cid]
        ended = []
        for c in self.containers.values():
            if c.status != Status.RUNNING or self._alive(c):
                continue
            proc = self._children.pop(c.id, None)
            code = process.read_exit_code(self.container_dir(c) / "exitcode")
            if code is None and proc is not None:
                rc = proc.returncode
                code = 128 - rc if rc is not None and rc < 0 else rc
            c.status = Status.EXITED
            c.exit_code = code if code is not None else 137
            c.finished_at = now_iso()
            c.desired_running = False
            self.store.put_container(c)
            ended.append(c)
            self.generation += 1
            self._container_event(c, "die", exitCode=str(c.exit_code))
        return ended

    def container_rm(self, ref: str, force: bool = False) -> Container:
        c = self.container(ref)
        if c.status == Status.RUNNING and self._alive(c):
            if not force:
                raise Conflict(
                    f"You cannot remove a running container {c.id}. Stop the container "
                    "before attempting removal or force remove"
                )
            run = self._running(c)
            if run is not None:
                process.stop(run, timeout=0)
            self.poll()
        # Kernel side first: the agent returns swarm addresses only once the endpoints are gone.
        del self.containers[c.id]
        self._apply_or_undo(lambda: self.containers.setdefault(c.id, c), f"cannot remove {c.name}")
        self.store.delete_container(c.id)
        self._children.pop(c.id, None)
        try:
            rootfs.remove(self.container_dir(c))
        except catalog.ImageError as e:
            # Something still mounted on it: leave the folder rather than delete through it.
            log.warning("could not remove the root filesystem of %s: %s", c.name, e)
        else:
            rmtree(self.container_dir(c))
        for ep in c.endpoints:
            if ep.network_id in self.networks:
                self._network_event(self.networks[ep.network_id], "disconnect", c)
                self._retire_if_unused(self.networks[ep.network_id])
        self.generation += 1
        self._container_event(c, "destroy")
        return c

    def top(self, ref: str) -> str:
        c = self.container(ref)
        if c.status != Status.RUNNING or c.pid is None or not self._alive(c):
            raise Conflict(f"container {c.name} is not running")
        return process.top(c.pid)


def _wait_in_root(name: str, run: process.Running) -> None:
    if not process.wait_in_root(run) and process.alive(run):
        # Very slow set-up (one that failed has ended: its log says why, the poll sees it).
        log.warning("container %s was not in its root in time", name)
