"""One host's records (networks, containers), their store, and the kernel kept in step.

The shell the runtime's two planes share (`agent/networks.py`, `agent/containers.py`): lookups by
Docker's naming rules, the SQLite store, and the one reconciliation of the kernel every change of
records ends in (`host/reconcile.py`), undone when the kernel refuses. Synchronous on purpose: the
agent calls it from a worker thread under its short state lock.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from overlaynet.agent import hostcore
from overlaynet.agent.events import EventLog
from overlaynet.agent.overlay import OverlayDriver
from overlaynet.agent.store import Store
from overlaynet.errors import InvalidArgument, NotFound, Unavailable
from overlaynet.host import links, reconcile
from overlaynet.host.picture import Picture, TapSpec
from overlaynet.model import Container, Endpoint, Network
from overlaynet.names import BadName, KernelNames, check_container_name, new_id

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


class HostRecords:
    """Networks and containers of one host; `names` says how its kernel objects are named.

    The base of `Runtime`'s two parts (`NetworkOps`, `ContainerOps`): they share these records,
    this store and this one reconciliation, so each part is a mixin on this class."""

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
        # Container processes this agent started (`ContainerOps` launches and polls them).
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # `run -t` containers' pty relays started by this agent (reaped once they end).
        self._tty_relays: dict[str, subprocess.Popen[bytes]] = {}
        self.taps: reconcile.TapPort = _OverlayTaps(self) if overlay else reconcile.NoTaps()
        # Reconciliations run one at a time: two at once would both build what is missing.
        self._kernel_lock = threading.Lock()
        # The picture the kernel was last made to match (None: not known, look at all of it).
        self._applied: Picture | None = None
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

    def _reconcile(self, probe: Iterable[str] = (), full: bool = False) -> reconcile.Applied:
        """Make the kernel match the records (see host/reconcile.py); `probe`: the container
        namespaces to look inside (those a request touches; all of them at restart).

        After a reconciliation that succeeded, the next one observes only what the records'
        change touches (`reconcile_since`): the whole host's dumps were about 40 % of each
        container's create. `full` (start-up), the first one, and any after a reconciliation
        that failed half-way observe the whole host, strays included."""
        desired = hostcore.picture(self.networks, self.containers.values(), self.names)
        with self._kernel_lock:
            before, self._applied = self._applied, None
            if full or before is None:
                done = reconcile.reconcile(desired, self.names, self.taps, probe)
            else:
                done = reconcile.reconcile_since(before, desired, self.names, self.taps, probe)
            self._applied = desired
            return done

    def _apply_or_undo(
        self, undo: Callable[[], object], what: str, probe: Iterable[str] = ()
    ) -> None:
        """Reconcile after a change of records; if the kernel refuses, undo the records,
        reconcile back (best effort) and refuse the request with the kernel's reason."""
        try:
            self._reconcile(probe)
        except KERNEL_ERRORS as e:
            undo()
            try:
                self._reconcile(probe)
            except KERNEL_ERRORS as again:
                log.warning("could not undo after a refused request: %s", again)
            raise Unavailable(f"{what}: {e}") from None

    def _save_network(self, net: Network) -> None:
        self.store.put_network(net)
        self.networks[net.id] = net

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
        (d / "hosts").write_text(hostcore.hosts_file(c, c.uts_name))
        host = _read_text("/etc/resolv.conf") if self.copy_host_resolv else None
        (d / "resolv.conf").write_text(hostcore.resolv_conf(c, self.networks, host))


# What a kernel request can fail with (netlink, /proc writes, a TAP the VTEP cannot open).
KERNEL_ERRORS = (links.LinkError, OSError, RuntimeError, ValueError)


class _OverlayTaps:
    """The overlays' TAPs as the reconciler sees them: the overlay driver serves them."""

    def __init__(self, runtime: HostRecords) -> None:
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


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
