"""The data plane's one error type: a frame or datagram the codecs refuse.

Shells catch `MalformedFrame`, count it under its `reason` and drop the input; it never escapes a
hot loop. Reasons are short stable strings so they can be counter names.
"""

from __future__ import annotations


class MalformedFrame(ValueError):
    """An Ethernet frame, ARP packet or VXLAN datagram that cannot be decoded as required."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        #: Counter key, e.g. "vxlan_short" or "arp_bad_hardware".
        self.reason = reason
