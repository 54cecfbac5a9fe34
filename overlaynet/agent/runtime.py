"""One host's networks and containers: records, store and kernel kept in step.

Synchronous on purpose: the agent calls it from a worker thread under its short state lock
(never across a slow wait: stopping a process runs outside it). The decisions are the pure host
core's (`hostcore`); every change of records ends in one reconciliation of the kernel
(`host/reconcile.py`), the same path `restore()` takes at start-up. Swarm state (a network
brought here, an address from the managers) is fetched by the agent beforehand and handed in:
the runtime never calls out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import TypeVar

from overlaynet.agent import hostcore, views
from overlaynet.agent.events import EventLog
from overlaynet.agent.overlay import OverlayDriver, StaticEndpoint
from overlaynet.agent.requests import ContainerCreate, NetworkCreate, labels_of
from overlaynet.agent.store import Store
from overlaynet.cluster import ipam
from overlaynet.errors import ApiError, Conflict, InvalidArgument, NotFound, Unavailable
from overlaynet.host import links, netns, process, reconcile
from overlaynet.host.picture import TapSpec
from overlaynet.images import catalog, rootfs
from overlaynet.model import (
    BRIDGE_NAME_OPTION,
    DEFAULT_BRIDGE_IFNAME,
    PREDEFINED_NETWORKS,
    Container,
    Driver,
    Endpoint,
    Network,
    Status,
)
from overlaynet.names import (
    BadName,
    KernelNames,
    check_container_name,
    new_id,
    short_id,
)

log = logging.getLogger(__name__)


def now_iso() -> str:
    return hostcore.iso_from_epoch(time.time())


_Named = TypeVar("_Named", Network, Container)


@dataclass(frozen=True)
class Allocation:
    """An endpoint's address on a swarm network, allocated by the managers beforehand."""

    endpoint_id: str
    ip: str
    mac: str


# Adjectives and names for containers started without --name, as Docker does (names-generator).
_LEFT = ("admiring", "brave", "clever", "dreamy", "eager", "focused", "gallant", "happy", "keen")
_RIGHT = ("babbage", "curie", "dijkstra", "hopper", "lovelace", "noether", "shannon", "turing")


