"""Importing the Raft glue leaves the process's socket module intact: pysyncobj's
win_inet_pton replaces socket.inet_ntop with a Windows-only function on every platform, which
broke scapy's import (and `trace`) in any process that had imported the managers' code."""

from __future__ import annotations

import socket
import subprocess
import sys


def test_inet_ntop_still_works_after_the_raft_module_is_imported() -> None:
    import overlaynet.cluster.raft_syncobj  # noqa: F401

    assert socket.inet_ntop(socket.AF_INET, bytes([10, 0, 0, 2])) == "10.0.0.2"
    assert socket.inet_ntop(socket.AF_INET6, bytes(15) + b"\x01") == "::1"


def test_scapy_imports_in_a_process_that_imported_the_agent() -> None:
    code = "import overlaynet.agent.daemon\nfrom scapy.layers.inet import IP\nprint(IP().src)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
