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
from typing import Any, Protocol

from pyroute2.netlink.exceptions import NetlinkError

from overlaynet.host import links, netns
from overlaynet.host.picture import (
    Changes,
    Observed,
    ObservedLink,
    Picture,
    TapSpec,
    Touched,
    diff,
    expected,
    narrowed,
    touched,
)
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


def observe_only(
    changed: Touched, names: KernelNames, taps: TapPort, probe: Iterable[str] = ()
) -> Observed:
    """What the kernel holds of the touched objects only: one netlink `get` per touched link
    and a stat per touched namespace, instead of dumping every link and address of the host
    (the dumps were about 40 % of a container's create, and grow with the host's containers).
    Inside the namespaces in `probe` that exist, their links, as `observe` does."""
    seen: dict[str, ObservedLink] = {}
    if changed.links:
        with links.ipr() as sock:
            for name in sorted(changed.links):
                link = _get_link(sock, name)
                if link is not None:
                    seen[name] = link
    spaces = frozenset(
        ns for ns in changed.namespaces if names.is_container_netns(ns) and netns.exists(ns)
    )
    inside = {
        ns: frozenset(link.ifname for link in links.dump(ns))
        for ns in sorted(set(probe))
        if netns.exists(ns)
    }
    return Observed(seen, spaces, frozenset(taps.served()), inside)


def _get_link(sock: Any, ifname: str) -> ObservedLink | None:
    """One link of the host's namespace by name as `observe` would see it (None: absent)."""
    try:
        msg = sock.link("get", ifname=ifname)[0]
    except NetlinkError as e:
        if e.code == links.ENODEV:
            return None
        raise
    info = msg.get("IFLA_LINKINFO")
    kind = (info.get("IFLA_INFO_KIND") if info else None) or ""
    master_name = None
    master = msg.get("IFLA_MASTER")
    if master:
        try:
            master_name = sock.link("get", index=master)[0].get("IFLA_IFNAME")
        except NetlinkError as e:
            if e.code != links.ENODEV:
                raise
    addresses: frozenset[IPv4Interface] = frozenset()
    if kind == "bridge":
        # Only bridges carry an address of ours (the gateway's).
        addresses = frozenset(
            IPv4Interface(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in sock.addr("dump", family=2)
            if a["index"] == msg["index"]
        )
    up = bool(msg.get("flags", 0) & links.IFF_UP)
    return ObservedLink(ifname, kind, master_name, up, addresses)


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
    fresh = set(changes.add_namespaces)
    for plan in changes.build_endpoints:
        if plan.container_netns not in fresh:
            # Half an endpoint (the container end left, the host end gone) is rebuilt whole;
            # a namespace made just now holds nothing to clear (each look inside enters it).
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


def reconcile_since(
    before: Picture,
    desired: Picture,
    names: KernelNames,
    taps: TapPort,
    probe: Iterable[str] = (),
) -> Applied:
    """Make the kernel match `desired` when it held `before` (the last reconciliation, which
    succeeded): only the objects that differ between the two are observed, the rest is
    trusted. A stray made behind the agent's back is left to the next full `reconcile` (at
    start-up, and after any reconciliation that failed half-way)."""
    changed = touched(before, desired)
    observed = narrowed(expected(before), observe_only(changed, names, taps, probe), changed)
    return apply(diff(desired, observed), taps)
