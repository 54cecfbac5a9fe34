"""The desired kernel picture of one host, what was observed of it, and the diff (pure).

The host core says what should exist (bridges with their address, overlay TAPs on their bridge,
container namespaces, veth endpoints); `host/reconcile.py` observes the kernel and applies
`diff(desired, observed)`. No pyroute2 here: the diff is unit-tested without root, and applying
an empty diff is what "idempotent" means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Interface


@dataclass(frozen=True)
class BridgeSpec:
    """A network's bridge; overlays' bridges carry no address (it would exist on every host)."""

    ifname: str
    address: IPv4Interface | None
    mtu: int


@dataclass(frozen=True)
class TapSpec:
    """An overlay network's port into the VTEP, enslaved to the network's bridge."""

    network_id: str
    ifname: str
    bridge: str


@dataclass(frozen=True)
class VethPlan:
    """One container endpoint: a veth from a bridge in this namespace into a container's."""

    host_ifname: str
    temp_ifname: str
    bridge: str
    container_netns: str
    ifname: str
    mac: str | None
    address: IPv4Interface | None
    gateway: str | None
    mtu: int


@dataclass(frozen=True)
class Picture:
    """Everything of ours the kernel should hold, keyed by name."""

    bridges: Mapping[str, BridgeSpec] = field(default_factory=dict)
    taps: Mapping[str, TapSpec] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset()
    endpoints: Mapping[str, VethPlan] = field(default_factory=dict)  # by host_ifname

    def links(self) -> set[str]:
        """Names of the links of ours in the host's namespace."""
        return set(self.bridges) | set(self.taps) | set(self.endpoints)


@dataclass(frozen=True)
class ObservedLink:
    ifname: str
    kind: str
    master: str | None
    up: bool
    addresses: frozenset[IPv4Interface] = frozenset()


@dataclass(frozen=True)
class Observed:
    """What the kernel holds of ours now.

    `links`: our links (by name prefix) in the host's namespace. `namespaces`: our container
    namespaces. `taps`: the TAPs the VTEP serves (it owns their file descriptors).
    `container_links`: for each namespace probed, the link names inside it; a namespace not
    probed is trusted (probing every container costs a netlink socket per namespace, so a
    request probes only what it touches, a restart probes all).
    """

    links: Mapping[str, ObservedLink] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset()
    taps: frozenset[str] = frozenset()
    container_links: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Changes:
    """What to do, in the order it must be done: removals first, then builds outward-in."""

    remove_links: tuple[str, ...] = ()  # strays, and endpoints rebuilt from scratch
    detach_taps: tuple[str, ...] = ()
    remove_namespaces: tuple[str, ...] = ()
    ensure_bridges: tuple[BridgeSpec, ...] = ()
    attach_taps: tuple[TapSpec, ...] = ()
    add_namespaces: tuple[str, ...] = ()
    build_endpoints: tuple[VethPlan, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.remove_links,
                self.detach_taps,
                self.remove_namespaces,
                self.ensure_bridges,
                self.attach_taps,
                self.add_namespaces,
                self.build_endpoints,
            )
        )


def bridge_ok(spec: BridgeSpec, seen: ObservedLink | None) -> bool:
    if seen is None or seen.kind != "bridge" or not seen.up:
        return False
    return spec.address is None or spec.address in seen.addresses


def endpoint_ok(plan: VethPlan, observed: Observed) -> bool:
    """Host end present on its bridge, and (when probed) the container end present inside."""
    seen = observed.links.get(plan.host_ifname)
    if seen is None or seen.master != plan.bridge:
        return False
    if plan.container_netns not in observed.namespaces:
        return False
    inside = observed.container_links.get(plan.container_netns)
    return inside is None or plan.ifname in inside


