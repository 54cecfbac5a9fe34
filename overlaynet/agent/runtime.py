"""One host's networks and containers: records, store and kernel kept in step.

`Runtime` is the host's two planes on one set of records: its networks (`agent/networks.py`)
and its containers' processes (`agent/containers.py`), both on `HostRecords`
(`agent/hostrecords.py`: lookups, store, reconciliation). Here: what needs both, a service
task's container and the restore at start-up. Synchronous on purpose: the agent calls it from a
worker thread under its short state lock (never across a slow wait). The decisions are the pure
host core's (`hostcore`); every change of records ends in one reconciliation of the kernel
(`host/reconcile.py`), the same path `restore()` takes at start-up. Swarm state (a network
brought here, an address from the managers) is fetched by the agent beforehand and handed in:
the runtime never calls out.
"""

from __future__ import annotations

import logging

from overlaynet.agent import hostcore
from overlaynet.agent.containers import ContainerOps
from overlaynet.agent.hostrecords import Allocation
from overlaynet.agent.networks import NetworkOps
from overlaynet.agent.requests import ContainerCreate
from overlaynet.errors import ApiError
from overlaynet.host import process
from overlaynet.model import Container, Network

# Allocation: the planes (tasks, lb) import it from here.
__all__ = ["Allocation", "Runtime"]

log = logging.getLogger(__name__)


class Runtime(ContainerOps, NetworkOps):
    """Networks and containers of one host; `names` says how its kernel objects are named."""

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
            # Every swarm network of the task in one pass over the kernel, not one per network.
            more = attachments[1:] if first else attachments
            c = self.container_create(req, None, first, more=more)
        except BaseException:
            for net in added:
                if net.id in self.networks:
                    self._retire_if_unused(net)
            raise
        return c

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
        done = self._reconcile(probe, full=True)
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
