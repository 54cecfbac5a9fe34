"""Links, addresses and routes through pyroute2: bridges, veth pairs and their set-up.

Every function takes `netns=None` (the agent's own namespace) or a namespace name. Functions
that build several objects undo what they built when a later step fails, so a refused request
leaves no half-made kernel object behind.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from overlaynet.host.nssocket import run_in_netns
from overlaynet.host.picture import VethPlan

__all__ = ["VethPlan"]  # its home is the pure picture; re-exported for the plumbing's callers

# Linux errno values that mean "already there" / "not there" (include/uapi/asm-generic/errno).
EEXIST = 17
ENODEV = 19
# The administrative "up" flag of a link (include/uapi/linux/if.h).
IFF_UP = 0x1


class LinkError(RuntimeError):
    """A kernel request that failed; the message names the object and the kernel's reason."""


#: linux/netlink.h: the routing family (links, addresses, routes, neighbours).
NETLINK_ROUTE = 0


def rtnl_socket_in(netns: str) -> socket.socket:
    """A routing netlink socket opened inside `netns`, by a thread that enters it.

    Not pyroute2's `NetNS`/`IPRoute(netns=…)`: those fork the calling process to open the
    socket, and a fork of the multi-threaded agent can hang in the child (a lock another thread
    held at the fork) while the child holds a copy of every descriptor, the API's listening
    socket included; an agent killed then leaves an orphan that accepts on its socket and
    never answers, and no new agent can start.
    """
    return run_in_netns(
        netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    )


@contextmanager
def ipr(netns: str | None = None) -> Iterator[Any]:
    sock: Any = IPRoute() if netns is None else IPRoute(fileno=rtnl_socket_in(netns).detach())
    try:
        yield sock
    finally:
        sock.close()


def index_of(sock: Any, ifname: str) -> int | None:
    found = sock.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _require(sock: Any, ifname: str) -> int:
    idx = index_of(sock, ifname)
    if idx is None:
        raise LinkError(f"link {ifname} does not exist")
    return idx


def set_up(ifname: str, netns: str | None = None) -> None:
    with ipr(netns) as sock:
        sock.link("set", index=_require(sock, ifname), state="up")


def exists(ifname: str, netns: str | None = None) -> bool:
    with ipr(netns) as sock:
        return index_of(sock, ifname) is not None


@dataclass(frozen=True)
class LinkInfo:
    ifname: str
    index: int
    kind: str
    master: int | None
    state: str
    mtu: int
    mac: str
    up: bool = False


def dump(netns: str | None = None) -> list[LinkInfo]:
    with ipr(netns) as sock:
        out = []
        for msg in sock.link("dump"):
            info = msg.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            out.append(
                LinkInfo(
                    ifname=msg.get("IFLA_IFNAME"),
                    index=msg["index"],
                    kind=kind or "",
                    master=msg.get("IFLA_MASTER"),
                    state=msg.get("IFLA_OPERSTATE", ""),
                    mtu=msg.get("IFLA_MTU", 0),
                    mac=msg.get("IFLA_ADDRESS", ""),
                    up=bool(msg.get("flags", 0) & IFF_UP),
                )
            )
        return out


