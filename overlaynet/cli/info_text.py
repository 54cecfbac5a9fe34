"""`info` and `node inspect --pretty` in docker's text layouts.

`info` prints docker's Client/Server sections (Containers with Running/Paused/Stopped, Images,
Server Version, Swarm with NodeID, Is Manager, Managers, Nodes, Node Address, Manager Addresses,
then the host); `-f/--format` renders the same document (docker's keys, plus the agent's own:
Pid, Counters, Gossip, Tasks, Dns, Cluster) through a Go template, or `json` for all of it.
The documents are built from the agent's answers by pure functions, unit-tested here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

from overlaynet.cli import gotemplate
from overlaynet.cli.main import CliError, _client_version, _host_paths, call

# docker aligns `node inspect --pretty` values at this column (its tabwriter output).
PRETTY_COLUMN = 24


def info_doc(
    agent: dict[str, Any],
    containers: list[dict[str, Any]],
    images: int,
    version: str,
    nodes: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """docker's `info` document from the agent's `info`, `ps --all` rows, the image count, the
    agent's version and (on a manager) `node ls`; the agent's own keys are kept beside."""
    states = [r["state"] for r in containers]
    running = states.count("running")
    paused = states.count("paused")
    swarm = agent.get("Swarm")
    doc: dict[str, Any] = {
        **agent,
        # docker's engine ID (the agent's, kept in its state folder), not the swarm node's.
        "ID": agent.get("ID", ""),
        "Containers": len(states),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(states) - running - paused,
        "Images": images,
        "ServerVersion": version,
        "Driver": "overlay",
        "KernelVersion": platform.release(),
        "OperatingSystem": platform.system(),
        "OSType": platform.system().lower(),
        "Architecture": platform.machine(),
        "NCPU": os.cpu_count() or 0,
        "DockerRootDir": agent.get("StateDir", ""),
        "Swarm": _swarm_doc(swarm, nodes),
    }
    return doc


def _swarm_doc(swarm: dict[str, Any] | None, nodes: list[dict[str, Any]] | None) -> dict[str, Any]:
    if not swarm:
        # Every field of docker's swarm.Info, zero-valued: its templates read them in any state
        # (`{{.Swarm.Nodes}}` is 0 outside a swarm, not an error).
        return {
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "NodeID": "",
            "NodeAddr": "",
            "Error": "",
            "RemoteManagers": None,
            "Nodes": 0,
            "Managers": 0,
        }
    managers = list(swarm.get("Managers") or [])
    manager = swarm.get("Role") == "manager"
    doc = {
        **swarm,
        "LocalNodeState": "active",
        "ControlAvailable": manager,
        "NodeAddr": swarm.get("AdvertiseAddr") or "",
        "Cluster": {"ID": swarm.get("ClusterID", "")},
        "RemoteManagers": [{"Addr": a} for a in managers],
        # docker counts from the manager's node list only (daemon/cluster/swarm.go Info): a
        # worker, or a manager whose list failed (no quorum), reads 0 and 0.
        "Nodes": 0,
        "Managers": 0,
    }
    if nodes is not None:
        doc["Nodes"] = len(nodes)
        doc["Managers"] = sum(1 for n in nodes if n.get("role") == "manager")
    return doc


def info_text(doc: dict[str, Any], client_version: str, context: str) -> str:
    """docker info's layout (cli/command/system/info.go), the parts that mean something here."""
    sw = doc["Swarm"]
    lines = [
        "Client:",
        f" Version:    {client_version}",
        f" Context:    {context}",
        "",
        "Server:",
        f" Containers: {doc['Containers']}",
        f"  Running: {doc['ContainersRunning']}",
        f"  Paused: {doc['ContainersPaused']}",
        f"  Stopped: {doc['ContainersStopped']}",
        f" Images: {doc['Images']}",
        f" Server Version: {doc['ServerVersion']}",
        f" Storage Driver: {doc['Driver']}",
        f" Swarm: {sw['LocalNodeState']}",
    ]
    if sw["LocalNodeState"] == "active":
        lines += [
            f"  NodeID: {sw['NodeID']}",
            f"  Is Manager: {str(sw['ControlAvailable']).lower()}",
        ]
        if sw["ControlAvailable"]:
            lines.append(f"  ClusterID: {sw['Cluster']['ID']}")
            lines.append(f"  Managers: {sw['Managers']}")
            lines.append(f"  Nodes: {sw['Nodes']}")
        lines.append(f"  Node Address: {sw['NodeAddr']}")
        lines.append("  Manager Addresses:")
        lines += [f"   {m['Addr']}" for m in sw["RemoteManagers"]]
    lines += [
        f" Kernel Version: {doc['KernelVersion']}",
        f" Operating System: {doc['OperatingSystem']}",
        f" OSType: {doc['OSType']}",
        f" Architecture: {doc['Architecture']}",
        f" CPUs: {doc['NCPU']}",
        f" Name: {doc.get('Name', '')}",
        *([f" ID: {doc['ID']}"] if doc["ID"] else []),  # an agent from before engine IDs
        f" Docker Root Dir: {doc['DockerRootDir']}",
    ]
    if doc.get("Lab"):
        lines.append(f" Lab: {doc['Lab']}")
    return "\n".join(lines)


