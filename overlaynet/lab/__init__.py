"""The one-machine lab: hosts as network namespaces on an isolated underlay, each with an agent;
plus the tutorial demo, underlay capture and the benchmark testbed. The CLI uses only the
functions re-exported here."""

from overlaynet.lab.lifecycle import (
    UNDERLAY_PREFIX,
    HostStatus,
    LabError,
    LabHost,
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
    status,
    stop_agent,
    up,
    wait_for_agent,
)

__all__ = [
    "UNDERLAY_PREFIX",
    "HostStatus",
    "LabError",
    "LabHost",
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
    "status",
    "stop_agent",
    "up",
    "wait_for_agent",
]
