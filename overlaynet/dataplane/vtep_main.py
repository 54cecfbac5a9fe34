"""Run one VTEP from the command line with static peers: the path for tests, benchmarks and any
host whose endpoints are known in advance (e.g. to join a non-overlaynet kernel VTEP).

    python -m overlaynet.dataplane.vtep_main --local-ip 192.168.0.11 --vni 4097 \
        --tap on-tap-x --bridge br0 --peer 192.168.0.12 --fdb 02:42:0a:00:00:03=192.168.0.12

Run it inside the host's network namespace (`ip netns exec` / `nsenter --net=`). SIGTERM or
SIGINT stops it; SIGUSR1 writes the counters to `--stats` (also written on exit).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from overlaynet.dataplane.fastegress import ACCEL_DRAIN_BUDGET
from overlaynet.dataplane.fdb import LEARNED_MAX_AGE
from overlaynet.dataplane.hotpath import DRAIN_BUDGET, LOOP_NICE, NICE_POLICIES
from overlaynet.dataplane.lane import LANE_MODES
from overlaynet.dataplane.seal import DataKey, SealError, parse_key
from overlaynet.dataplane.switching import DEFAULT_MTU
from overlaynet.dataplane.tap import set_link
from overlaynet.dataplane.vtep import ACCEL_CHOICES, Vtep
from overlaynet.wire import vxlan


def _pair(text: str) -> tuple[str, str]:
    left, sep, right = text.partition("=")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected A=B, got {text!r}")
    return left, right


def _frames(text: str) -> int:
    """A queue length: a positive number of frames (0 would drop every frame, and the
    kernel would refuse a negative one only once the VTEP is built)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of frames") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of frames")
    return value


def _key(text: str) -> DataKey:
    try:
        return parse_key(text)
    except SealError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; every list option may be repeated."""
    p = argparse.ArgumentParser(prog="vtep_main", description=__doc__.split("\n\n")[0])
    p.add_argument("--local-ip", required=True, help="this host's underlay address")
    p.add_argument("--port", type=int, default=vxlan.VXLAN_PORT)
    p.add_argument("--vni", type=int, required=True)
    p.add_argument("--tap", required=True, help="TAP name to create (on-tap-… in a host ns)")
    p.add_argument("--bridge", help="attach the TAP to this bridge")
    p.add_argument("--mtu", type=int, default=DEFAULT_MTU)
    p.add_argument("--peer", action="append", default=[], help="host for flooded frames")
    p.add_argument("--member", action="append", default=[], help="extra host allowed to send")
    p.add_argument("--fdb", action="append", default=[], type=_pair, metavar="MAC=HOST_IP")
    p.add_argument("--arp", action="append", default=[], type=_pair, metavar="IP=MAC")
    p.add_argument("--strict", action="store_true", help="drop VXLAN with reserved bits set")
    p.add_argument(
        "--batch", dest="batch", action="store_true", default=True,
        help="UDP GSO/GRO batching and super-frame merging (the default)",
    )  # fmt: skip
    p.add_argument(
        "--no-batch", dest="batch", action="store_false",
        help="one system call per frame, UDP checksum 0 on every datagram (the naive loop)",
    )  # fmt: skip
    p.add_argument(
        "--learning", action="store_true",
        help="learn source MACs of frames from member hosts (bounded, aged; off by default)",
    )  # fmt: skip
    p.add_argument(
        "--learned-max-age", type=float, default=LEARNED_MAX_AGE, metavar="SECONDS",
        help="forget a learned MAC after this long without a frame from it",
    )  # fmt: skip
    p.add_argument(
        "--key", action="append", default=[], type=_key, metavar="ID=HEX",
        help="encrypt the network (AES-GCM, 16- or 32-octet key); the first seals, all open",
    )  # fmt: skip
    p.add_argument(
        "--nice", type=int, default=LOOP_NICE,
        help="nice value of the forwarding thread (negative: woken ahead of other processes)",
    )  # fmt: skip
    p.add_argument(
        "--nice-policy", choices=NICE_POLICIES, default="paced",
        help="how the thread's nice value follows its work (hotpath.NICE_POLICIES)",
    )  # fmt: skip
    p.add_argument(
        "--bulk-nice", type=int, default=0,
        help="nice value while moving bulk (--nice-policy bulk)",
    )  # fmt: skip
    p.add_argument(
        "--drain-budget", type=int, default=DRAIN_BUDGET, metavar="FRAMES",
        help="frames one drain of an fd takes before the others are looked at",
    )  # fmt: skip
    p.add_argument(
        "--offload", action="store_true",
        help="offload mode: TCP super-frames cross whole to every --peer, which must be an "
        "overlaynet VTEP run with --offload too (not RFC 7348: never toward a kernel VTEP)",
    )  # fmt: skip
    p.add_argument(
        "--offload-peer", action="append", default=[], metavar="HOST",
        help="offload mode, but offload datagrams only to these hosts (overlaynet VTEPs run "
        "with --offload); every other --peer gets RFC 7348, segmented and checksummed here",
    )  # fmt: skip
    p.add_argument(
        "--offload-chunk", type=int, default=None, metavar="OCTETS",
        help="offload chunk size (default: the largest the path MTU takes unfragmented, sent "
        "with UDP GSO); above 1456 given here, single datagrams the kernel fragments",
    )  # fmt: skip
    p.add_argument(
        "--accel", choices=ACCEL_CHOICES, default="auto",
        help="the C egress drain for plain RFC networks: auto (when it builds), on (fail "
        "without it), off (Python only; OVERLAYNET_ACCEL=off does the same)",
    )  # fmt: skip
    p.add_argument(
        "--accel-budget", type=int, default=ACCEL_DRAIN_BUDGET, metavar="FRAMES",
        help="frames one C egress drain takes before the other fds are looked at",
    )  # fmt: skip
    p.add_argument(
        "--lane", choices=LANE_MODES, default="off",
        help="serve pings, ACKs and other lone frames in a thread of their own: fifo "
        "(SCHED_FIFO 1), nice (nice -20), off (one thread for everything)",
    )  # fmt: skip
    p.add_argument(
        "--lane-nice", type=int, default=None, metavar="NICE",
        help="nice value of the lane thread (--lane nice, or fifo refused; default -20)",
    )  # fmt: skip
    p.add_argument(
        "--txqueuelen", type=_frames, default=None, metavar="FRAMES",
        help="queue length of the TAP toward the VTEP (default: tap.DEFAULT_TXQUEUELEN)",
    )  # fmt: skip
    p.add_argument("--stats", type=Path, help="write counters here as JSON")
    p.add_argument("--ready", type=Path, help="touch this file once the VTEP is serving")
    return p.parse_args(argv)


def _attach(tap: str, bridge: str) -> None:
    """Make the TAP a port of `bridge` (pyroute2, current namespace)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        (tap_index,) = ipr.link_lookup(ifname=tap)
        (bridge_index,) = ipr.link_lookup(ifname=bridge)
        ipr.link("set", index=tap_index, master=bridge_index, state="up")


