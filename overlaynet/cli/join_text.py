"""The join command `swarm init` prints for each other host of a lab, ready to paste.

A lab's hosts are reached with `-H`, and a lab other than "default" with `--lab` too: without
it the pasted line went to lab "default" (its node2, or "Cannot connect" when there was none),
not to the lab the swarm was made in.
"""

from __future__ import annotations

# The lab the CLI talks to when neither --lab nor OVERLAYNET_LAB names one.
DEFAULT_LAB = "default"


def lab_join_command(token: str, addr: str, host: str, lab: str) -> str:
    """`overlaynet [--lab LAB] -H HOST swarm join --token TOKEN ADDR`, indented as Docker's."""
    where = "" if lab == DEFAULT_LAB else f"--lab {lab} "
    return f"    overlaynet {where}-H {host} swarm join --token {token} {addr}"
