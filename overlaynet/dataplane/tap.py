"""TAP devices: open one by name (TUNSETIFF) and set the link properties the VTEP relies on.

The TAP lives in the host namespace and is non-persistent: it disappears when its last file
descriptor closes, so a crashed agent leaves no TAP behind. Attaching it to the network's bridge
is the caller's job (pyroute2), like any other bridge port.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

#: From <linux/if_tun.h>: _IOW('T', 202, int) and the flags for an Ethernet-level device without
#: the 4-octet packet-information prefix.
TUNSETIFF = 0x400454CA
#: _IOR('T', 210, unsigned int): the flags (and name) of the device an fd is attached to.
TUNGETIFF = 0x800454D2
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
#: _IOW('T', 208, unsigned int) and its flags: which offloads the TAP may hand to its reader
#: (offload mode, `set_offloads`).
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
#: From <linux/sockios.h>.
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
SIOCSIFTXQLEN = 0x8943
IFF_UP = 0x1
#: Linux IFNAMSIZ is 16 including the terminating NUL.
IFNAMSIZ = 16
#: txqueuelen 1000 dropped frames under load; 5000 removed the drops (FASTPATH.md, "Traps").
DEFAULT_TXQUEUELEN = 5000
_TUN_PATH = "/dev/net/tun"


def _ifreq(name: str, value: int = 0) -> bytes:
    """A struct ifreq: the name, then an int-sized union member, padded to 40 octets."""
    encoded = name.encode()
    if not encoded or len(encoded) >= IFNAMSIZ:
        raise ValueError(f"interface name must be 1..{IFNAMSIZ - 1} octets: {name!r}")
    return struct.pack(f"{IFNAMSIZ}si20x", encoded, value)


def _ifreq_short(name: str, value: int) -> bytes:
    """A struct ifreq whose union member is `short ifr_flags`."""
    return struct.pack(f"{IFNAMSIZ}sh22x", name.encode(), value)


def open_tap(
    name: str,
    *,
    mtu: int | None = None,
    txqueuelen: int = DEFAULT_TXQUEUELEN,
    vnet_hdr: bool = False,
    up: bool = True,
) -> int:
    """Create (or attach to) TAP `name`, return its non-blocking file descriptor.

    IFF_NO_PI: reads and writes are bare Ethernet frames, after a 10-octet virtio-net header
    with `vnet_hdr` (IFF_VNET_HDR). No offloads are ever enabled (no TUNSETOFFLOAD), so the
    kernel finishes checksums and segments before the TAP: every frame read is wire-ready and
    its header all zeros. The header matters on writes: it lets the VTEP hand the kernel one
    TCP super-frame instead of many frames (`offload.vnet_header`).
    The caller owns the fd; closing it removes the device.
    """
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    fd = os.open(_TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack(f"{IFNAMSIZ}sH22x", name.encode(), flags))
        set_link(name, mtu=mtu, txqueuelen=txqueuelen, up=up)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_tap_queues(
    name: str,
    queues: int,
    *,
    mtu: int | None = None,
    txqueuelen: int = DEFAULT_TXQUEUELEN,
    vnet_hdr: bool = False,
    offload: bool = False,
) -> list[int]:
    """Create TAP `name` with `queues` queues (IFF_MULTI_QUEUE), one non-blocking fd each.

    The kernel puts each outgoing frame on one queue by flow: on the queue where the VTEP last
    wrote a frame of the same flow (either direction: tun's flow table uses a symmetric hash),
    else on one picked by the flow's hash. So what the VTEP writes decides which flows share a
    queue (`hotpath`). The device goes away with the last fd; the caller owns them all."""
    if queues < 1:
        raise ValueError("a TAP has at least one queue")
    flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | (IFF_VNET_HDR if vnet_hdr else 0)
    request = struct.pack(f"{IFNAMSIZ}sH22x", name.encode(), flags)
    fds: list[int] = []
    try:
        for _ in range(queues):
            fd = os.open(_TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fds.append(fd)
            fcntl.ioctl(fd, TUNSETIFF, request)
        if offload:
            set_offloads(fds[0])  # a device's features: one call for every queue
        set_link(name, mtu=mtu, txqueuelen=txqueuelen, up=True)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def set_offloads(fd: int, *, tso: bool = True, csum: bool = True) -> None:
    """Let the TAP hand over frames with partial checksums and (with `tso`) TCP/IPv4
    super-frames of up to 64 KB, each described by its virtio-net header (the fd needs
    IFF_VNET_HDR): offload mode, where the kernel no longer segments and checksums before
    the TAP (`segment` does it for the peers that need it). TSO6 stays off: the overlay's
    TAPs carry no IPv6 (links.disable_ipv6), so the kernel keeps segmenting IPv6 itself.
    `csum=False` (and no `tso`) turns every offload off again: the kernel finishes each frame
    before the TAP, as for a TAP opened without offloads. Changeable at any time on an open fd."""
    flags = (TUN_F_CSUM if csum or tso else 0) | (TUN_F_TSO4 if tso else 0)
    fcntl.ioctl(fd, TUNSETOFFLOAD, flags)


def set_link(
    name: str, *, mtu: int | None = None, txqueuelen: int | None = None, up: bool = False
) -> None:
    """Set MTU, transmit queue length and the UP flag of a link in the current namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
        if mtu is not None:
            fcntl.ioctl(ctl, SIOCSIFMTU, _ifreq(name, mtu))
        if txqueuelen is not None:
            fcntl.ioctl(ctl, SIOCSIFTXQLEN, _ifreq(name, txqueuelen))
        if up:
            current = fcntl.ioctl(ctl, SIOCGIFFLAGS, _ifreq(name))
            (flags,) = struct.unpack_from("h", current, IFNAMSIZ)
            fcntl.ioctl(ctl, SIOCSIFFLAGS, _ifreq_short(name, flags | IFF_UP))


def has_vnet_hdr(fd: int) -> bool:
    """Whether `fd` is a TAP opened with IFF_VNET_HDR (False for anything else, e.g. a socket
    standing in for a TAP in tests)."""
    try:
        ifreq = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    except OSError:
        return False
    (flags,) = struct.unpack_from("H", ifreq, IFNAMSIZ)
    return bool(flags & IFF_VNET_HDR)
