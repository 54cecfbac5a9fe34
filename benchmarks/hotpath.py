"""Hot-path micro-benchmark: ns per frame for encap, decap and FDB lookup, for batched egress
(TAP reads to one UDP-GSO sendmsg; also with 4 flows interleaved two frames at a time, as 4
streams leave one TAP) and merged ingress (a GRO buffer to one super-frame write),
all without root; and frames per second through a real TAP → UDP → TAP loop (root; namespaces
`onet-bdp-…`).

    .venv/bin/python benchmarks/hotpath.py            # both parts
    .venv/bin/python benchmarks/hotpath.py --no-loop  # only the per-frame costs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import timeit
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_args

from overlaynet.dataplane import fastingress
from overlaynet.dataplane.fdb import ForwardingDatabase
from overlaynet.dataplane.hotpath import DRAIN_BUDGET, SOL_UDP, UDP_GRO, HotLoop
from overlaynet.dataplane.switching import Network, egress, flow_hash, ingress
from overlaynet.lab.testbed import Testbed
from overlaynet.wire import vxlan
from overlaynet.wire.ethernet import mac_to_bytes

VNI = 4097
MAC_A, MAC_B = "02:42:0a:00:00:02", "02:42:0a:00:00:03"
#: A full-size TCP segment at the overlay MTU: 14 + 20 + 20 + 1410 octets.
FRAME = (
    mac_to_bytes(MAC_B) + mac_to_bytes(MAC_A) + b"\x08\x00"
    + bytes.fromhex("450005aa00004000400600000a0000020a000003")
    + bytes.fromhex("9c4014510000000000000000501000ff00000000") + b"x" * 1410
)  # fmt: skip
#: IEEE 802 "local experimental" EtherType: the loop's test frames can't be mistaken for traffic.
ETHERTYPE_BENCH = b"\x88\xb5"
LOOP_FRAMES = 50_000  # bounded: a few seconds at worst
LOOP_TIMEOUT = 20.0
RESULTS = Path(__file__).parent / "results"


def ns_per_call(fn: Callable[[], object], number: int = 200_000) -> float:
    """Best of five timeit repeats, in ns per call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9


#: Frames per batch in the loop benchmarks: what one 64 KB TCP send becomes at MTU 1450.
RUN = 44
ROUNDS = 300
SO_NO_CHECK = 11


def run_of_segments() -> list[bytes]:
    """RUN in-order segments of one TCP flow (FRAME's headers, sequence numbers advancing)."""
    frames = []
    for i in range(RUN):
        seq = (1 + i * 1410).to_bytes(4, "big")
        frames.append(FRAME[:38] + seq + FRAME[42:])
    return frames


def interleaved_segments(flows: int = 4, group: int = 2) -> list[bytes]:
    """RUN segments of each of `flows` TCP flows (source ports 40000 up), `group` of one flow
    then `group` of the next, as several streams leave one TAP queue (issue 15)."""
    runs = [
        [f[:34] + (40000 + k).to_bytes(2, "big") + f[36:] for f in run_of_segments()]
        for k in range(flows)
    ]
    return [run[i + j] for i in range(0, RUN, group) for run in runs for j in range(group)]


