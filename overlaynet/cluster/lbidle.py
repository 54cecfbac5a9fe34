"""How long an idle connection through a service VIP lives: `network create -d overlay --opt
lb-idle-timeout=SECONDS` (moby#31208: Docker's IPVS drops idle connections after 900 s).

A VIP's connections are conntrack entries in the network's load-balancer namespace on each
node (lb_<net>); an idle established TCP connection lives there for that namespace's
nf_conntrack_tcp_timeout_established. The setting is per namespace, which is per network and
node, so it is a network option, not a service's (two services on one network share the
namespace). Left unset, the kernel's own default stays: 432000 s, 5 days, so an idle
connection survives anything short of that.

In a swarm the option travels to the managers as a network label (their network record keeps
labels, replicated and persisted) and back to every node with its load-balancer endpoint
(`task.assigned`'s `lb`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

LB_IDLE_OPTION = "lb-idle-timeout"
# Namespaced as Docker's own labels are, so no user label collides.
LB_IDLE_LABEL = "com.overlaynet.lb-idle-timeout"
# The kernel's default for nf_conntrack_tcp_timeout_established (5 days).
LINUX_DEFAULT = 432_000
# The sysctl holds jiffies in an int: seconds x HZ must stay under 2^31 for any HZ up to 1000.
MAX_SECONDS = 2_147_483
SYSCTL = "net/netfilter/nf_conntrack_tcp_timeout_established"


class BadIdleTimeout(ValueError):
    """The option's value is no usable timeout; the message says what is."""


def parse(value: str) -> int:
    """Whole seconds, 1 to MAX_SECONDS."""
    try:
        seconds = int(value)
    except ValueError:
        raise BadIdleTimeout(
            f"--opt {LB_IDLE_OPTION}={value!r}: give whole seconds (e.g. 3600)"
        ) from None
    if not 1 <= seconds <= MAX_SECONDS:
        raise BadIdleTimeout(
            f"--opt {LB_IDLE_OPTION}={seconds}: between 1 and {MAX_SECONDS} seconds"
        )
    return seconds


def fold_into_labels(options: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, str]:
    """The network's labels for the managers, with the option's value (validated) among them."""
    out = dict(labels)
    if LB_IDLE_OPTION in options:
        out[LB_IDLE_LABEL] = str(parse(options[LB_IDLE_OPTION]))
    return out


def from_labels(labels: Mapping[str, str]) -> int | None:
    """The network's idle timeout (None: not set, or unreadable: the kernel's default stays)."""
    raw = labels.get(LB_IDLE_LABEL)
    if raw is None:
        return None
    try:
        return parse(raw)
    except BadIdleTimeout:
        return None
