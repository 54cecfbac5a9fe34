"""IPAM: subnets from Docker's pools, addresses within a subnet, clear errors when exhausted."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.cluster import ipam


def test_first_user_bridge_is_172_18() -> None:
    assert ipam.allocate_subnet(ipam.BRIDGE_POOLS, [ipam.DEFAULT_BRIDGE_SUBNET]) == IPv4Network(
        "172.18.0.0/16"
    )


def test_allocation_skips_subnets_in_use_and_overlapping_host_routes() -> None:
    used = [IPv4Network("172.18.0.0/16"), IPv4Network("172.19.5.0/24")]
    assert ipam.allocate_subnet(ipam.BRIDGE_POOLS, used) == IPv4Network("172.20.0.0/16")


def test_after_172_31_bridges_come_from_192_168_in_slash_20s_avoiding_the_underlay() -> None:
    used = [IPv4Network(f"172.{i}.0.0/16") for i in range(18, 32)] + [IPv4Network("192.168.0.0/24")]
    assert ipam.allocate_subnet(ipam.BRIDGE_POOLS, used) == IPv4Network("192.168.16.0/20")


def test_exhausted_pools_say_what_to_do() -> None:
    with pytest.raises(ipam.IpamError, match="pass --subnet"):
        ipam.allocate_subnet([(IPv4Network("10.0.0.0/23"), 24)], [IPv4Network("10.0.0.0/23")])


def test_overlays_get_slash_24s_from_10_0_0_0() -> None:
    assert ipam.allocate_subnet(ipam.OVERLAY_POOLS, []) == IPv4Network("10.0.0.0/24")
    assert ipam.allocate_subnet(ipam.OVERLAY_POOLS, [IPv4Network("10.0.0.0/24")]) == IPv4Network(
        "10.0.1.0/24"
    )


def test_requested_subnet_overlap_names_the_owner() -> None:
    with pytest.raises(ipam.IpamError, match="overlaps with network a"):
        ipam.check_subnet_free(
            IPv4Network("172.18.1.0/24"), [("network a", IPv4Network("172.18.0.0/16"))]
        )


@pytest.mark.parametrize("text", ["nonsense", "10.0.0.1/24", "10.0.0.0/31"])
def test_bad_subnets_are_refused(text: str) -> None:
    with pytest.raises(ipam.IpamError):
        ipam.parse_subnet(text)


def test_gateway_defaults_to_first_address_and_must_be_inside() -> None:
    net = IPv4Network("10.5.0.0/24")
    assert ipam.make_config(net).gateway == IPv4Address("10.5.0.1")
    assert ipam.make_config(net, "10.5.0.254").gateway == IPv4Address("10.5.0.254")
    for bad in ("10.6.0.1", "10.5.0.0", "10.5.0.255", "x"):
        with pytest.raises(ipam.IpamError):
            ipam.make_config(net, bad)


def test_addresses_are_lowest_free_skipping_gateway() -> None:
    cfg = ipam.make_config(IPv4Network("10.5.0.0/24"))
    assert ipam.allocate_address(cfg, []) == IPv4Address("10.5.0.2")
    taken = [IPv4Address("10.5.0.2"), IPv4Address("10.5.0.4")]
    assert ipam.allocate_address(cfg, taken) == IPv4Address("10.5.0.3")


def test_requested_address_must_be_free_and_usable() -> None:
    cfg = ipam.make_config(IPv4Network("10.5.0.0/24"))
    assert ipam.allocate_address(cfg, [], "10.5.0.77") == IPv4Address("10.5.0.77")
    with pytest.raises(ipam.IpamError, match="already in use"):
        ipam.allocate_address(cfg, [IPv4Address("10.5.0.77")], "10.5.0.77")
    with pytest.raises(ipam.IpamError, match="already in use"):
        ipam.allocate_address(cfg, [], "10.5.0.1")
    with pytest.raises(ipam.IpamError, match="not a usable address"):
        ipam.allocate_address(cfg, [], "10.5.0.255")


def test_exhausted_subnet() -> None:
    cfg = ipam.make_config(IPv4Network("10.5.0.0/30"))
    first = ipam.allocate_address(cfg, [])
    with pytest.raises(ipam.IpamError, match="no addresses left"):
        ipam.allocate_address(cfg, [first])


def test_mac_is_docker_style_from_the_ip() -> None:
    assert ipam.mac_for(IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"


@given(st.lists(st.integers(min_value=0, max_value=255), max_size=40))
def test_allocated_subnet_never_overlaps_what_is_used(third_octets: list[int]) -> None:
    used = [IPv4Network(f"172.{18 + o % 14}.{o}.0/24") for o in third_octets]
    got = ipam.allocate_subnet(ipam.BRIDGE_POOLS, used)
    assert not any(got.overlaps(u) for u in used)


@given(st.sets(st.integers(min_value=2, max_value=14), max_size=12))
def test_allocated_address_is_never_taken_or_the_gateway(taken_hosts: set[int]) -> None:
    cfg = ipam.make_config(IPv4Network("10.9.0.0/28"))
    taken = [IPv4Address(f"10.9.0.{h}") for h in taken_hosts]
    got = ipam.allocate_address(cfg, taken)
    assert got not in taken and got != cfg.gateway and got in cfg.subnet
