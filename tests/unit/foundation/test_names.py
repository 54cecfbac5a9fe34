"""Names users give and names the kernel objects get."""

from __future__ import annotations

import pytest

from overlaynet import names


@pytest.mark.parametrize("good", ["alpine1", "my-net", "a.b_c", "X9"])
def test_docker_style_names_are_accepted(good: str) -> None:
    assert names.check_object_name(good, "network") == good


@pytest.mark.parametrize("bad", ["", "-lead", "has space", "slash/x", "é", "x" * 65])
def test_bad_object_names_are_refused(bad: str) -> None:
    with pytest.raises(names.BadName):
        names.check_object_name(bad, "network")


def test_interface_names_must_fit_ifnamsiz_and_carry_the_prefix() -> None:
    assert names.check_ifname("on-br-custom") == "on-br-custom"
    with pytest.raises(names.BadName, match="too long"):
        names.check_ifname("on-" + "x" * 13)
    with pytest.raises(names.BadName, match="must start with"):
        names.check_ifname("br-custom")
    with pytest.raises(names.BadName, match="invalid interface name"):
        names.check_ifname("on-a/b")


@pytest.mark.parametrize("bad", ["", "Upper", "with-dash", "1lead", "a" * 13])
def test_lab_names_keep_namespace_prefixes_unambiguous(bad: str) -> None:
    with pytest.raises(names.BadName):
        names.check_lab_name(bad)


def test_kernel_names_fit_and_are_prefixed() -> None:
    nid = names.new_id()
    for ifname in (
        names.KernelNames.bridge(nid),
        names.KernelNames.tap(nid),
        names.KernelNames.veth_host(nid),
        names.KernelNames.veth_temp(nid),
    ):
        assert ifname.startswith(names.LINK_PREFIX) and len(ifname) <= names.IFNAME_MAX


def test_container_namespaces_are_recognised_by_prefix_and_shape() -> None:
    kn = names.KernelNames("onet-lab1-node1-")
    cid = names.new_id()
    ns = kn.container_netns(cid)
    assert ns == f"onet-lab1-node1-{cid[:12]}"
    assert kn.is_container_netns(ns)
    assert not kn.is_container_netns("onet-lab1-node1")
    assert not names.KernelNames("onet-lab1-node2-").is_container_netns(ns)


def test_lab_of_namespace() -> None:
    assert names.lab_of_namespace("onet-demo-node1-0123456789ab") == "demo"
    assert names.lab_of_namespace("onet-demo-ul") == "demo"
    assert names.lab_of_namespace("other") is None
