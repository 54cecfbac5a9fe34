"""Names and identifiers: what users may call things, and what the kernel objects are called.

Every namespace the project creates is `onet-…`; every link it creates in a namespace it does not
own starts with `on-` (DESIGN.md), so cleanup can find exactly its own objects by prefix.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

NAMESPACE_PREFIX = "onet-"
LINK_PREFIX = "on-"

# Linux IFNAMSIZ is 16 including the NUL byte (include/uapi/linux/if.h).
IFNAME_MAX = 15

# Docker's rule for container and network names (daemon/names: RestrictedNamePattern).
_OBJECT_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# Docker does not cap names; 64 keeps `ls` tables readable (containers and aliases are held to
# DNS_NAME_MAX by `check_container_name`, so that they resolve).
OBJECT_NAME_MAX = 64
# Lab and host names become part of namespace names; no dashes, so `onet-<lab>-` is unambiguous.
_LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_IFNAME = re.compile(r"^[a-zA-Z0-9_.-]+$")

# Docker shows 12 hex digits of a 64-digit id.
SHORT_ID_LEN = 12


class BadName(ValueError):
    """A user-supplied name that cannot be used; the message says what to do instead."""


def new_id() -> str:
    """A 64-hex-digit identifier, like Docker's (random, so it differs per host)."""
    return secrets.token_hex(32)


def short_id(full_id: str) -> str:
    return full_id[:SHORT_ID_LEN]


def check_object_name(name: str, what: str) -> str:
    """Validate a container or network name the way Docker does."""
    if not name:
        raise BadName(f"{what} name must not be empty")
    if len(name) > OBJECT_NAME_MAX:
        raise BadName(f"{what} name {name!r} is too long: at most {OBJECT_NAME_MAX} characters")
    if not _OBJECT_NAME.match(name):
        raise BadName(f"invalid {what} name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name


#: RFC 1035 §2.3.4: a DNS label is at most 63 octets. A container name or alias is looked up as
#: one label (`web`), so a longer one could be created but never resolved.
DNS_NAME_MAX = 63


def check_container_name(name: str, what: str = "container") -> str:
    """Validate a container name (or a network alias, `what="alias"`): Docker's rule, plus what
    the embedded DNS needs to resolve it.

    Dots stay allowed, as in Docker: `f3.ovf` can still be a container's name, and the resolver
    gives `f3.ovf` the network-qualified meaning (`f3` on network `ovf`) whenever that exists, so
    a dotted name can never shadow another container (`records.DnsTable.resolve`). What is
    refused is what could never resolve: more than 63 characters, an empty label (`a..b`), or a
    trailing dot (`a.`, which a lookup strips).
    """
    if len(name) > DNS_NAME_MAX:
        raise BadName(
            f"{what} name {name!r} is too long: at most {DNS_NAME_MAX} characters "
            "(a DNS label is at most 63 octets, RFC 1035)"
        )
    check_object_name(name, what)
    if ".." in name or name.endswith("."):
        raise BadName(
            f"invalid {what} name {name!r}: dots must separate non-empty parts, "
            "or the name cannot be looked up in DNS"
        )
    return name


def _check_label(name: str, pattern: re.Pattern[str], what: str, longest: int) -> str:
    if not pattern.match(name):
        raise BadName(
            f"invalid {what} name {name!r}: use 1-{longest} lowercase letters and digits, "
            "starting with a letter"
        )
    return name


def check_lab_name(name: str) -> str:
    return _check_label(name, _LAB_NAME, "lab", 12)


def check_host_name(name: str) -> str:
    return _check_label(name, _HOST_NAME, "host", 16)


def check_ifname(name: str) -> str:
    """Validate an interface name a user asked for (e.g. com.docker.network.bridge.name)."""
    if len(name) > IFNAME_MAX:
        raise BadName(
            f"interface name {name!r} is too long: Linux allows at most {IFNAME_MAX} characters"
        )
    if not name or not _IFNAME.match(name) or name in (".", ".."):
        raise BadName(f"invalid interface name {name!r}: use letters, digits, '_', '.', '-'")
    if not name.startswith(LINK_PREFIX):
        raise BadName(
            f"interface name {name!r} must start with {LINK_PREFIX!r} (overlaynet's links)"
        )
    return name


@dataclass(frozen=True)
class KernelNames:
    """How one host's agent names the kernel objects it creates.

    `ns_prefix` is `onet-<lab>-<host>-` in a lab and `onet-` on a real host, so that container
    namespaces of different lab hosts never collide.
    """

    ns_prefix: str

    def container_netns(self, container_id: str) -> str:
        return f"{self.ns_prefix}{short_id(container_id)}"

    def is_container_netns(self, netns: str) -> bool:
        rest = netns.removeprefix(self.ns_prefix)
        return rest != netns and re.fullmatch(r"[0-9a-f]{12}", rest) is not None

    @staticmethod
    def bridge(network_id: str) -> str:
        return f"{LINK_PREFIX}br-{network_id[:9]}"

    @staticmethod
    def tap(network_id: str) -> str:
        return f"{LINK_PREFIX}tap-{network_id[:8]}"

    @staticmethod
    def veth_host(endpoint_id: str) -> str:
        return f"{LINK_PREFIX}ve{endpoint_id[:10]}"

    @staticmethod
    def veth_temp(endpoint_id: str) -> str:
        """The container end's name until it is moved into the container and renamed ethN."""
        return f"{LINK_PREFIX}vc{endpoint_id[:10]}"


def lab_namespace(lab: str, part: str) -> str:
    """`onet-<lab>-<part>`: a lab host (`node1`) or the lab's underlay (`ul`)."""
    return f"{NAMESPACE_PREFIX}{lab}-{part}"


def lab_of_namespace(netns: str) -> str | None:
    """The lab a namespace belongs to, from its name (None when it is no lab's)."""
    m = re.match(r"^onet-([a-z][a-z0-9]{0,11})-", netns)
    return m.group(1) if m else None
