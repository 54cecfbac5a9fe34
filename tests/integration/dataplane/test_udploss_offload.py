"""UDP through two offload-mode VTEPs on real namespaces (issue 15: `iperf3 -u` lost datagrams at
80 % of the sustained rate in offload mode).

Where they were lost, measured (benchmarks/profiles/udploss-offload.md): at the receiving
container's socket (UdpRcvbufErrors), while the receiving VTEP, at nice -10, spent its CPU
writing every datagram to the TAP on its own (one write, one trip through bridge and veth
each). Now consecutive datagrams of one flow reach the TAP as one GSO write that the kernel
cuts up at the receiving socket. The burst here waits in the sending TAP until its VTEP reads
it, so the sending VTEP batches it and the receiving one gets GRO buffers of many: every
datagram must arrive, intact and in order, and the receiving TAP must have taken fewer writes
than there were datagrams (on the code before: exactly one each).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.dataplane import offload
from overlaynet.lab.testbed import Container, Host, Testbed

TIMEOUT = 30.0  # bounds a hang only
#: Datagrams in the burst: fewer than the sending TAP's queue (5000 frames) holds, so none is
#: dropped before the VTEP reads it however late it gets a CPU.
BURST = 2000
PAYLOAD = 1400  # iperf3 -u -l 1400: the largest datagram at MTU 1450
PORT = 5999

#: The receiver: a 32 MiB socket buffer (the whole burst fits even if this process gets no CPU
#: meanwhile), then every datagram until BURST arrived or none came for 5 s; prints what it got.
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
        self.h1, self.h2 = tb.add_host("h1", 71), tb.add_host("h2", 72)
        self.c1 = tb.add_container(self.h1, "c1", 71)
        self.c2 = tb.add_container(self.h2, "c2", 72)
        self.vtep1 = tb.start_vtep(self.h1, [self.h2], extra=("--offload-peer", self.h2.ip))
        self.vtep2 = tb.start_vtep(self.h2, [self.h1], extra=("--offload-peer", self.h1.ip))

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

    def tap_rx_packets(self, host: Host) -> int:
        """Packets the host's TAP took from its VTEP (one per write)."""
        out = self.tb.exec(host.ns, "ip", "-s", "-j", "link", "show", "on-tap-tdp")
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with Testbed("onet-ul-") as tb:
        p = Pair(tb)
        p.tb.exec(p.c1.ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", p.c2.ip)
        yield p


def burst(
    tb: Testbed, client: Container, server: Container, sending_vtep: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """BURST datagrams client -> server, queued in the sending host's TAP while its VTEP is
    stopped (SIGSTOP), so that VTEP finds them all at once however the CPUs are shared: it
    sends them in GSO batches and the receiving VTEP gets GRO buffers of many."""
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


@pytest.mark.skipif(not offload.USO_WRITES, reason="tun takes USO writes from Linux 6.2 on")
def test_a_udp_burst_through_offload_vteps_arrives_whole_in_merged_tap_writes(pair: Pair) -> None:
    before = pair.tap_rx_packets(pair.h2)
    got = burst(pair.tb, pair.c1, pair.c2, pair.vtep1)
    writes = pair.tap_rx_packets(pair.h2) - before
    assert got["bad"] == 0
    assert got["seqs"] == list(range(BURST)), f"{BURST - len(got['seqs'])} datagrams missing"
    # Far fewer TAP writes than datagrams: GRO buffers of them left in one GSO write each.
    assert writes < BURST // 2, f"{writes} TAP writes for {BURST} datagrams"
    merged = pair.stats(pair.h2, pair.vtep2)["offload_reassembly"]
    assert merged["offload_udp_merged"] > BURST // 2


def test_a_udp_burst_the_other_way_arrives_whole_too(pair: Pair) -> None:
    got = burst(pair.tb, pair.c2, pair.c1, pair.vtep2)
    assert got["bad"] == 0
    assert got["seqs"] == list(range(BURST))
