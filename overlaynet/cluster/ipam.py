"""IP address management: subnets for networks and addresses for endpoints (sans-IO).

Stateless on purpose: the caller passes what is taken (read from its store), so there is no
second copy of the allocations to drift out of step after a crash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from overlaynet.wire.ethernet import mac_to_str

# Docker's defaults (daemon/config default-address-pools and the default bridge docker0).
DEFAULT_BRIDGE_SUBNET = IPv4Network("172.17.0.0/16")
# User-defined bridges: 172.18.0.0/16 … 172.31.0.0/16, then 192.168.0.0/16 cut into /20s.
BRIDGE_POOLS: tuple[tuple[IPv4Network, int], ...] = (
    (IPv4Network("172.18.0.0/15"), 16),
    (IPv4Network("172.20.0.0/14"), 16),
    (IPv4Network("172.24.0.0/13"), 16),
    (IPv4Network("192.168.0.0/16"), 20),
)
# Docker's container MACs: 02:42 (locally administered, unicast), then the IPv4 address.
DOCKER_MAC_PREFIX = b"\x02\x42"
# Swarm overlays: 10.0.0.0/8 cut into /24s (Docker's default-addr-pool for swarm).
OVERLAY_POOLS: tuple[tuple[IPv4Network, int], ...] = ((IPv4Network("10.0.0.0/8"), 24),)


class IpamError(ValueError):
    """An address request that cannot be met; the message says why and what to do."""


@dataclass(frozen=True)
class IpamConfig:
    subnet: IPv4Network
    gateway: IPv4Address
    # Docker's --ip-range: dynamic addresses come from this part of the subnet only.
    ip_range: IPv4Network | None = None


def _candidates(pools: Iterable[tuple[IPv4Network, int]]) -> Iterator[IPv4Network]:
    for pool, prefixlen in pools:
        yield from pool.subnets(new_prefix=prefixlen)


def allocate_subnet(
    pools: Iterable[tuple[IPv4Network, int]], used: Iterable[IPv4Network]
) -> IPv4Network:
    """The first subnet from the pools that overlaps none in use (networks and host routes)."""
    taken = list(used)
    for candidate in _candidates(pools):
        if not any(candidate.overlaps(u) for u in taken):
            return candidate
    raise IpamError(
        "all predefined address pools have been fully subnetted: remove unused networks "
        "or pass --subnet"
    )


def parse_subnet(text: str) -> IPv4Network:
    try:
        net = IPv4Network(text, strict=True)
    except ValueError as e:
        raise IpamError(f"invalid subnet {text!r}: {e}") from None
    if net.prefixlen > 30:
        raise IpamError(f"subnet {text} is too small: use a prefix of /30 or shorter")
    return net


def check_subnet_free(subnet: IPv4Network, used: Iterable[tuple[str, IPv4Network]]) -> None:
    """Refuse a requested subnet that overlaps one in use, naming the owner."""
    for owner, other in used:
        if subnet.overlaps(other):
            raise IpamError(f"invalid pool request: pool {subnet} overlaps with {owner} ({other})")


def make_config(subnet: IPv4Network, gateway: str | None = None) -> IpamConfig:
    """The subnet with its gateway: the one asked for, or the first usable address."""
    if gateway is None:
        return IpamConfig(subnet, next(subnet.hosts()))
    try:
        gw = IPv4Address(gateway)
    except ValueError:
        raise IpamError(f"invalid gateway {gateway!r}: expected an IPv4 address") from None
    if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
        raise IpamError(f"gateway {gw} is not a usable address of subnet {subnet}")
    return IpamConfig(subnet, gw)


def allocate_address(
    config: IpamConfig, taken: Iterable[IPv4Address], requested: str | None = None
) -> IPv4Address:
    """An address for an endpoint: the one requested if free, else the lowest free one."""
    busy = set(taken) | {config.gateway}
    if requested is not None:
        try:
            ip = IPv4Address(requested)
        except ValueError:
            raise IpamError(f"invalid IP address {requested!r}") from None
        net = config.subnet
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            raise IpamError(f"address {ip} is not a usable address of subnet {net}")
        if ip in busy:
            raise IpamError(f"address {ip} is already in use on this network")
        return ip
    pool = config.ip_range or config.subnet
    reserved = (config.subnet.network_address, config.subnet.broadcast_address)
    for ip in pool:
        if ip not in busy and ip not in reserved:
            return ip
    raise IpamError(f"no addresses left in {pool}: remove containers or use a larger subnet")


def parse_ip_range(text: str, subnet: IPv4Network) -> IPv4Network:
    try:
        rng = IPv4Network(text, strict=True)
    except ValueError as e:
        raise IpamError(f"invalid ip range {text!r}: {e}") from None
    if not rng.subnet_of(subnet):
        raise IpamError(f"ip range {rng} is not inside subnet {subnet}")
    return rng


def mac_for(ip: IPv4Address) -> str:
    """Docker's scheme: 02:42 followed by the IPv4 address (locally administered, unicast)."""
    return mac_to_str(DOCKER_MAC_PREFIX + ipaddress.v4_int_to_packed(int(ip)))
