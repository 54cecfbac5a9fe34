"""A plain network's TAP has TSO and checksum offload exactly while the C egress drain serves it
(it cuts super-frames; the Python drain takes them only as a backlog): a real TAP (root
namespace, `on-` name, no addresses, gone when the VTEP closes it) and a VTEP on loopback. A
trace or an impairment turns the offloads off at once, ending it turns them on again; with accel
off they are never on. `ethtool -k` is the witness."""

from __future__ import annotations

import os

from overlaynet.dataplane.impair import Impairment
from overlaynet.dataplane.tracing import TraceMatch
from overlaynet.dataplane.vtep import Vtep
from tests.integration.dataplane import test_tap_offload_switch as offload_switch
from tests.unit.dataplane.ports import free_port
from tests.unit.dataplane.test_vtep_loopback import HOST_A, HOST_B, VNI

TAP = f"on-tstso{os.getpid() % 10000}"


def wait_tso(vtep: Vtep, state: str) -> None:
    """Until this module's TAP's TSO and checksum offload are both `state` ("on"/"off")."""
    offload_switch.wait_tso(vtep, state, TAP)


def test_the_offloads_follow_what_the_c_drain_can_take() -> None:
    with Vtep(HOST_A, free_port(), accel="on") as vtep:
        vtep.add_network(VNI, TAP)
        vtep.set_peers(VNI, [HOST_B])
        vtep.start()
        wait_tso(vtep, "on")
        assert vtep.inspect(VNI)["tap_tso"] is True

        vtep.arm_trace(TraceMatch("10.0.0.2", "10.0.0.3", "tcp", 1), 30.0)
        wait_tso(vtep, "off")
        vtep.trace_records()
        wait_tso(vtep, "on")

        vtep.set_impairments({HOST_B: Impairment(loss=1.0, seed=1)})
        wait_tso(vtep, "off")
        assert vtep.inspect(VNI)["tap_tso"] is False
        vtep.set_impairments({})
        wait_tso(vtep, "on")
        counters = vtep.inspect(VNI)["counters"]
        assert counters["tap_tso_on"] >= 3 and counters["tap_tso_off"] >= 2
        assert "tap_offload_error" not in counters


def test_with_accel_off_the_tap_gets_no_offloads() -> None:
    with Vtep(HOST_A, free_port(), accel="off") as vtep:
        vtep.add_network(VNI, TAP)
        vtep.start()
        vtep.arm_trace(TraceMatch("10.0.0.2", "10.0.0.3", "tcp", 1), 30.0)
        vtep.trace_records()  # two wake-ups of the loop: whatever it wanted, it applied
        net = vtep._networks[VNI]
        assert not vtep._loop._tso_wanted(net)
        now = offload_switch.features(TAP)
        assert now["tcp-segmentation-offload"] == "off"
        assert now["tx-checksumming"] == "off"
        assert "tap_tso_on" not in vtep.inspect(VNI)["counters"]
