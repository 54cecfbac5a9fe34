"""The reconciling shell against the real kernel: builds what is missing, removes strays, and
applying the same picture twice changes nothing the second time."""

from __future__ import annotations

from overlaynet.host import netns
from tests.integration.foundation.conftest import run_in_host

# Runs inside a namespace of the test's own, so the reconciler's view of "links of ours"
# (everything named on-…) is the test's alone, never the machine's.
SCRIPT = r"""
import json, sys
from ipaddress import IPv4Interface
from overlaynet.host import links, reconcile
from overlaynet.host.picture import BridgeSpec, Picture, VethPlan, diff
from overlaynet.names import KernelNames

prefix = sys.argv[1]
names = KernelNames(prefix)
ns = prefix + "aaaaaaaaaaaa"
bridge = BridgeSpec("on-br-rec", IPv4Interface("172.18.0.1/16"), 1500)
plan = VethPlan("on-verec", "on-vcrec", "on-br-rec", ns, "eth0", "02:42:ac:12:00:02",
                IPv4Interface("172.18.0.2/16"), "172.18.0.1", 1500)
want = Picture({bridge.ifname: bridge}, {}, frozenset({ns}), {plan.host_ifname: plan})
taps = reconcile.NoTaps()
out = {}
links.delete("on-stray1")
from pyroute2 import IPRoute
with IPRoute() as ipr:
    ipr.link("add", ifname="on-stray1", kind="bridge")
out["first"] = reconcile.reconcile(want, names, taps, [ns]).__dict__
out["second"] = reconcile.reconcile(want, names, taps, [ns]).__dict__
out["left"] = diff(want, reconcile.observe(names, taps, [ns])).empty
out["inside"] = sorted(l.ifname for l in links.dump(ns))
out["addr"] = [str(a) for n, a in links.addresses(ns) if n == "eth0"]
# The container end vanishes (as when a namespace is rebuilt): the endpoint is rebuilt whole.
links.delete("eth0", netns=ns)
out["repair"] = reconcile.reconcile(want, names, taps, [ns]).__dict__
out["repaired"] = sorted(l.ifname for l in links.dump(ns))
out["gone"] = reconcile.reconcile(Picture(), names, taps).__dict__
out["after"] = sorted(l.ifname for l in links.dump() if l.ifname.startswith("on-"))
print(json.dumps(out))
"""


def test_reconcile_builds_repairs_is_idempotent_and_cleans_up(host_ns: tuple[str, str]) -> None:
    host, prefix = host_ns
    out = run_in_host(host, SCRIPT, prefix)
    assert out["first"] == {"bridges": 1, "endpoints": 1, "strays": 1, "namespaces": 1}
    assert out["second"] == {"bridges": 0, "endpoints": 0, "strays": 0, "namespaces": 0}
    assert out["left"] is True
    assert "eth0" in out["inside"] and out["addr"] == ["172.18.0.2/16"]
    assert out["repair"]["endpoints"] == 1 and "eth0" in out["repaired"]
    assert out["gone"]["strays"] == 3  # the bridge, the veth and the container namespace
    assert out["after"] == []
    assert not netns.list_names(prefix)
