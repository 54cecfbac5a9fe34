"""Lab hosts' underlay addresses: the tutorial's 192.168.0.0/24 from .11 while it holds the lab,
a /23 (still numbered from 192.168.0.11) for a larger one."""

from __future__ import annotations

from ipaddress import IPv4Interface

from overlaynet.lab.lifecycle import HOSTS_IN_NARROW, MAX_HOSTS, LabHost, underlay_prefixlen


def test_the_tutorials_hosts_keep_their_addresses() -> None:
    assert [LabHost.numbered(n).ip for n in (1, 2, 3)] == [
        "192.168.0.11",
        "192.168.0.12",
        "192.168.0.13",
    ]
    assert underlay_prefixlen(3) == 24


def test_a_lab_the_slash_24_holds_stays_on_it() -> None:
    assert HOSTS_IN_NARROW == 244
    assert LabHost.numbered(244).ip == "192.168.0.254"
    assert underlay_prefixlen(244) == 24


def test_a_larger_lab_is_on_a_slash_23_with_every_address_usable_and_distinct() -> None:
    n = MAX_HOSTS
    assert n >= 250 and underlay_prefixlen(n) == 23
    ips = [LabHost.numbered(i).ip for i in range(1, n + 1)]
    assert len(set(ips)) == n and LabHost.numbered(245).ip == "192.168.0.255"
    for ip in ips:
        iface = IPv4Interface(f"{ip}/23")
        assert str(iface.network) == "192.168.0.0/23"
        assert iface.ip not in (iface.network.network_address, iface.network.broadcast_address)
