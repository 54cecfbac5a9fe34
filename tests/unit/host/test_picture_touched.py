"""A request's reconciliation looks only at what it changes (pure): `touched`, `expected` and
`narrowed` in host/picture.py, against the full observation they stand in for."""

from __future__ import annotations

from ipaddress import IPv4Interface
from typing import TypeVar

from hypothesis import given
from hypothesis import strategies as st

from overlaynet.host.picture import (
    BridgeSpec,
    Changes,
    Observed,
    ObservedLink,
    Picture,
    TapSpec,
    Touched,
    VethPlan,
    diff,
    expected,
    narrowed,
    touched,
)

ADDR = IPv4Interface("172.18.0.1/16")
NS1, NS2 = "onet-l-h-aaaaaaaaaaaa", "onet-l-h-bbbbbbbbbbbb"
BRIDGES = {
    "on-br-1": (BridgeSpec("on-br-1", ADDR, 1500), BridgeSpec("on-br-1", None, 1450)),
    "on-br-2": (BridgeSpec("on-br-2", None, 1450), BridgeSpec("on-br-2", ADDR, 1500)),
}
TAPS = {
    "on-tap-1": (TapSpec("n1", "on-tap-1", "on-br-1"), TapSpec("n1", "on-tap-1", "on-br-2")),
}


def _plan(host: str, ns: str, bridge: str, mac: str) -> VethPlan:
    return VethPlan(host, host.replace("on-ve", "on-vc"), bridge, ns, "eth0", mac, None, None, 1500)


ENDPOINTS = {
    "on-ve1": (
        _plan("on-ve1", NS1, "on-br-1", "02:42:00:00:00:01"),
        _plan("on-ve1", NS1, "on-br-1", "02:42:00:00:00:09"),
    ),
    "on-ve2": (
        _plan("on-ve2", NS2, "on-br-2", "02:42:00:00:00:02"),
        _plan("on-ve2", NS2, "on-br-1", "02:42:00:00:00:02"),
    ),
}


_Spec = TypeVar("_Spec", BridgeSpec, TapSpec, VethPlan)


@st.composite
def pictures(draw: st.DrawFn) -> Picture:
    """Pictures over a small pool of names, each object absent or in one of two variants."""

    def pick(pool: dict[str, tuple[_Spec, _Spec]]) -> dict[str, _Spec]:
        out = {}
        for name, variants in pool.items():
            choice = draw(st.sampled_from((None, 0, 1)))
            if choice is not None:
                out[name] = variants[choice]
        return out

    endpoints = pick(ENDPOINTS)
    spaces = draw(st.sets(st.sampled_from([NS1, NS2])))
    return Picture(
        pick(BRIDGES),
        pick(TAPS),
        frozenset(spaces | {p.container_netns for p in endpoints.values()}),
        endpoints,
    )


def kernel_holding(picture: Picture) -> Observed:
    """The whole kernel once `picture` is applied, container ends included."""
    seen = expected(picture)
    inside = {ns: frozenset({"lo"}) for ns in picture.namespaces}
    for plan in picture.endpoints.values():
        inside[plan.container_netns] = inside[plan.container_netns] | {plan.ifname}
    return Observed(seen.links, seen.namespaces, seen.taps, inside)


def full_observe(kernel: Observed, probe: set[str]) -> Observed:
    """What `reconcile.observe` reports of `kernel`, looking inside the namespaces in `probe`."""
    inside = {ns: v for ns, v in kernel.container_links.items() if ns in probe}
    return Observed(kernel.links, kernel.namespaces, kernel.taps, inside)


def observe_only(kernel: Observed, changed: Touched, probe: set[str]) -> Observed:
    """What `reconcile.observe_only` reports of `kernel`."""
    return Observed(
        {n: link for n, link in kernel.links.items() if n in changed.links},
        frozenset(ns for ns in kernel.namespaces if ns in changed.namespaces),
        kernel.taps,
        {ns: v for ns, v in kernel.container_links.items() if ns in probe},
    )


