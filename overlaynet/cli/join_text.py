"""The join command `swarm init` and `swarm join-token` print for each other host of a lab,
ready to paste.

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


def lab_join_block(token: str, addr: str, lab: str, this_host: str, hosts: list[str]) -> str:
    """The lines for every lab host but this one, under a heading; "" when there is none."""
    others = [h for h in hosts if h != this_host]
    if not others:
        return ""
    lines = [f"In lab {lab}, paste for each host that joins:", ""]
    lines += [lab_join_command(token, addr, h, lab) for h in others]
    return "\n".join(lines) + "\n"


def print_lab_join(lab: str | None, this_host: str, token: str, addr: str) -> None:
    """After docker's own join line: in a lab, where every host is reached with -H (and
    --lab), the same line spelled out for each other host of the lab."""
    if not lab:
        return
    from overlaynet import lab as labs  # only in a lab: the CLI stays light elsewhere

    block = lab_join_block(token, addr, lab, this_host, [h.name for h in labs.read_hosts(lab)])
    if block:
        print(block)