def _go_time(seconds: float) -> str:
    """Go's time.String() in UTC, as docker prints `Joined at`."""
    whole = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    nanos = f"{round((seconds % 1) * 1e9):09d}".rstrip("0")
    return f"{whole}{'.' + nanos if nanos else ''} +0000 utc"


def node_pretty(node: dict[str, Any], engine_version: str) -> str:
    """`node inspect --pretty` (docker's nodeInspectPrettyTemplate) from a node's view."""

    def row(label: str, value: object) -> str:
        return f"{label:<{PRETTY_COLUMN}}{value}"

    lines = [row("ID:", node["id"] + (" *" if node.get("self") else ""))]
    if node.get("labels"):
        lines.append("Labels:")
        lines += [f" - {k}={v}" if v else f" - {k}" for k, v in sorted(node["labels"].items())]
    lines += [
        row("Hostname:", node["hostname"]),
        row("Joined at:", _go_time(float(node["created"]))),
        "Status:",
        row(" State:", node["status"]),
        row(" Availability:", str(node["availability"]).capitalize()),
        row(" Address:", node["addr"]),
    ]
    status = node.get("manager_status") or ""
    if status:
        lines += [
            "Manager Status:",
            row(" Address:", node.get("manager_addr") or ""),
            row(" Raft Status:", "Unreachable" if status == "Unreachable" else "Reachable"),
            row(" Leader:", "Yes" if status == "Leader" else "No"),
        ]
    lines += [
        "Platform:",
        row(" Operating System:", platform.system().lower()),
        row(" Architecture:", platform.machine()),
        row("Engine Version:", engine_version),
    ]
    return "\n".join(lines)


def _go_typed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as docker's templates see its typed fields: RemoteManagers outside a
    swarm is a nil []Peer, which Go's fmt prints `[]` (JSON keeps it null; an untyped nil
    would print `<nil>`)."""
    swarm = doc.get("Swarm")
    if isinstance(swarm, dict) and swarm.get("RemoteManagers") is None:
        return {**doc, "Swarm": {**swarm, "RemoteManagers": []}}
    return doc


def _render(template: str, doc: Any) -> str:
    if template == "json":
        return json.dumps(doc, indent=4)
    try:
        return gotemplate.render(template, _go_typed(doc))
    except gotemplate.TemplateError as e:
        raise CliError(f"template parsing error: {e}") from None


def cmd_info(ns: argparse.Namespace) -> int:
    agent = call(ns, "info")
    containers = call(ns, "container.ls", all=True)
    images = len(call(ns, "image.ls"))
    version = str(call(ns, "ping").get("version", ""))
    nodes = None
    if (agent.get("Swarm") or {}).get("Role") == "manager":
        try:
            nodes = call(ns, "node.ls")
        except CliError:
            nodes = None  # no quorum just now: docker's counts stay 0
    doc = info_doc(agent, containers, images, version, nodes)
    if ns.format:
        print(_render(ns.format, doc))
        return 0
    paths = _host_paths(ns)
    context = f"{paths.host} (lab {paths.lab})" if paths.lab else paths.host
    print(info_text(doc, _client_version(), context))
    return 0


def cmd_node_inspect_pretty(ns: argparse.Namespace, refs: list[str]) -> int:
    version = str(call(ns, "ping").get("version", ""))
    status = 0
    texts = []
    for ref in refs:
        try:
            texts.append(node_pretty(call(ns, "node.inspect", node=ref), version))
        except CliError as e:
            print(e, file=sys.stderr)
            status = e.status
    if texts:
        print("\n\n".join(texts))
    return status