def _apply(ch: Changes, kernel: Observed) -> Observed:
    """The kernel after a faithful `reconcile.apply` of `ch`."""
    links = {k: v for k, v in kernel.links.items() if k not in ch.remove_links}
    for name in ch.detach_taps:
        links.pop(name, None)
    taps = kernel.taps - set(ch.detach_taps)
    spaces = kernel.namespaces - set(ch.remove_namespaces)
    inside = {ns: v for ns, v in kernel.container_links.items() if ns in spaces}
    for b in ch.ensure_bridges:
        addrs = frozenset({b.address}) if b.address else frozenset()
        links[b.ifname] = ObservedLink(b.ifname, "bridge", None, True, addrs)
    for t in ch.attach_taps:
        links[t.ifname] = ObservedLink(t.ifname, "tun", t.bridge, True)
        taps = taps | {t.ifname}
    for ns in ch.add_namespaces:
        spaces = spaces | {ns}
        inside.setdefault(ns, frozenset({"lo"}))
    for p in ch.build_endpoints:
        links[p.host_ifname] = ObservedLink(p.host_ifname, "veth", p.bridge, True)
        inside[p.container_netns] = inside.get(p.container_netns, frozenset()) | {p.ifname}
    return Observed(links, spaces, taps, inside)


@given(pictures(), pictures())
def test_what_is_not_touched_is_the_same_in_both_pictures(before: Picture, after: Picture) -> None:
    changed = touched(before, after)
    for old, new in (
        (before.bridges, after.bridges),
        (before.taps, after.taps),
        (before.endpoints, after.endpoints),
    ):
        for name in (set(old) | set(new)) - changed.links:
            assert old.get(name) == new.get(name)
    assert before.namespaces ^ after.namespaces <= changed.namespaces


@given(pictures(), pictures(), st.sets(st.sampled_from([NS1, NS2])))
def test_narrowed_sees_what_the_full_observation_sees_of_a_kernel_that_held_before(
    before: Picture, after: Picture, probe: set[str]
) -> None:
    kernel = kernel_holding(before)
    changed = touched(before, after)
    seen = narrowed(expected(before), observe_only(kernel, changed, probe), changed)
    assert diff(after, seen) == diff(after, full_observe(kernel, probe))


@given(pictures(), pictures())
def test_a_request_reconciled_narrowly_leaves_the_kernel_matching_after(
    before: Picture, after: Picture
) -> None:
    kernel = kernel_holding(before)
    changed = touched(before, after)
    seen = narrowed(expected(before), observe_only(kernel, changed, set()), changed)
    now = _apply(diff(after, seen), kernel)
    # A full look (strays included, every namespace probed) finds nothing left to do.
    assert diff(after, full_observe(now, set(now.namespaces))).empty


def test_a_new_container_touches_only_its_endpoint_and_namespace() -> None:
    bridge = BRIDGES["on-br-1"][0]
    one = _plan("on-ve1", NS1, "on-br-1", "02:42:00:00:00:01")
    two = _plan("on-ve2", NS2, "on-br-1", "02:42:00:00:00:02")
    before = Picture({"on-br-1": bridge}, {}, frozenset({NS1}), {"on-ve1": one})
    after = Picture({"on-br-1": bridge}, {}, frozenset({NS1, NS2}), {"on-ve1": one, "on-ve2": two})
    assert touched(before, after) == Touched(frozenset({"on-ve2"}), frozenset({NS2}))


def test_a_changed_bridge_touches_the_ports_on_it() -> None:
    old, new = BRIDGES["on-br-1"]
    tap = TAPS["on-tap-1"][0]
    plan = _plan("on-ve1", NS1, "on-br-1", "02:42:00:00:00:01")
    before = Picture({"on-br-1": old}, {"on-tap-1": tap}, frozenset({NS1}), {"on-ve1": plan})
    after = Picture({"on-br-1": new}, {"on-tap-1": tap}, frozenset({NS1}), {"on-ve1": plan})
    changed = touched(before, after)
    assert changed.links == {"on-br-1", "on-tap-1", "on-ve1"}
    assert changed.namespaces == {NS1}


def test_a_stray_beside_untouched_objects_is_left_to_the_full_observation() -> None:
    # The narrowed look trusts what it did not touch: a stray made behind the agent's back
    # is the start-up's (full) reconciliation to remove, not a request's.
    bridge = BRIDGES["on-br-1"][0]
    before = after = Picture({"on-br-1": bridge}, {}, frozenset(), {})
    kernel = kernel_holding(before)
    stray = ObservedLink("on-stray", "bridge", None, True)
    kernel = Observed({**kernel.links, "on-stray": stray}, kernel.namespaces, kernel.taps, {})
    changed = touched(before, after)
    assert diff(
        after, narrowed(expected(before), observe_only(kernel, changed, set()), changed)
    ).empty
    assert diff(after, full_observe(kernel, set())).remove_links == ("on-stray",)
