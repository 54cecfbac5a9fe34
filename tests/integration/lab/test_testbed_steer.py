"""`Testbed.steer_receive`: RPS on a lab host's underlay port, as the interop benchmark rows use it
(a kernel VTEP host's receive work on its own CPU). Real namespaces: the mask is read back from the
host's own sysfs, and set back to 0."""

from __future__ import annotations

from overlaynet.lab.testbed import Testbed


def _mask(tb: Testbed, ns: str) -> int:
    return int(tb.exec(ns, "cat", "/sys/class/net/eth0/queues/rx-0/rps_cpus").strip(), 16)


def test_steer_receive_sets_and_clears_the_rps_mask() -> None:
    with Testbed("onet-tst-") as tb:
        host = tb.add_host("k1", 31)
        other = tb.add_host("k2", 32)
        assert _mask(tb, host.ns) == 0
        tb.steer_receive(host, 1)
        assert _mask(tb, host.ns) == 1
        assert _mask(tb, other.ns) == 0  # the host's own port, no other
        tb.steer_receive(host, 0)
        assert _mask(tb, host.ns) == 0