def batched_egress(frames: list[bytes] | None = None) -> float:
    """ns per frame for `HotLoop._drain_tap` on RUN queued frames (or `frames`): reads from a
    socketpair standing in for the TAP, GSO sendmsgs to a loopback sink that drops them."""
    fdb = ForwardingDatabase()
    fdb.add(VNI, MAC_B, "127.0.0.1")
    tap, bridge = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gso = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with tap, bridge, sink, plain, gso:
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        plain.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        bridge.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        tap.setblocking(False)
        loop = HotLoop(sink, [plain], sink.getsockname()[1], Counter(), tx_gso=[gso])
        net = Network(VNI, tap.fileno(), 1450, fdb.table(VNI))
        frames = frames or run_of_segments()
        spent = 0.0
        for _ in range(ROUNDS):
            for frame in frames:
                bridge.send(frame)
            start = time.perf_counter()
            # One call reads at most DRAIN_BUDGET frames; the last call ends on EAGAIN.
            for _ in range(len(frames) // DRAIN_BUDGET + 1):
                loop._drain_tap(net)
            spent += time.perf_counter() - start
        loop.close()
    return spent / (ROUNDS * len(frames)) * 1e9


class _GroSocket:
    """Hands `HotLoop._drain_udp` the same GRO buffer `rounds` times, then EAGAIN."""

    def __init__(self, buffer: bytes, segment: int, rounds: int) -> None:
        self.buffer, self.rounds = buffer, rounds
        self.ancillary = [(SOL_UDP, UDP_GRO, segment.to_bytes(4, sys.byteorder))]

    def recvmsg(self, _size: int, _space: int) -> tuple[bytes, list[Any], int, tuple[str, int]]:
        if self.rounds == 0:
            raise BlockingIOError
        self.rounds -= 1
        return self.buffer, self.ancillary, 0, ("127.0.0.1", vxlan.VXLAN_PORT)


def merged_ingress() -> float:
    """ns per segment for `HotLoop._drain_udp` merging GRO buffers of RUN segments into
    super-frames, written to /dev/null (the write itself costs next to nothing there)."""
    fdb = ForwardingDatabase()
    fdb.add(VNI, MAC_A, "127.0.0.1")
    header = vxlan.encode_header(VNI)
    buffer = b"".join(header + frame for frame in run_of_segments())
    null = os.open(os.devnull, os.O_WRONLY)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        loop = HotLoop(unused, [unused], vxlan.VXLAN_PORT, Counter())
        # The figure is the Python drain's: the C drain (fastingress) reads a real descriptor,
        # which the stand-in socket has not.
        fastingress.disable(loop)
        net = Network(VNI, null, 1450, fdb.table(VNI), vnet_hdr=True)
        loop.networks, loop.members = {net.vni_key: net}, frozenset({"127.0.0.1"})
        fake = _GroSocket(buffer, len(header) + len(FRAME), ROUNDS)
        start = time.perf_counter()
        while fake.rounds:  # one call handles at most DRAIN_BUDGET buffers
            loop._drain_udp(fake, merge=True)  # type: ignore[arg-type]
        spent = time.perf_counter() - start
        loop.close()
        merged = net.counters["rx_merged_writes"]
    os.close(null)
    if merged != ROUNDS:
        raise RuntimeError(f"expected {ROUNDS} merged writes, got {merged}")
    return spent / (ROUNDS * RUN) * 1e9


def micro() -> dict[str, float]:
    """Per-frame costs of the pure functions the loop calls."""
    fdb = ForwardingDatabase()
    for i in range(1000):  # a realistically populated table
        fdb.add(VNI, (0x020000000000 + i).to_bytes(6, "big"), "192.168.0.12")
    fdb.add(VNI, MAC_B, "192.168.0.12")
    net = Network(VNI, -1, 1450, fdb.table(VNI))
    net.peers = ("192.168.0.12",)
    datagram = vxlan.encapsulate(VNI, FRAME)
    networks, members, counters = {net.vni_key: net}, frozenset({"192.168.0.12"}), Counter[str]()
    table, key = fdb.table(VNI), mac_to_bytes(MAC_B)
    header = net.header
    return {
        "fdb_lookup_dict_ns": ns_per_call(lambda: table.get(key)),
        "fdb_lookup_api_ns": ns_per_call(lambda: fdb.lookup(VNI, key)),
        "encap_concat_ns": ns_per_call(lambda: header + FRAME),
        "encap_egress_decision_ns": ns_per_call(lambda: egress(net, FRAME)),
        "flow_hash_ns": ns_per_call(lambda: flow_hash(FRAME)),
        "decap_codec_ns": ns_per_call(lambda: vxlan.decode(datagram)),
        "decap_ingress_decision_ns": ns_per_call(
            lambda: ingress(networks, members, datagram, "192.168.0.12", counters)
        ),
        "batched_egress_ns_per_frame": batched_egress(),
        "interleaved_egress_ns_per_frame": batched_egress(interleaved_segments()),
        "merged_ingress_ns_per_segment": merged_ingress(),
    }


LOOP_DRIVER = """
import socket, sys, time, json
count, timeout, frame = int(sys.argv[1]), float(sys.argv[2]), bytes.fromhex(sys.argv[3])
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); tx.bind(("on-tap-a", 0))
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
rx.bind(("on-tap-b", 0))
rx.setsockopt(socket.SOL_SOCKET, 33, 8 << 20); rx.settimeout(0.5)
got, first, last, sent = 0, None, None, 0
start = time.monotonic()
# Window of frames in flight: the TAP queue (5000) must not overflow, we want throughput.
while sent < count or got < sent:
    while sent < count and sent - got < 256:
        tx.send(frame); sent += 1
    try:
        rx.recv(65536)
    except socket.timeout:
        break
    got += 1
    if first is None: first = time.monotonic()
    last = time.monotonic()
    if last - start > timeout: break
print(json.dumps({"sent": sent, "received": got, "seconds": (last or 0) - (first or 0)}))
"""


def loop(frames: int) -> dict[str, Any]:
    """Frames per second: AF_PACKET into TAP a → VTEP a → UDP on loopback → VTEP b → TAP b."""
    frame = mac_to_bytes(MAC_B) + mac_to_bytes(MAC_A) + ETHERTYPE_BENCH + FRAME[14:]
    with Testbed("onet-bdp-") as tb:
        ns = tb.underlay  # any namespace of ours will do: the loop runs on its loopback
        ready_a, ready_b = tb.workdir / "a.ready", tb.workdir / "b.ready"
        common = [sys.executable, "-m", "overlaynet.dataplane.vtep_main", "--vni", str(VNI)]
        tb.popen("ip", "netns", "exec", ns, *common, "--local-ip", "127.0.0.1", "--tap",
                 "on-tap-a", "--peer", "127.0.0.2", "--fdb", f"{MAC_B}=127.0.0.2",
                 "--ready", str(ready_a))  # fmt: skip
        tb.popen("ip", "netns", "exec", ns, *common, "--local-ip", "127.0.0.2", "--tap",
                 "on-tap-b", "--peer", "127.0.0.1", "--ready", str(ready_b))  # fmt: skip
        deadline = time.monotonic() + 10
        while not (ready_a.exists() and ready_b.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("VTEPs did not start")
            time.sleep(0.05)
        out = tb.exec(ns, sys.executable, "-c", LOOP_DRIVER, str(frames), str(LOOP_TIMEOUT),
                      frame.hex(), timeout=LOOP_TIMEOUT + 10)  # fmt: skip
        result: dict[str, Any] = json.loads(out)
    seconds = result["seconds"] or float("nan")
    result["frames_per_second"] = result["received"] / seconds
    result["gbit_per_second_inner"] = result["frames_per_second"] * len(frame) * 8 / 1e9
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-loop", action="store_true", help="skip the TAP loop (needs root)")
    parser.add_argument("--frames", type=bench_args.positive_int, default=LOOP_FRAMES)
    args = parser.parse_args()
    report: dict[str, Any] = {"micro": micro()}
    width = max(len(name) for name in report["micro"])
    for name, value in report["micro"].items():
        print(f"{name:{width}s} {value:8.0f}")
    if not args.no_loop and os.geteuid() == 0:
        report["loop"] = loop(args.frames)
        r = report["loop"]
        rate, gbit = r["frames_per_second"], r["gbit_per_second_inner"]
        print(f"TAP→UDP→TAP loop: {r['received']}/{r['sent']} frames, {rate:,.0f} frames/s, "
              f"{gbit:.2f} Gbit/s")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"hotpath-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main())
