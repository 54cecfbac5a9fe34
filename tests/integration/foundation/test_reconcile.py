"""The reconciling shell against the real kernel: builds what is missing, removes strays, and
applying the same picture twice changes nothing the second time."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from overlaynet.host import netns

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


@pytest.fixture
def host_ns() -> Iterator[tuple[str, str]]:
    lab = "t" + uuid.uuid4().hex[:8]
    host = f"onet-{lab}-h"
    netns.create(host)
    try:
        yield host, f"{host}-"
    finally:
        for name in netns.list_names(f"{host}-"):
            netns.remove(name)
        netns.remove(host)


def test_reconcile_builds_repairs_is_idempotent_and_cleans_up(host_ns: tuple[str, str]) -> None:
    host, prefix = host_ns
    run = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-c", SCRIPT, prefix],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["first"] == {"bridges": 1, "endpoints": 1, "strays": 1, "namespaces": 1}
    assert out["second"] == {"bridges": 0, "endpoints": 0, "strays": 0, "namespaces": 0}
    assert out["left"] is True
    assert "eth0" in out["inside"] and out["addr"] == ["172.18.0.2/16"]
    assert out["repair"]["endpoints"] == 1 and "eth0" in out["repaired"]
    assert out["gone"]["strays"] == 3  # the bridge, the veth and the container namespace
    assert out["after"] == []
    assert not netns.list_names(prefix)
