"""A UDP burst through two VTEPs whose C ingress drain delivers the frames it does not merge
(`accel/ingress.c` IN_FRAMES), on real namespaces: the burst, queued in the sending TAP while
that VTEP is stopped so it leaves in GSO trains and arrives in GRO buffers of many, must reach
the receiving container whole, intact and in order, counted on the receiving VTEP (the frames
on the sender's FDB entry, the C drains in `rx_accel_drains`); pings (the latency queue, the
lone-frame socket) pass both ways.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.dataplane import accel
from overlaynet.dataplane.fastingress import DRAIN_COUNTER
from overlaynet.lab.testbed import Container, Host, Testbed

TIMEOUT = 30.0  # bounds a hang only
#: Datagrams in the burst: fewer than the sending TAP's queue (5000 frames) holds.
BURST = 2000
PAYLOAD = 1400  # iperf3 -u -l 1400: the largest datagram at MTU 1450
PORT = 5998

#: The receiver: a 32 MiB socket buffer, then every datagram until BURST arrived or none came
#: for 5 s; prints what it got.
RECEIVER = f"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 32 * 1024 * 1024)  # SO_RCVBUFFORCE
s.bind((sys.argv[1], {PORT}))
s.settimeout(5.0)
print("ready", flush=True)
seqs, bad = [], 0
try:
    while len(seqs) < {BURST}:
        data = s.recv(65536)
        seq = int.from_bytes(data[:4], "big")
        bad += data != seq.to_bytes(4, "big") * ({PAYLOAD} // 4)
        seqs.append(seq)
except TimeoutError:
    pass
print(json.dumps({{"seqs": seqs, "bad": bad}}), flush=True)
"""
#: The sender: BURST datagrams back to back, payload the sequence number repeated.
SENDER = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 32, 32 * 1024 * 1024)  # SO_SNDBUFFORCE
s.connect((sys.argv[1], {PORT}))
for seq in range({BURST}):
    s.send(seq.to_bytes(4, "big") * ({PAYLOAD} // 4))
"""


class Pair:
    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.h1, self.h2 = tb.add_host("h1", 86), tb.add_host("h2", 87)
        self.c1 = tb.add_container(self.h1, "c1", 86)
        self.c2 = tb.add_container(self.h2, "c2", 87)
        self.vtep1 = tb.start_vtep(self.h1, [self.h2])
        self.vtep2 = tb.start_vtep(self.h2, [self.h1])

    def stats(self, host: Host, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        path = self.tb.stats_path(host)
        path.unlink(missing_ok=True)
        process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + TIMEOUT
        while not path.exists():
            assert time.monotonic() < deadline, "VTEP did not write its counters"
            time.sleep(0.05)
        result: dict[str, Any] = json.loads(path.read_text())
        return result


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    if accel.load("ingress") is None:
        pytest.skip(f"C helper unavailable: {accel.why_not('ingress')}")
    saved = os.environ.get(accel.ENV_SWITCH)
    os.environ[accel.ENV_SWITCH] = "on"  # the VTEPs inherit it
    try:
        with Testbed("onet-cf-") as tb:
            p = Pair(tb)
            p.tb.exec(p.c1.ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", p.c2.ip)
            yield p
    finally:
        if saved is None:
            os.environ.pop(accel.ENV_SWITCH, None)
        else:
            os.environ[accel.ENV_SWITCH] = saved


def burst(
    tb: Testbed, client: Container, server: Container, sending_vtep: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """BURST datagrams client -> server, queued in the sending host's TAP while its VTEP is
    stopped (SIGSTOP), so that VTEP sends them in GSO trains."""
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", server.ns, sys.executable, "-c", RECEIVER, server.ip],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        sending_vtep.send_signal(signal.SIGSTOP)
        try:
            tb.exec(client.ns, sys.executable, "-c", SENDER, server.ip, timeout=TIMEOUT)
        finally:
            sending_vtep.send_signal(signal.SIGCONT)
        out, _ = receiver.communicate(timeout=TIMEOUT)
    finally:
        Testbed.stop(receiver)  # type: ignore[arg-type]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _frames_from(stats: dict[str, Any], tb: Testbed) -> int:
    """Frames the receiving VTEP counted on its FDB entries and as from unknown sources."""
    net = stats["networks"][str(tb.vni)]
    known = sum(int(e.get("rx_frames", 0)) for e in net.get("fdb", []) if isinstance(e, dict))
    return known + int(net["counters"].get("rx_frames_unknown_source", 0))


def test_a_udp_burst_arrives_whole_through_the_c_drain(pair: Pair) -> None:
    before = pair.stats(pair.h2, pair.vtep2)
    got = burst(pair.tb, pair.c1, pair.c2, pair.vtep1)
    after = pair.stats(pair.h2, pair.vtep2)
    assert got["bad"] == 0
    assert got["seqs"] == list(range(BURST)), f"{BURST - len(got['seqs'])} datagrams missing"
    assert after["counters"][DRAIN_COUNTER] > before["counters"].get(DRAIN_COUNTER, 0)
    assert _frames_from(after, pair.tb) - _frames_from(before, pair.tb) >= BURST


def test_pings_pass_both_ways(pair: Pair) -> None:
    for src, dst in ((pair.c1, pair.c2), (pair.c2, pair.c1)):
        out = pair.tb.exec(src.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", dst.ip)
        assert " 0% packet loss" in out
