"""The CLI is a client (issue 11): importing every module under overlaynet/cli loads neither the
agent, the host plumbing (namespaces, links, nft) nor pyroute2 — it reaches agents only through
their API and the lab only through the lab package's public functions."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import importlib, json, pkgutil, sys
import overlaynet.cli as cli
for mod in pkgutil.iter_modules(cli.__path__):
    importlib.import_module("overlaynet.cli." + mod.name)
print(json.dumps(sorted(sys.modules)))
"""
FORBIDDEN = ("overlaynet.agent", "overlaynet.host", "pyroute2")


def test_no_cli_module_loads_the_agent_the_host_plumbing_or_pyroute2() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert [m for m in loaded if m.startswith(FORBIDDEN)] == []
    assert "overlaynet.cli.trace_cmd" in loaded  # the check saw the modules it is about