class Runtime:
    """Networks and containers of one host; `names` says how its kernel objects are named."""

    def __init__(
        self,
        host: str,
        state_dir: Path,
        names: KernelNames,
        copy_host_resolv: bool = True,
        overlay: OverlayDriver | None = None,
    ) -> None:
        self.host = host
        self.overlay = overlay
        # A lab host has no way out: its containers get no copy of the machine's resolvers.
        self.copy_host_resolv = copy_host_resolv
        self.state_dir = state_dir
        self.names = names
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "containers").mkdir(exist_ok=True)
        self.store = Store(state_dir / "state.db")
        self.networks: dict[str, Network] = {n.id: n for n in self.store.networks()}
        self.containers: dict[str, Container] = {c.id: c for c in self.store.containers()}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # `run -t` containers' pty relays started by this agent (reaped once they end).
        self._tty_relays: dict[str, subprocess.Popen[bytes]] = {}
        self.taps: reconcile.TapPort = _OverlayTaps(self) if overlay else reconcile.NoTaps()
        # Reconciliations run one at a time: two at once would both build what is missing.
        self._kernel_lock = threading.Lock()
        # Bumped by every change other planes (DNS, overlay) follow: endpoints, running state.
        self.generation = 0
        # `events`: what happened here, as Docker reports it (agent/events.py).
        self.events = EventLog()

    # ---- lookups ------------------------------------------------------------------------

    def network(self, ref: str) -> Network:
        """By full id, name, or unique id prefix (Docker's rules)."""
        return _lookup(self.networks, ref, "network", f"network {ref} not found")

    def container(self, ref: str) -> Container:
        return _lookup(self.containers, ref.lstrip("/"), "container", f"No such container: {ref}")

    def local_network(self, ref: str) -> Network | None:
        try:
            return self.network(ref)
        except NotFound:
            return None

    def attach_target(self, ref: str, swarm_net: Network | None = None) -> Network:
        """The network a container attaches to: a local one, or a swarm network brought here.

        Swarm networks reach a host only when a container there needs them (lazy extension):
        the local record, bridge and TAP are made now and go with the last local container.
        `swarm_net` is the managers' record, fetched by the agent when `ref` is not local.
        """
        try:
            return self.network(ref)
        except NotFound:
            if swarm_net is None:
                raise
        hostcore.check_attachable(swarm_net, ref)
        self._add_network(swarm_net)
        return swarm_net

    def swarm_endpoints(self, c: Container) -> list[tuple[Network, Endpoint]]:
        """A container's endpoints whose addresses the managers allocated."""
        out = []
        for ep in c.endpoints:
            net = self.networks.get(ep.network_id)
            if net is not None and net.scope == "swarm":
                out.append((net, ep))
        return out

    def _retire_if_unused(self, net: Network) -> None:
        """The last local container left a swarm network: it leaves this host too."""
        if net.scope != "swarm" or self.containers_on(net.id):
            return
        self.networks.pop(net.id, None)
        self.store.delete_network(net.id)
        self._reconcile()
        self.generation += 1

    def containers_on(self, network_id: str) -> list[Container]:
        return hostcore.containers_on(network_id, self.containers.values())

    def container_dir(self, c: Container) -> Path:
        return self.state_dir / "containers" / c.id

    def container_netns(self, c: Container) -> str | None:
        return hostcore.container_netns(c, self.names)

    # ---- the kernel follows the records --------------------------------------------------

    def _reconcile(self, probe: Iterable[str] = ()) -> reconcile.Applied:
        """Make the kernel match the records (see host/reconcile.py); `probe`: the container
        namespaces to look inside (those a request touches; all of them at restart)."""
        desired = hostcore.picture(self.networks, self.containers.values(), self.names)
        with self._kernel_lock:
            return reconcile.reconcile(desired, self.names, self.taps, probe)

    def _apply_or_undo(
        self, undo: Callable[[], object], what: str, probe: Iterable[str] = ()
    ) -> None:
        """Reconcile after a change of records; if the kernel refuses, undo the records,
        reconcile back (best effort) and refuse the request with the kernel's reason."""
        try:
            self._reconcile(probe)
        except _KERNEL_ERRORS as e:
            undo()
            try:
                self._reconcile(probe)
            except _KERNEL_ERRORS as again:
                log.warning("could not undo after a refused request: %s", again)
            raise Unavailable(f"{what}: {e}") from None

    # ---- networks -----------------------------------------------------------------------

    def ensure_predefined(self) -> None:
        """The networks every host has: `bridge` (no name resolution), `host` and `none`."""
        have = {n.name for n in self.networks.values()}
        for name in PREDEFINED_NETWORKS:
            if name in have:
                continue
            if name == "bridge":
                cfg = ipam.make_config(ipam.DEFAULT_BRIDGE_SUBNET)
                net = Network(
                    id=new_id(),
                    name="bridge",
                    driver=Driver.BRIDGE,
                    created=now_iso(),
                    subnet=str(cfg.subnet),
                    gateway=str(cfg.gateway),
                    options={BRIDGE_NAME_OPTION: DEFAULT_BRIDGE_IFNAME},
                )
            else:
                driver = Driver.HOST if name == "host" else Driver.NULL
                net = Network(id=new_id(), name=name, driver=driver, created=now_iso())
            self._save_network(net)

    def _save_network(self, net: Network) -> None:
        self.store.put_network(net)
        self.networks[net.id] = net

    def _host_subnets(self) -> list[tuple[str, IPv4Network]]:
        """Subnets of every address on this host but our bridges' (the underlay included)."""
        ours = {n.bridge_ifname for n in self.networks.values()}
        return [
            (f"interface {ifname}", iface.network)
            for ifname, iface in links.addresses()
            if ifname not in ours and not iface.ip.is_loopback
        ]

    def network_create(self, req: NetworkCreate) -> Network:
        net = hostcore.decide_network(
            req,
            self.networks,
            self._host_subnets(),
            new_id(),
            now_iso(),
            overlay_capable=self.overlay is not None,
        )
        self._add_network(net)
        self._network_event(net, "create")
        return net

    def _network_event(self, net: Network, action: str, c: Container | None = None) -> None:
        attrs = {"name": net.name, "type": str(net.driver)}
        if c is not None:
            attrs["container"] = c.id
        self.events.emit("network", action, net.id, attrs)

    def _container_event(self, c: Container, action: str, **extra: str) -> None:
        # Docker's container events carry the labels, the image and the name.
        attrs = {**c.labels, "image": c.image, "name": c.name, **extra}
        self.events.emit("container", action, c.id, attrs)

    def _add_network(self, net: Network) -> None:
        """Record the network and build its bridge (and TAP); a failure undoes both."""
        self.networks[net.id] = net
        self._apply_or_undo(
            lambda: self.networks.pop(net.id, None), f"cannot create network {net.name}"
        )
        try:
            self.store.put_network(net)
        except Exception:
            self.networks.pop(net.id, None)
            self._reconcile()
            raise

    def network_rm(self, ref: str) -> Network:
        net = self.network(ref)
        hostcore.check_removable(net, self.containers.values())
        del self.networks[net.id]
        self._apply_or_undo(
            lambda: self.networks.setdefault(net.id, net), f"cannot remove network {net.name}"
        )
        self.store.delete_network(net.id)
        self._network_event(net, "destroy")
        return net

    # ---- containers ---------------------------------------------------------------------

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
    ) -> Container:
        """A container with its namespace and first endpoint; `swarm_net` and `allocation`
        come from the managers when the network is a swarm one."""
        name = req.name or self._pick_name()
        try:
            check_container_name(name, "container")
        except BadName as e:
            raise InvalidArgument(str(e)) from None
        if req.hostname is not None:
            check_hostname(req.hostname)
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
        )
        ns = self.container_netns(c)
        self.container_dir(c).mkdir(parents=True, exist_ok=True)
        if req.hostname:
            # Kept beside the container's other files: the record has no field for it.
            (self.container_dir(c) / HOSTNAME_FILE).write_text(req.hostname + "\n")
        if req.tty:
            (self.container_dir(c) / TTY_FILE).touch()  # `run -t`, as the hostname is kept

        def undo() -> None:
            self.containers.pop(c.id, None)

        try:
            if net.driver in (Driver.BRIDGE, Driver.OVERLAY):
                ep = self._new_endpoint(c, net, req.ip, list(req.aliases), True, allocation)
                c.endpoints.append(ep)  # before building: a failure below releases it
            self.containers[c.id] = c
            what = (
                f"cannot connect {c.name} to {net.name}" if c.endpoints else f"cannot create {name}"
            )
            self._apply_or_undo(undo, what, probe=[ns] if ns else [])
            self.store.put_container(c)
        except BaseException:
            undo()
            with contextlib.suppress(*_KERNEL_ERRORS):
                self._reconcile()
            _rmtree(self.container_dir(c))
            self._retire_if_unused(net)
            raise
        self._write_container_files(c)
        self.generation += 1
        self._container_event(c, "create")
        if c.endpoints:
            self._network_event(net, "connect", c)
        return c

    def task_create(
        self, req: ContainerCreate, attachments: list[tuple[Network, Allocation]]
    ) -> Container:
        """A service task's container on the swarm networks (attachable or not: the task is
        the service's) with the addresses the managers allocated; `req.network` is the first
        attachment's id, or a local network (then every attachment is connected after it)."""
        added = [net for net, _ in attachments if net.id not in self.networks]
        first = attachments[0][1] if attachments and attachments[0][0].id == req.network else None
        try:
            for net in added:
                self._add_network(net)
            c = self.container_create(req, None, first)
            for net, allocation in attachments[1:] if first else attachments:
                self.network_connect(net.id, c.id, allocation=allocation)
        except BaseException:
            for net in added:
                if net.id in self.networks:
                    self._retire_if_unused(net)
            raise
        return c

    def _new_endpoint(
        self,
        c: Container,
        net: Network,
        ip: str | None,
        aliases: list[str],
        first: bool,
        allocation: Allocation | None,
    ) -> Endpoint:
        assert net.subnet and net.gateway
        for alias in aliases:
            try:
                check_container_name(alias, "alias")
            except BadName as e:
                raise InvalidArgument(str(e)) from None
        ifname = "eth0" if first else f"eth{_next_eth(c.endpoints)}"
        if net.scope == "swarm":
            if allocation is None:
                raise Unavailable(f"no address from the managers for network {net.name}")
            a = allocation
            return Endpoint(a.endpoint_id, net.id, ifname, a.ip, a.mac, list(aliases))
        ip_text, mac = hostcore.choose_address(net, self.containers.values(), ip)
        return Endpoint(new_id(), net.id, ifname, ip_text, mac, list(aliases))

    def _write_container_files(self, c: Container) -> None:
        """/etc/hosts and /etc/resolv.conf as the container will see them."""
        d = self.container_dir(c)
        hosts = hostcore.hosts_file(c)
        hostname = self.hostname_of(c)
        if hostname != short_id(c.id):
            # Docker's /etc/hosts names the container by its --hostname, not its short id.
            hosts = hosts.replace(f"\t{short_id(c.id)}\n", f"\t{hostname}\n")
        (d / "hosts").write_text(hosts)
        host = _read_text("/etc/resolv.conf") if self.copy_host_resolv else None
        (d / "resolv.conf").write_text(hostcore.resolv_conf(c, self.networks, host))

    def hostname_of(self, c: Container) -> str:
        """The container's hostname: `run --hostname`'s, else its short id (as Docker's)."""
        try:
            given = (self.container_dir(c) / HOSTNAME_FILE).read_text().strip()
        except OSError:
            given = ""
        return given or short_id(c.id)

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
        hostname = self.hostname_of(c)
        try:
            # Kept if it exists: a restarted container (or agent) finds its own files again.
            root = rootfs.prepare(image, d, hostname)
        except (catalog.ImageError, OSError) as e:
            raise Unavailable(f"cannot prepare the root filesystem of {c.name}: {e}") from None
        # `run -t`: a pseudo-terminal whose output the agent copies to the log and whose input
        # is the client's (with -i); without -i nothing writes to it and the command waits.
        tty = (d / TTY_FILE).exists()
        spec = process.Launch(
            netns_path=netns.path(ns) if ns else None,
            cmd=c.cmd,
            hostname=hostname,
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
        if root is not None and not process.wait_in_root(run) and process.alive(run):
            # Very slow set-up (one that failed has ended: its log says why, the poll sees it).
            log.warning("container %s was not in its root in time", c.name)
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
            "HOSTNAME": self.hostname_of(c),
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
            _rmtree(self.container_dir(c))
        for ep in c.endpoints:
            if ep.network_id in self.networks:
                self._network_event(self.networks[ep.network_id], "disconnect", c)
                self._retire_if_unused(self.networks[ep.network_id])
        self.generation += 1
        self._container_event(c, "destroy")
        return c

    def network_connect(
        self,
        net_ref: str,
        container_ref: str,
        ip: str | None = None,
        aliases: Iterable[str] = (),
        swarm_net: Network | None = None,
        allocation: Allocation | None = None,
    ) -> Container:
        c = self.container(container_ref)
        net = self.attach_target(net_ref, swarm_net)
        first = not c.endpoints
        try:
            if c.network_mode == "host" or net.driver == Driver.HOST:
                raise InvalidArgument(
                    "container cannot be disconnected from host network or connected to host "
                    "network"
                )
            if net.driver == Driver.NULL:
                raise InvalidArgument("container cannot be connected to the none network")
            if c.endpoint_on(net.id):
                raise Conflict(f"endpoint with name {c.name} already exists in network {net.name}")
            if aliases and not net.has_name_resolution:
                raise InvalidArgument(
                    "network-scoped aliases are only supported for user-defined networks"
                )
            ep = self._new_endpoint(c, net, ip, list(aliases), first, allocation)
        except BaseException:
            self._retire_if_unused(net)  # a swarm network brought here for nothing goes again
            raise
        c.endpoints.append(ep)
        ns = self.container_netns(c)
        try:
            self._apply_or_undo(
                lambda: c.endpoints.remove(ep),
                f"cannot connect {c.name} to {net.name}",
                probe=[ns] if ns else [],
            )
        except BaseException:
            self._retire_if_unused(net)
            raise
        if c.network_mode == "none":
            c.network_mode = net.name
        self.store.put_container(c)
        self._write_container_files(c)
        self.generation += 1
        self._network_event(net, "connect", c)
        return c

    def network_disconnect(self, net_ref: str, container_ref: str) -> Container:
        net = self.network(net_ref)
        c = self.container(container_ref)
        ep = c.endpoint_on(net.id)
        if ep is None:
            raise NotFound(f"container {c.name} is not connected to network {net.name}")
        c.endpoints.remove(ep)
        self._apply_or_undo(
            lambda: c.endpoints.append(ep), f"cannot disconnect {c.name} from {net.name}"
        )
        self.store.put_container(c)
        self._write_container_files(c)
        self._network_event(net, "disconnect", c)
        self._retire_if_unused(net)
        self.generation += 1
        return c

    def top(self, ref: str) -> str:
        c = self.container(ref)
        if c.status != Status.RUNNING or c.pid is None or not self._alive(c):
            raise Conflict(f"container {c.name} is not running")
        return process.top(c.pid)

    # ---- restart reconciliation ---------------------------------------------------------

    def restore(self) -> dict[str, int]:
        """Make the kernel match the store: rebuild what is missing, remove strays of ours.

        The same reconciliation every request ends with, looking inside every container."""
        self.ensure_predefined()
        for net in hostcore.retired(self.networks, self.containers.values()):
            # A swarm network no container here uses (a `run` killed half-way): it goes.
            log.info("retiring unused swarm network %s", net.name)
            self.networks.pop(net.id)
            self.store.delete_network(net.id)
        probe = [ns for c in self.containers.values() if (ns := self.container_netns(c))]
        done = self._reconcile(probe)
        counts = {
            "bridges": done.bridges,
            "endpoints": done.endpoints,
            "relaunched": 0,
            "strays": done.strays,
        }
        for c in self.containers.values():
            self._write_container_files(c)
            ended_by_itself = process.read_exit_code(self.container_dir(c) / "exitcode") is not None
            if hostcore.needs_relaunch(c, self._alive(c), ended_by_itself):
                # Killed with the host or the agent, not ended by itself: bring it back.
                try:
                    self._launch(c)
                except ApiError as e:
                    # Its image left the catalog, say: the others still come back; this one
                    # is found ended by the poll below.
                    log.warning("could not relaunch %s: %s", c.name, e)
                    continue
                counts["relaunched"] += 1
        self.poll()
        self.generation += 1
        return counts

    # ---- overlay peers and endpoints given by hand ----------------------------------------

    def _overlay_network(self, ref: str) -> Network:
        net = self.network(ref)
        if net.driver != Driver.OVERLAY:
            raise InvalidArgument(f"network {net.name} is not an overlay network")
        return net

    def overlay_peer(self, ref: str, host_ip: str, add: bool) -> Network:
        """Add or remove a host that gets broadcast and unknown-unicast frames (head-end)."""
        net = self._overlay_network(ref)
        ip = hostcore.check_ipv4(host_ip, "peer address")
        if add and ip not in net.peers:
            net.peers.append(ip)
        elif not add:
            if ip not in net.peers:
                raise NotFound(f"{ip} is not a peer of network {net.name}")
            net.peers.remove(ip)
        self.store.put_network(net)
        if self.overlay is not None:
            self.overlay.apply_static(net)
        return net

    def overlay_fdb(
        self, ref: str, mac: str, host_ip: str | None, ip: str | None, add: bool
    ) -> Network:
        """Add or remove a remote endpoint by hand: MAC behind a host, IP answered by ARP."""
        net = self._overlay_network(ref)
        mac = hostcore.check_mac(mac)
        others = [e for e in net.static_endpoints if e["mac"] != mac]
        if add:
            if host_ip is None:
                raise InvalidArgument("a static endpoint needs the host (VTEP) it lives behind")
            entry = StaticEndpoint(
                mac,
                hostcore.check_ipv4(host_ip, "host address"),
                hostcore.check_ipv4(ip, "IP") if ip else None,
            )
            others.append(entry.to_json())
        elif len(others) == len(net.static_endpoints):
            raise NotFound(f"no static endpoint {mac} on network {net.name}")
        net.static_endpoints = others
        self.store.put_network(net)
        if self.overlay is not None:
            self.overlay.apply_static(net)
        return net


# Where `run --hostname` is kept in the container's folder (read at every launch).
HOSTNAME_FILE = "hostname"
# Present in the container's folder when it runs with a pseudo-terminal (`run -t`).
TTY_FILE = "tty"
# RFC 1123: a hostname is dot-separated labels of letters, digits and inner hyphens, each at
# most 63 characters; the kernel's UTS name holds at most 64 (HOST_NAME_MAX).
_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
HOSTNAME_MAX = 64


def check_hostname(name: str) -> None:
    """`run --hostname NAME`: a valid RFC 1123 hostname the kernel can hold, or a clear error."""
    labels = name.split(".")
    if len(name) > HOSTNAME_MAX or not all(_HOSTNAME_LABEL.fullmatch(x) for x in labels):
        raise InvalidArgument(
            f"invalid hostname {name!r}: expected letters, digits, hyphens and dots "
            f"(RFC 1123), at most {HOSTNAME_MAX} characters"
        )


# Who a container is, in its environment: the service images (overlaynet/web) print them.
ENV_NAME = "OVERLAYNET_NAME"
ENV_NODE = "OVERLAYNET_NODE"
# Docker's default PATH for a process started in a container (exec included).
EXEC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a kernel request can fail with (netlink, /proc writes, a TAP the VTEP cannot open).
_KERNEL_ERRORS = (links.LinkError, OSError, RuntimeError, ValueError)


class _OverlayTaps:
    """The overlays' TAPs as the reconciler sees them: the overlay driver serves them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def served(self) -> set[str]:
        assert self.runtime.overlay is not None
        return self.runtime.overlay.taps()

    def attach(self, spec: TapSpec) -> None:
        assert self.runtime.overlay is not None
        self.runtime.overlay.attach(self.runtime.networks[spec.network_id])

    def detach(self, ifname: str) -> None:
        assert self.runtime.overlay is not None
        self.runtime.overlay.detach_tap(ifname)


def _lookup(items: dict[str, _Named], ref: str, what: str, missing: str) -> _Named:
    """Docker's rules for naming an object: full id, then name, then a unique id prefix.

    Lookups also run on the event loop while a request changes the records in a worker thread:
    they walk a copy (`list()` of a dict is one step under the GIL), never the dict itself."""
    snapshot = list(items.items())
    for key, item in snapshot:
        if key == ref:
            return item
    for _, item in snapshot:
        if item.name == ref:
            return item
    matches = [item for key, item in snapshot if key.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InvalidArgument(f"{what} {ref} is ambiguous: give more of its id")
    raise NotFound(missing)


def _next_eth(endpoints: list[Endpoint]) -> int:
    used = {int(e.ifname[3:]) for e in endpoints if e.ifname[3:].isdigit()}
    return next(i for i in range(len(used) + 1) if i not in used)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