def main(argv: Sequence[str] | None = None) -> int:
    """Build the VTEP, serve until signalled, write the counters."""
    args = parse_args(argv)
    vtep = Vtep(
        args.local_ip,
        args.port,
        strict=args.strict,
        batch=args.batch,
        learned_max_age=args.learned_max_age,
        nice=args.nice,
        nice_policy=args.nice_policy,
        bulk_nice=args.bulk_nice,
        drain_budget=args.drain_budget,
        offload_chunk=args.offload_chunk,
        accel=args.accel,
        accel_budget=args.accel_budget,
        lane=args.lane,
        lane_nice=args.lane_nice,
    )
    try:
        offload = args.offload or bool(args.offload_peer)
        vtep.add_network(args.vni, args.tap, args.mtu, offload=offload)
        if args.txqueuelen is not None:
            set_link(args.tap, txqueuelen=args.txqueuelen)
        if args.bridge:
            _attach(args.tap, args.bridge)
        vtep.set_peers(args.vni, args.peer)
        if offload:
            vtep.set_offload_peers(args.vni, args.offload_peer or args.peer)
        if args.key:
            vtep.set_keys(args.vni, args.key)
        if args.learning:
            vtep.set_learning(args.vni)
        vtep.members = args.member
        for mac, host in args.fdb:
            vtep.fdb.add(args.vni, mac, host)
        vtep.refresh_tap_offloads(args.vni)
        for ip, mac in args.arp:
            vtep.add_arp(args.vni, ip, mac)

        def dump(_signum: int = 0, _frame: FrameType | None = None) -> None:
            if args.stats is not None:
                tmp = args.stats.with_suffix(".tmp")
                tmp.write_text(json.dumps(vtep.stats(), indent=1, sort_keys=True))
                tmp.replace(args.stats)

        def finish(_signum: int, _frame: FrameType | None) -> None:
            vtep.stop()

        signal.signal(signal.SIGTERM, finish)
        signal.signal(signal.SIGINT, finish)
        signal.signal(signal.SIGUSR1, dump)
        if args.ready is not None:
            args.ready.touch()
        vtep.serve()
        dump()
    finally:
        vtep.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
