"""An offload network's TAP keeps TSO only while every host it sends to takes offload
datagrams (issue 15 follow-up): a real TAP (root namespace, `on-` name, no addresses, gone when
the VTEP closes it) and a VTEP on loopback. Its features, as `ethtool -k` shows them, follow the
peers and FDB entries given at run time, and `inspect` says which mode the TAP is in."""

from __future__ import annotations

import os
import subprocess
import time

from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.vtep import Vtep
from tests.unit.dataplane.ports import free_port
from tests.unit.dataplane.test_vtep_loopback import HOST_A, HOST_B, TIMEOUT, VNI

HOST_C = "127.0.0.4"
TAP = f"on-lttso{os.getpid() % 10000}"


def features(name: str) -> dict[str, str]:
    out = subprocess.run(
        ["ethtool", "-k", name], check=True, capture_output=True, text=True, timeout=TIMEOUT
    ).stdout
    pairs = (line.split(":", 1) for line in out.splitlines()[1:] if ":" in line)
    return {k.strip(): v.split()[0] for k, v in pairs if v.split()}


def wait_tso(vtep: Vtep, state: str, tap: str = TAP) -> None:
    """Until the TAP's TSO and checksum offload are both `state` ("on"/"off")."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        now = features(tap)
        if now["tcp-segmentation-offload"] == state and now["tx-checksumming"] == state:
            return
        assert time.monotonic() < deadline, (now, vtep.inspect(VNI)["counters"])
        time.sleep(0.02)


def test_tso_is_on_only_while_every_peer_takes_offload() -> None:
    with Vtep(HOST_A, free_port(), offload_port=free_port()) as vtep:
        vtep.add_network(VNI, TAP, offload=True)
        vtep.start()
        vtep.set_peers(VNI, [HOST_B])
        vtep.set_offload_peers(VNI, [HOST_B])
        wait_tso(vtep, "on")
        assert vtep.inspect(VNI)["offload"]["tap"] == "tso"

        # A static RFC 7348 peer joins (a kernel VTEP): the kernel segments before the TAP.
        vtep.set_peers(VNI, [HOST_B, HOST_C])
        wait_tso(vtep, "off")
        doc = vtep.inspect(VNI)
        assert doc["offload"]["tap"] == f"segmented by the kernel for rfc7348 peers {HOST_C}"
        assert doc["offload"]["wire"] == {HOST_B: "offload", HOST_C: "rfc7348"}
        assert doc["counters"]["tap_tso_off"] >= 1

        vtep.set_peers(VNI, [HOST_B])
        wait_tso(vtep, "on")

        # An FDB entry pointing at a host without offload counts as such a peer too.
        endpoint = RemoteEndpoint(VNI, "02:42:0a:00:00:09", "10.0.0.9", HOST_C)
        vtep.endpoint_added(endpoint)
        wait_tso(vtep, "off")
        vtep.endpoint_removed(endpoint)
        wait_tso(vtep, "on")
        assert vtep.inspect(VNI)["counters"]["tap_tso_on"] >= 2
