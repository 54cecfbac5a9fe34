"""The reconciling shell: observe the kernel, diff it against a desired picture, apply.

Start-up, restart after `kill -9` and every request that changes the host go through
`reconcile()`: what is missing is built, what is broken is rebuilt, what is ours but not
wanted (a stray) is removed. Applying the same picture twice changes nothing the second time.
The decisions are in `host/picture.py` (pure); this module only looks and acts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import Protocol

from overlaynet.host import links, netns
from overlaynet.host.picture import Changes, Observed, ObservedLink, Picture, TapSpec, diff
from overlaynet.names import LINK_PREFIX, KernelNames

log = logging.getLogger(__name__)


class TapPort(Protocol):
    """Who owns the overlays' TAPs (the VTEP holds their file descriptors)."""

    def served(self) -> set[str]:
        """The TAPs served now."""

    def attach(self, spec: TapSpec) -> None:
        """Open the TAP, enslave it to its bridge and serve it."""

    def detach(self, ifname: str) -> None:
        """Stop serving the TAP (it disappears with its file descriptor)."""


class NoTaps:
    """A host without a VXLAN data plane: no TAPs to serve."""

    def served(self) -> set[str]:
        return set()

    def attach(self, spec: TapSpec) -> None:
        raise RuntimeError("this agent has no VXLAN data plane: overlay networks need one")

    def detach(self, ifname: str) -> None:
        pass


def observe(names: KernelNames, taps: TapPort, probe: Iterable[str] = ()) -> Observed:
    """The host's links and namespaces of ours; inside the namespaces in `probe`, their links."""
    dumped = links.dump()
    by_index = {link.index: link.ifname for link in dumped}
    addrs: dict[str, set[IPv4Interface]] = {}
    for ifname, addr in links.addresses():
        addrs.setdefault(ifname, set()).add(addr)
    ours = {
        link.ifname: ObservedLink(
            link.ifname,
            link.kind,
            by_index.get(link.master or 0),
            link.up,
            frozenset(addrs.get(link.ifname, ())),
        )
        for link in dumped
        if link.ifname.startswith(LINK_PREFIX)
    }
    spaces = frozenset(
        ns for ns in netns.list_names(names.ns_prefix) if names.is_container_netns(ns)
    )
    inside = {ns: frozenset(link.ifname for link in links.dump(ns)) for ns in probe if ns in spaces}
    return Observed(ours, spaces, frozenset(taps.served()), inside)


@dataclass(frozen=True)
class Applied:
    """What one reconciliation did (the agent logs it at start-up)."""

    bridges: int = 0
    endpoints: int = 0
    strays: int = 0
    namespaces: int = 0


def apply(changes: Changes, taps: TapPort) -> Applied:
    """Carry out the changes in a safe order: removals first, then from bridges inward."""
    for ifname in changes.detach_taps:
        taps.detach(ifname)
    rebuilt = {plan.host_ifname for plan in changes.build_endpoints}
    for ifname in changes.remove_links:
        if ifname not in rebuilt:
            log.info("removing stray link %s", ifname)
        links.delete(ifname)
    for ns in changes.remove_namespaces:
        log.info("removing stray namespace %s", ns)
        netns.remove(ns)
    for bridge in changes.ensure_bridges:
        links.ensure_bridge(bridge.ifname, bridge.address, bridge.mtu)
    for tap in changes.attach_taps:
        taps.attach(tap)
    for ns in changes.add_namespaces:
        netns.create(ns, ipv6=False)
    for plan in changes.build_endpoints:
        # Half an endpoint (the container end left, the host end gone) is rebuilt whole.
        links.delete(plan.ifname, netns=plan.container_netns)
        links.delete(plan.temp_ifname, netns=plan.container_netns)
        links.create_endpoint(plan)
    strays = len([i for i in changes.remove_links if i not in rebuilt])
    return Applied(
        bridges=len(changes.ensure_bridges),
        endpoints=len(changes.build_endpoints),
        strays=strays + len(changes.remove_namespaces),
        namespaces=len(changes.add_namespaces),
    )


def reconcile(
    desired: Picture, names: KernelNames, taps: TapPort, probe: Iterable[str] = ()
) -> Applied:
    """Make the kernel match `desired`; `probe` names the namespaces to look inside."""
    return apply(diff(desired, observe(names, taps, probe)), taps)
