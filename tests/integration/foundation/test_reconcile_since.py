"""A request's reconciliation against the real kernel: it looks only at what the request
changes (`reconcile_since`), and leaves the kernel exactly as a full look wants it."""

from __future__ import annotations

from overlaynet.host import netns
from tests.integration.foundation.conftest import run_in_host

# Runs inside a namespace of the test's own, so "links of ours" (on-…) are the test's alone.
SCRIPT = r"""
import json, sys
from ipaddress import IPv4Interface
from overlaynet.host import links, reconcile
from overlaynet.host.picture import BridgeSpec, Picture, VethPlan, diff
from overlaynet.names import KernelNames

prefix = sys.argv[1]
names = KernelNames(prefix)
ns1, ns2 = prefix + "aaaaaaaaaaaa", prefix + "bbbbbbbbbbbb"
bridge = BridgeSpec("on-br-since", IPv4Interface("172.19.0.1/16"), 1500)
def plan(n, ns, last):
    return VethPlan(f"on-ve{n}", f"on-vc{n}", bridge.ifname, ns, "eth0",
                    f"02:42:ac:13:00:0{last}", IPv4Interface(f"172.19.0.{last}/16"),
                    "172.19.0.1", 1500)
p1, p2 = plan("s1", ns1, 2), plan("s2", ns2, 3)
one = Picture({bridge.ifname: bridge}, {}, frozenset({ns1}), {p1.host_ifname: p1})
two = Picture({bridge.ifname: bridge}, {}, frozenset({ns1, ns2}),
              {p1.host_ifname: p1, p2.host_ifname: p2})
taps = reconcile.NoTaps()
everything = lambda: reconcile.observe(names, taps, [ns1, ns2])
out = {}
out["first"] = reconcile.reconcile(one, names, taps).__dict__
# A second container: built from a look at its own objects only, and the whole host agrees.
out["add"] = reconcile.reconcile_since(one, two, names, taps, [ns2]).__dict__
out["add_left"] = diff(two, everything()).empty
out["inside"] = sorted(l.ifname for l in links.dump(ns2))
out["addr"] = [str(a) for n, a in links.addresses(ns2) if n == "eth0"]
# The same picture again: nothing touched, nothing done.
out["again"] = reconcile.reconcile_since(two, two, names, taps).__dict__
# The second container goes: its veth and namespace go with it, the first one stays.
out["remove"] = reconcile.reconcile_since(two, one, names, taps).__dict__
out["remove_left"] = diff(one, everything()).empty
out["ns_left"] = sorted(n for n in (ns1, ns2) if n in reconcile.observe(names, taps).namespaces)
# A stray made behind the agent's back is left to the full look (start-up), which removes it.
from pyroute2 import IPRoute
with IPRoute() as ipr:
    ipr.link("add", ifname="on-stray2", kind="bridge")
out["stray_kept"] = reconcile.reconcile_since(one, one, names, taps).__dict__
out["stray_full"] = reconcile.reconcile(one, names, taps).__dict__
out["gone"] = reconcile.reconcile(Picture(), names, taps).__dict__
out["after"] = sorted(l.ifname for l in links.dump() if l.ifname.startswith("on-"))
print(json.dumps(out))
"""


def test_a_request_reconciles_what_it_touches_and_the_whole_host_agrees(
    host_ns: tuple[str, str],
) -> None:
    host, prefix = host_ns
    out = run_in_host(host, SCRIPT, prefix)
    assert out["first"] == {"bridges": 1, "endpoints": 1, "strays": 0, "namespaces": 1}
    assert out["add"] == {"bridges": 0, "endpoints": 1, "strays": 0, "namespaces": 1}
    assert out["add_left"] is True
    assert "eth0" in out["inside"] and out["addr"] == ["172.19.0.3/16"]
    assert out["again"] == {"bridges": 0, "endpoints": 0, "strays": 0, "namespaces": 0}
    assert out["remove"]["strays"] == 2  # the second veth and its namespace
    assert out["remove_left"] is True
    assert out["ns_left"] == [prefix + "aaaaaaaaaaaa"]
    assert out["stray_kept"]["strays"] == 0
    assert out["stray_full"]["strays"] == 1
    assert out["gone"]["strays"] == 3
    assert out["after"] == []
    assert not netns.list_names(prefix)
