"""`node inspect NODE` in docker's shape (ID, CreatedAt, Spec, Description, Status,
ManagerStatus), so its templates work as in docker: `-f '{{.Status.Addr}}'`,
`'{{.ManagerStatus.Leader}}'`, `'{{.Spec.Role}}'`. The manager's own view had lowercase keys of
its own (`status` a word, no `Status.Addr`), and a docker template printed `<nil>` in silence.

The Raft facts docker does not have stay under `raft` (term, commit index, leader, members), as
the README documents them. Pure: built from the manager's node view.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from typing import Any

from overlaynet.cli.main import DEFAULT_WAIT, _each, _print_json, call

# The view's states → docker's swarm.NodeState and swarm.Reachability values.
NODE_STATES = {"Ready": "ready", "Down": "down"}
REACHABILITY = {"Leader": "reachable", "Reachable": "reachable", "Unreachable": "unreachable"}


def _rfc3339(seconds: Any) -> str:
    if seconds is None:
        return ""
    when = datetime.datetime.fromtimestamp(float(seconds), datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def docker_node(view: dict[str, Any]) -> dict[str, Any]:
    """docker's swarm.Node document from the manager's node view."""
    doc: dict[str, Any] = {
        "ID": view.get("id", ""),
        "CreatedAt": _rfc3339(view.get("created")),
        "UpdatedAt": _rfc3339(view.get("updated")),
        "Spec": {
            "Labels": dict(view.get("labels") or {}),
            "Role": view.get("role", ""),
            "Availability": view.get("availability", ""),
        },
        "Description": {
            "Hostname": view.get("hostname", ""),
            # The lab's hosts share this machine's platform, as `node inspect --pretty` says.
            "Platform": {"Architecture": platform.machine(), "OS": platform.system().lower()},
        },
        "Status": {
            "State": NODE_STATES.get(str(view.get("status")), "unknown"),
            "Addr": view.get("addr", ""),
        },
    }
    status = view.get("manager_status") or ""
    if status:
        doc["ManagerStatus"] = {
            "Leader": status == "Leader",
            "Reachability": REACHABILITY.get(status, "unknown"),
            "Addr": view.get("manager_addr") or "",
        }
    if "raft" in view:
        doc["raft"] = view["raft"]
    return doc


def cmd_node_inspect(ns: argparse.Namespace, refs: list[str]) -> int:
    """`node inspect NODE…` (not --pretty): docker's JSON, or a template over it."""
    views, status = _each(refs, lambda ref: call(ns, "node.inspect", DEFAULT_WAIT, node=ref))
    _print_json([docker_node(v) for v in views], ns.format)
    return status
