"""The one-machine lab: hosts as network namespaces on an isolated underlay, each with an agent;
plus the tutorial demo, underlay capture and the benchmark testbed. The CLI uses only the
functions re-exported here.

The names load lazily (PEP 562): `python -m overlaynet.lab.supervise`, one per lab host, imports
this package first and must stay small (it needs none of pyroute2, trio or the lab's code:
eager re-exports made every supervisor 35 MiB RSS instead of 18).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overlaynet.lab.lifecycle import (
        CLIENT_IP,
        UNDERLAY_PREFIX,
        HostStatus,
        LabError,
        LabHost,
        add_client,
        agent_answers,
        agent_pid,
        all_labs,
        down,
        form_swarm,
        lab_file,
        namespaces_of,
        owner_pid,
        read_hosts,
        start_agent,
        start_agents,
        status,
        stop_agent,
        up,
        wait_for_agent,
    )

__all__ = [
    "CLIENT_IP",
    "UNDERLAY_PREFIX",
    "HostStatus",
    "LabError",
    "LabHost",
    "add_client",
    "agent_answers",
    "agent_pid",
    "all_labs",
    "down",
    "form_swarm",
    "lab_file",
    "namespaces_of",
    "owner_pid",
    "read_hosts",
    "start_agent",
    "start_agents",
    "status",
    "stop_agent",
    "up",
    "wait_for_agent",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("overlaynet.lab.lifecycle"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