def diff(desired: Picture, observed: Observed) -> Changes:
    """The changes that make `observed` into `desired`; empty when they already match.

    A stray (a link or namespace of ours the picture does not hold) is removed: links by the
    project's prefix, namespaces by this host's container-namespace prefix (the shell filters
    `observed` to those). A broken endpoint is removed and rebuilt whole: a veth is cheap, and
    half a veth cannot be repaired in place.
    """
    wanted_links = desired.links()
    remove = [name for name in sorted(observed.links) if name not in wanted_links]
    rebuild = []
    for name in sorted(desired.endpoints):
        plan = desired.endpoints[name]
        if not endpoint_ok(plan, observed):
            if name in observed.links:
                remove.append(name)
            rebuild.append(plan)
    bridges = [
        spec
        for name, spec in sorted(desired.bridges.items())
        if not bridge_ok(spec, observed.links.get(name))
    ]
    attach = []
    for name, tap in sorted(desired.taps.items()):
        seen = observed.links.get(name)
        if name not in observed.taps or seen is None or seen.master != tap.bridge:
            attach.append(tap)
    detach = sorted(observed.taps - set(desired.taps))
    return Changes(
        remove_links=tuple(remove),
        detach_taps=tuple(detach),
        remove_namespaces=tuple(sorted(observed.namespaces - desired.namespaces)),
        ensure_bridges=tuple(bridges),
        attach_taps=tuple(attach),
        add_namespaces=tuple(sorted(desired.namespaces - observed.namespaces)),
        build_endpoints=tuple(rebuild),
    )


# ---- a request's reconciliation: look only at what the request changed --------------------


@dataclass(frozen=True)
class Touched:
    """The objects a change of picture concerns: links of ours in the host's namespace, and
    container namespaces. When the kernel still holds the previous picture (the last
    reconciliation succeeded), these are the only objects worth observing."""

    links: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()


def touched(before: Picture, after: Picture) -> Touched:
    """What differs between two pictures: every link whose spec changed, appeared or went
    (with the ports of a changed bridge, which hang on it), every namespace that appeared or
    went, and the namespaces of the changed endpoints (their container ends live there)."""
    links: set[str] = set()
    kinds: tuple[tuple[Mapping[str, object], Mapping[str, object]], ...] = (
        (before.bridges, after.bridges),
        (before.taps, after.taps),
        (before.endpoints, after.endpoints),
    )
    for old, new in kinds:
        links.update(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    bridges = {name for name in links if name in before.bridges or name in after.bridges}
    for picture in (before, after):
        links.update(n for n, tap in picture.taps.items() if tap.bridge in bridges)
        links.update(n for n, plan in picture.endpoints.items() if plan.bridge in bridges)
    spaces = set(before.namespaces ^ after.namespaces)
    for picture in (before, after):
        spaces.update(p.container_netns for n, p in picture.endpoints.items() if n in links)
    return Touched(frozenset(links), frozenset(spaces))


def expected(picture: Picture) -> Observed:
    """What observing the kernel finds once `picture` is applied, and nothing else of ours:
    the previous reconciliation's result, trusted for every object a request does not touch."""
    links: dict[str, ObservedLink] = {}
    for name, bridge in picture.bridges.items():
        addresses = frozenset({bridge.address}) if bridge.address is not None else frozenset()
        links[name] = ObservedLink(name, "bridge", None, True, addresses)
    for name, tap in picture.taps.items():
        links[name] = ObservedLink(name, "tun", tap.bridge, True)
    for name, plan in picture.endpoints.items():
        links[name] = ObservedLink(name, "veth", plan.bridge, True)
    return Observed(links, picture.namespaces, frozenset(picture.taps), {})


def narrowed(assumed: Observed, seen: Observed, changed: Touched) -> Observed:
    """`assumed` with the touched objects as `seen` (an observation of those only) found them.

    `seen.taps` replaces the assumed ones whole (the VTEP's own list: free to read), and a
    namespace probed in `seen` has its links from there."""
    links = {n: link for n, link in assumed.links.items() if n not in changed.links}
    links.update((n, link) for n, link in seen.links.items() if n in changed.links)
    spaces = (assumed.namespaces - changed.namespaces) | (seen.namespaces & changed.namespaces)
    inside = {ns: v for ns, v in assumed.container_links.items() if ns in spaces}
    inside.update((ns, v) for ns, v in seen.container_links.items() if ns in spaces)
    return Observed(links, spaces, seen.taps, inside)
