"""Tune every lab host's underlay port without a process per host: one thread enters each
host's network namespace in turn, writes the bridge-netfilter sysctls and turns on ethtool's
`rx-udp-gro-forwarding` with the SIOCETHTOOL ioctl (`ethtool -K` did it, one shell per host).

Why each setting (FASTPATH.md): bridged frames skip iptables (br_netfilter, when loaded, is on
by default in new namespaces and costs every bridged frame; a lab host has no firewall to
apply), and the underlay port aggregates forwarded UDP (without it a UDP_GRO socket gets one
datagram per read). Both are best-effort, as before: a kernel without them runs the lab slower.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import os
import socket
import struct
import threading

from overlaynet.host import netns as netns_mod

#: linux/sockios.h, linux/ethtool.h
SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_SFEATURES = 0x3B
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32
#: sizeof(struct ifreq): the kernel copies this much whatever the request.
IFREQ_SIZE = 40
GRO_FORWARDING = "rx-udp-gro-forwarding"
BRIDGE_NF_SYSCTLS = "/proc/sys/net/bridge/bridge-nf-call-*"
CLONE_NEWNET = netns_mod.CLONE_NEWNET

_libc = ctypes.CDLL(None, use_errno=True)


def tune_hosts(namespaces: list[str], ifname: str = "eth0") -> list[str]:
    """Tune `ifname` in each namespace; returns the namespaces where a setting failed."""
    failed: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            feature: int | None = None
            for ns in namespaces:
                # Each setting on its own: one the kernel refuses does not skip the other.
                try:
                    _enter(netns_mod.path(ns))
                except OSError:
                    failed.append(ns)
                    continue
                done = True
                try:
                    _bridge_skips_netfilter()
                except OSError:
                    done = False
                try:
                    if feature is None:
                        feature = feature_index(ifname)
                    set_feature(ifname, feature, on=True)
                except OSError:
                    done = False
                if not done:
                    failed.append(ns)
        except BaseException as exc:
            errors.append(exc)
        finally:
            # Hygiene only: this thread ends next, taking its namespace with it.
            _setns(own)
            os.close(own)

    thread = threading.Thread(target=work, name="lab-host-tune", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return failed


def _enter(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _bridge_skips_netfilter() -> None:
    # Present only when br_netfilter is loaded; /proc/sys/net is the calling thread's namespace.
    for path in glob.glob(BRIDGE_NF_SYSCTLS):
        with open(path, "w") as f:
            f.write("0")


def _ethtool(ifname: str, request: ctypes.Array[ctypes.c_char]) -> None:
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(request))
    ifreq = ifreq.ljust(IFREQ_SIZE, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)


def feature_index(ifname: str, name: str = GRO_FORWARDING) -> int:
    """The bit of `name` among the kernel's feature strings (the same for every device)."""
    info = ctypes.create_string_buffer(
        struct.pack("IIQI", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0)
    )
    _ethtool(ifname, info)
    count = struct.unpack_from("I", info, 16)[0]
    header = struct.pack("III", ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count)
    strings = ctypes.create_string_buffer(header + bytes(count * ETH_GSTRING_LEN))
    _ethtool(ifname, strings)
    for i in range(count):
        at = len(header) + i * ETH_GSTRING_LEN
        if strings.raw[at : at + ETH_GSTRING_LEN].split(b"\0", 1)[0].decode() == name:
            return i
    raise OSError(f"this kernel has no ethtool feature {name}")


def set_feature(ifname: str, index: int, on: bool) -> None:
    """`ethtool -K IFNAME <feature index> on|off`."""
    blocks = index // 32 + 1
    words = [0] * (2 * blocks)
    words[2 * (index // 32)] = 1 << (index % 32)  # valid
    words[2 * (index // 32) + 1] = (1 << (index % 32)) if on else 0  # requested
    request = struct.pack(f"II{2 * blocks}I", ETHTOOL_SFEATURES, blocks, *words)
    _ethtool(ifname, ctypes.create_string_buffer(request))


#: The kernel's neighbour (ARP) table is ONE table for every network namespace, capped by the
#: initial namespace's gc_thresh3 (1024 by default). Lab hosts that all talk to each other (a
#: swarm's gossip is all-to-all) hold about hosts² entries between them; past the cap every
#: namespace on the machine gets ENOBUFS ("No buffer space available", "no route to host"). Seen
#: here: a 50-host swarm lab next to the test suite filled the table 4060 times.
NEIGH_SYSCTLS = "/proc/sys/net/ipv4/neigh/default/gc_thresh{}"
#: Entries per host pair (each end's underlay entry, plus containers' on overlays) and the
#: machine's own share, when sizing the table for a lab.
NEIGH_PER_PAIR = 2
NEIGH_BASE = 256


def neighbour_room(hosts: int) -> dict[int, int]:
    """The gc_thresh2 (soft cap) and gc_thresh3 (hard cap) a lab of `hosts` that all reach
    each other needs; a few hosts fit the kernel's defaults (512 / 1024): small labs change
    nothing."""
    soft = NEIGH_PER_PAIR * hosts * hosts + NEIGH_BASE
    return {2: soft, 3: 2 * soft}


def ensure_neighbour_room(hosts: int) -> list[str]:
    """Raise the machine's neighbour-table thresholds to what `hosts` need (never lower them);
    returns a line per value changed (empty: the table was big enough)."""
    changed = []
    for n, want in neighbour_room(hosts).items():
        path = NEIGH_SYSCTLS.format(n)
        try:
            with open(path) as f:
                have = int(f.read().strip())
            if have >= want:
                continue
            with open(path, "w") as f:
                f.write(str(want))
        except (OSError, ValueError):
            continue  # best effort: a container without the sysctl runs small labs only
        changed.append(f"net.ipv4.neigh.default.gc_thresh{n} {have} -> {want}")
    return changed
