"""The reconciler's diff (pure): desired picture vs what the kernel holds → changes."""

from __future__ import annotations

from ipaddress import IPv4Interface

from hypothesis import given
from hypothesis import strategies as st

from overlaynet.host.picture import (
    BridgeSpec,
    Observed,
    ObservedLink,
    Picture,
    TapSpec,
    VethPlan,
    diff,
)

ADDR = IPv4Interface("172.18.0.1/16")
BR = BridgeSpec("on-br-1", ADDR, 1500)
TAP = TapSpec("n1", "on-tap-1", "on-br-1")
NS = "onet-l-h-aaaaaaaaaaaa"
PLAN = VethPlan("on-ve1", "on-vc1", "on-br-1", NS, "eth0", None, None, None, 1500)


def desired() -> Picture:
    return Picture({BR.ifname: BR}, {TAP.ifname: TAP}, frozenset({NS}), {PLAN.host_ifname: PLAN})


def matching() -> Observed:
    return Observed(
        links={
            "on-br-1": ObservedLink("on-br-1", "bridge", None, True, frozenset({ADDR})),
            "on-tap-1": ObservedLink("on-tap-1", "tun", "on-br-1", True),
            "on-ve1": ObservedLink("on-ve1", "veth", "on-br-1", True),
        },
        namespaces=frozenset({NS}),
        taps=frozenset({"on-tap-1"}),
        container_links={NS: frozenset({"lo", "eth0"})},
    )


def test_nothing_to_do_when_the_kernel_matches() -> None:
    assert diff(desired(), matching()).empty


def test_an_empty_kernel_gets_everything_built() -> None:
    ch = diff(desired(), Observed())
    assert ch.ensure_bridges == (BR,)
    assert ch.attach_taps == (TAP,)
    assert ch.add_namespaces == (NS,)
    assert ch.build_endpoints == (PLAN,)
    assert ch.remove_links == () and ch.remove_namespaces == ()


def test_strays_of_ours_are_removed() -> None:
    seen = matching()
    links = dict(seen.links)
    links["on-br-old"] = ObservedLink("on-br-old", "bridge", None, True)
    stray_ns = "onet-l-h-bbbbbbbbbbbb"
    ch = diff(
        desired(),
        Observed(
            links, seen.namespaces | {stray_ns}, seen.taps | {"on-tap-old"}, seen.container_links
        ),
    )
    assert ch.remove_links == ("on-br-old",)
    assert ch.remove_namespaces == (stray_ns,)
    assert ch.detach_taps == ("on-tap-old",)
    assert not ch.build_endpoints and not ch.ensure_bridges


def test_a_bridge_that_lost_its_address_or_went_down_is_repaired() -> None:
    seen = matching()
    for broken in (
        ObservedLink("on-br-1", "bridge", None, True),
        ObservedLink("on-br-1", "bridge", None, False, frozenset({ADDR})),
        ObservedLink("on-br-1", "veth", None, True, frozenset({ADDR})),
    ):
        links = {**seen.links, "on-br-1": broken}
        ch = diff(desired(), Observed(links, seen.namespaces, seen.taps, seen.container_links))
        assert ch.ensure_bridges == (BR,)


def test_an_endpoint_whose_container_end_is_gone_is_rebuilt_whole() -> None:
    seen = matching()
    ch = diff(desired(), Observed(seen.links, seen.namespaces, seen.taps, {NS: frozenset({"lo"})}))
    assert ch.remove_links == ("on-ve1",) and ch.build_endpoints == (PLAN,)


def test_an_endpoint_off_its_bridge_is_rebuilt() -> None:
    seen = matching()
    links = {**seen.links, "on-ve1": ObservedLink("on-ve1", "veth", None, True)}
    ch = diff(desired(), Observed(links, seen.namespaces, seen.taps, seen.container_links))
    assert ch.build_endpoints == (PLAN,)


def test_a_namespace_not_probed_is_trusted() -> None:
    seen = matching()
    ch = diff(desired(), Observed(seen.links, seen.namespaces, seen.taps, {}))
    assert ch.empty


def test_a_tap_the_vtep_no_longer_serves_is_attached_again() -> None:
    seen = matching()
    ch = diff(desired(), Observed(seen.links, seen.namespaces, frozenset(), seen.container_links))
    assert ch.attach_taps == (TAP,)


def test_an_overlay_left_with_no_container_goes_with_its_bridge_and_tap() -> None:
    # Issue 18: after a kill -9 during `run` the host kept the bridge and the TAP.
    ch = diff(Picture(), matching())
    assert set(ch.remove_links) == {"on-br-1", "on-tap-1", "on-ve1"}
    assert ch.detach_taps == ("on-tap-1",)
    assert ch.remove_namespaces == (NS,)


def _after(desired: Picture, seen: Observed) -> Observed:
    """What a kernel that carries out `diff` faithfully holds afterwards."""
    ch = diff(desired, seen)
    links = {k: v for k, v in seen.links.items() if k not in ch.remove_links}
    for b in ch.ensure_bridges:
        addrs = frozenset({b.address}) if b.address else frozenset()
        links[b.ifname] = ObservedLink(b.ifname, "bridge", None, True, addrs)
    taps = (seen.taps - set(ch.detach_taps)) | {t.ifname for t in ch.attach_taps}
    for t in ch.attach_taps:
        links[t.ifname] = ObservedLink(t.ifname, "tun", t.bridge, True)
    for name in ch.detach_taps:
        links.pop(name, None)
    spaces = (seen.namespaces - set(ch.remove_namespaces)) | set(ch.add_namespaces)
    inside = {ns: v for ns, v in seen.container_links.items() if ns in spaces}
    for p in ch.build_endpoints:
        links[p.host_ifname] = ObservedLink(p.host_ifname, "veth", p.bridge, True)
        inside[p.container_netns] = inside.get(p.container_netns, frozenset()) | {p.ifname}
    return Observed(links, spaces, taps, inside)


link_names = st.sampled_from(["on-br-1", "on-tap-1", "on-ve1", "on-br-x", "on-vex"])
observed_links = st.dictionaries(
    link_names,
    st.tuples(
        st.sampled_from(["bridge", "veth", "tun"]),
        st.sampled_from([None, "on-br-1"]),
        st.booleans(),
        st.booleans(),
    ),
)


@given(
    observed_links,
    st.sets(st.sampled_from([NS, "onet-l-h-cccccccccccc"])),
    st.sets(st.sampled_from(["on-tap-1", "on-tap-9"])),
    st.booleans(),
    st.booleans(),
)
def test_applying_the_diff_once_leaves_nothing_to_do(
    raw: dict[str, tuple[str, str | None, bool, bool]],
    spaces: set[str],
    taps: set[str],
    want_everything: bool,
    probed: bool,
) -> None:
    links = {
        name: ObservedLink(name, kind, master, up, frozenset({ADDR}) if has_addr else frozenset())
        for name, (kind, master, up, has_addr) in raw.items()
    }
    inside = {NS: frozenset({"eth0"})} if probed and NS in spaces else {}
    seen = Observed(links, frozenset(spaces), frozenset(taps), inside)
    want = desired() if want_everything else Picture()
    assert diff(want, _after(want, seen)).empty
