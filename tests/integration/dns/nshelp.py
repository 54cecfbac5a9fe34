"""Helpers for the DNS integration tests: run commands inside a namespace, with our resolver."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trio

#: Every namespace these tests create; the pid keeps parallel runs apart.
PREFIX = f"onet-tdns-{os.getpid()}-"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


@dataclass(frozen=True)
class Topology:
    """Namespace names of the tutorial's containers, plus the resolv.conf they use."""

    switch: str
    alpine1: str
    alpine2: str
    alpine3: str
    resolv_conf: Path


async def run_in(netns: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run a command inside `netns` (its network only), capturing its output."""
    return await trio.run_process(
        ["nsenter", f"--net=/run/netns/{netns}", *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def run_with_resolver(
    netns: str, resolv_conf: Path, command: str
) -> subprocess.CompletedProcess[bytes]:
    """Run a shell command in `netns` with our resolv.conf, as a container's mount ns has it."""
    script = f"mount --bind {resolv_conf} /etc/resolv.conf && {command}"
    return await run_in(netns, "unshare", "--mount", "sh", "-c", script)


async def dig(netns: str, *args: str) -> str:
    done = await run_in(netns, "dig", "+tries=1", "+time=3", "@127.0.0.11", *args)
    return done.stdout.decode()