def addresses(netns: str | None = None) -> list[tuple[str, IPv4Interface]]:
    """(ifname, address/prefix) for every IPv4 address."""
    with ipr(netns) as sock:
        names = {m["index"]: m.get("IFLA_IFNAME") for m in sock.link("dump")}
        return [
            (names.get(a["index"], "?"), IPv4Interface(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"))
            for a in sock.addr("dump", family=2)
        ]


def routes(netns: str | None = None) -> list[dict[str, str]]:
    """IPv4 main-table routes as {dst, gateway, dev} (what `ip route` shows)."""
    with ipr(netns) as sock:
        names = {m["index"]: m.get("IFLA_IFNAME") for m in sock.link("dump")}
        out = []
        for r in sock.route("dump", family=2, table=254):
            dst = r.get("RTA_DST")
            out.append(
                {
                    "dst": f"{dst}/{r['dst_len']}" if dst else "default",
                    "gateway": r.get("RTA_GATEWAY") or "",
                    "dev": names.get(r.get("RTA_OIF"), "?") or "?",
                }
            )
        return out


def delete(ifname: str, netns: str | None = None) -> None:
    """Remove a link if it exists (idempotent)."""
    with ipr(netns) as sock:
        idx = index_of(sock, ifname)
        if idx is None:
            return
        try:
            sock.link("del", index=idx)
        except NetlinkError as e:
            if e.code != ENODEV:
                raise LinkError(f"cannot remove {ifname}: {e}") from e


def ensure_bridge(ifname: str, address: IPv4Interface | None, mtu: int) -> None:
    """A bridge with its gateway address, up; repaired in place if it exists already."""
    with ipr() as sock:
        created = False
        idx = index_of(sock, ifname)
        try:
            if idx is None:
                sock.link("add", ifname=ifname, kind="bridge", mtu=mtu)
                created = True
                idx = _require(sock, ifname)
            if address is not None:
                have = {
                    (a.get("IFA_ADDRESS"), a["prefixlen"])
                    for a in sock.addr("dump", family=2, index=idx)
                }
                if (str(address.ip), address.network.prefixlen) not in have:
                    sock.addr(
                        "add",
                        index=idx,
                        address=str(address.ip),
                        prefixlen=address.network.prefixlen,
                    )
            sock.link("set", index=idx, state="up")
        except NetlinkError as e:
            if created:
                sock.link("del", index=idx)
            raise LinkError(f"cannot set up bridge {ifname}: {e}") from e
    disable_ipv6(ifname)
    # Containers on different bridges must not reach each other (Docker's isolation rule).
    # Refusing to forward what arrives on a bridge does that without touching global sysctls.
    set_ipv4_conf(ifname, "forwarding", 0)


def set_ipv4_conf(ifname: str, key: str, value: int) -> None:
    with open(f"/proc/sys/net/ipv4/conf/{ifname}/{key}", "w") as f:
        f.write(str(value))


def disable_ipv6(ifname: str) -> None:
    """No IPv6 on a link of ours (Docker's default): no router solicitations or MLD reports
    from it, so what crosses the overlay is what the containers send."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass  # IPv6 not compiled in or the link is gone: nothing to silence


def create_endpoint(plan: VethPlan) -> None:
    """Build the veth pair, attach it, move one end in, address it, route through the gateway."""
    with ipr() as sock:
        bridge_idx = _require(sock, plan.bridge)
        try:
            sock.link(
                "add",
                ifname=plan.host_ifname,
                kind="veth",
                mtu=plan.mtu,
                peer={"ifname": plan.temp_ifname, "mtu": plan.mtu},
            )
        except NetlinkError as e:
            raise LinkError(f"cannot create veth {plan.host_ifname}: {e}") from e
        try:
            host_idx = _require(sock, plan.host_ifname)
            disable_ipv6(plan.host_ifname)
            sock.link("set", index=host_idx, master=bridge_idx, state="up")
            sock.link("set", index=_require(sock, plan.temp_ifname), net_ns_fd=plan.container_netns)
            _configure_container_end(plan)
        except Exception as e:
            # Removing the host end removes its peer, wherever the peer is by now.
            delete(plan.host_ifname)
            if isinstance(e, NetlinkError):
                raise LinkError(f"cannot set up endpoint {plan.ifname}: {e}") from e
            raise


def _configure_container_end(plan: VethPlan) -> None:
    with ipr(plan.container_netns) as ns:
        idx = _require(ns, plan.temp_ifname)
        ns.link("set", index=idx, ifname=plan.ifname)
        if plan.mac:
            ns.link("set", index=idx, address=plan.mac)
        if plan.address is not None:
            ns.addr(
                "add",
                index=idx,
                address=str(plan.address.ip),
                prefixlen=plan.address.network.prefixlen,
            )
        ns.link("set", index=idx, state="up")
        if plan.gateway:
            ns.route("add", dst="0.0.0.0/0", gateway=plan.gateway, oif=idx)


def endpoint_ok(plan: VethPlan) -> bool:
    """Whether the endpoint exists and is wired as planned (used by the restart reconciler)."""
    with ipr() as sock:
        host_idx = index_of(sock, plan.host_ifname)
        bridge_idx = index_of(sock, plan.bridge)
        if host_idx is None or bridge_idx is None:
            return False
        if sock.link("get", index=host_idx)[0].get("IFLA_MASTER") != bridge_idx:
            return False
    with ipr(plan.container_netns) as ns:
        return index_of(ns, plan.ifname) is not None
