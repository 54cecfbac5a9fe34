"""A free UDP port for a test VTEP's VXLAN port on loopback, never one inside the range its own
sending sockets bind (`vxlan.SOURCE_PORT_MIN`..`SOURCE_PORT_MAX`, on the same address): an
ephemeral port from there collided with the VTEP's own source sockets ("Address already in use",
about once in 3,000 hypothesis examples)."""

from __future__ import annotations

import socket
from contextlib import ExitStack

from overlaynet.wire import vxlan

#: Probes before giving up: each has about an even chance with Linux's default ephemeral range.
TRIES = 64


def free_port() -> int:
    """A UDP port free on 127.0.0.1 at the time of the call, below the VTEPs' source range."""
    with ExitStack() as stack:  # the probes stay bound until a port is found: no repeats
        for _ in range(TRIES):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            if port < vxlan.SOURCE_PORT_MIN:
                return port
    raise OSError(f"no free UDP port below {vxlan.SOURCE_PORT_MIN} in {TRIES} tries")
