"""A bounded UDP burst between two lab containers, queued in the sending host's TAP while its
VTEP is stopped, then received and checked datagram by datagram: the tests of what the VTEPs do
with GSO trains of small frames (tests/integration/dataplane/test_udploss_offload.py,
test_fastingress_frames.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

from overlaynet.lab.testbed import Container, Testbed

TIMEOUT = 30.0  # bounds a hang only
#: Datagrams in the burst: fewer than the sending TAP's queue (5000 frames) holds, so none is
#: dropped before the VTEP reads it however late it gets a CPU.
BURST = 2000
PAYLOAD = 1400  # iperf3 -u -l 1400: the largest datagram at MTU 1450

#: The receiver: a 32 MiB socket buffer (the whole burst fits even if this process gets no CPU
#: meanwhile), then every datagram until BURST arrived or none came for 5 s; prints what it got.
_RECEIVER = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 32 * 1024 * 1024)  # SO_RCVBUFFORCE
s.bind((sys.argv[1], {port}))
s.settimeout(5.0)
print("ready", flush=True)
seqs, bad = [], 0
try:
    while len(seqs) < {burst}:
        data = s.recv(65536)
        seq = int.from_bytes(data[:4], "big")
        bad += data != seq.to_bytes(4, "big") * ({payload} // 4)
        seqs.append(seq)
except TimeoutError:
    pass
print(json.dumps({"seqs": seqs, "bad": bad}), flush=True)
"""
#: The sender: BURST datagrams back to back, payload the sequence number repeated.
_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 32, 32 * 1024 * 1024)  # SO_SNDBUFFORCE
s.connect((sys.argv[1], {port}))
for seq in range({burst}):
    s.send(seq.to_bytes(4, "big") * ({payload} // 4))
"""


def _script(template: str, port: int) -> str:
    """A script with its port and the burst's sizes filled in."""
    return (
        template.replace("{port}", str(port))
        .replace("{burst}", str(BURST))
        .replace("{payload}", str(PAYLOAD))
    )


def burst(
    tb: Testbed,
    client: Container,
    server: Container,
    sending_vtep: subprocess.Popen[bytes],
    port: int,
) -> dict[str, Any]:
    """BURST datagrams client -> server (UDP `port`), queued in the sending host's TAP while
    its VTEP is stopped (SIGSTOP), so that VTEP finds them all at once however the CPUs are
    shared: it sends them in GSO batches and the receiving VTEP gets GRO buffers of many."""
    receive = _script(_RECEIVER, port)
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", server.ns, sys.executable, "-c", receive, server.ip],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        sending_vtep.send_signal(signal.SIGSTOP)
        try:
            send = _script(_SENDER, port)
            tb.exec(client.ns, sys.executable, "-c", send, server.ip, timeout=TIMEOUT)
        finally:
            sending_vtep.send_signal(signal.SIGCONT)
        out, _ = receiver.communicate(timeout=TIMEOUT)
    finally:
        Testbed.stop(receiver)  # type: ignore[arg-type]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result
