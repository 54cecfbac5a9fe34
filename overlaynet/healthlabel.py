"""A standalone container's health check (`run --health-cmd …`), carried as one of its labels.

Docker keeps it in Config.Healthcheck; here a container record has no such field, and a label
is what the runtime already persists with the container, restores after an agent restart and
shows in `inspect`. The CLI writes it (validated the way `service create` validates its flags:
cluster.requests.HealthArgs), the agent's ContainerHealth reads it. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from overlaynet.cluster.errors import ClusterError
from overlaynet.cluster.requests import HealthArgs
from overlaynet.cluster.services import HealthCheck

# Namespaced as Docker's own labels are (com.docker.swarm.*), so no user label collides.
HEALTHCHECK_LABEL = "com.overlaynet.healthcheck"


class BadHealthFlags(ValueError):
    """The flags make no valid check; the message is the one `service create` gives."""


def check_of(
    cmd: str | None,
    interval: float | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    start_period: float | None = None,
    disabled: bool = False,
) -> HealthCheck | None:
    """The check `--health-*`/`--no-healthcheck` make for a new container (None: none)."""
    args = HealthArgs(
        health_cmd=cmd,
        health_interval=interval,
        health_timeout=timeout,
        health_retries=retries,
        health_start_period=start_period,
        no_healthcheck=disabled,
    )
    try:
        return args.healthcheck(None)
    except ClusterError as e:
        raise BadHealthFlags(str(e)) from None


def to_label(check: HealthCheck) -> str:
    """`KEY=VALUE` for the container's labels."""
    doc = dataclasses.asdict(check)
    doc["test"] = list(check.test)
    return f"{HEALTHCHECK_LABEL}={json.dumps(doc, separators=(',', ':'))}"


def from_labels(labels: Mapping[str, str]) -> HealthCheck | None:
    """The container's check (None: it has none, it is disabled, or the label is unreadable:
    a bad label never stops a container, the caller counts it)."""
    raw = labels.get(HEALTHCHECK_LABEL)
    if raw is None:
        return None
    doc = parse(raw)
    return None if doc is None or doc.disabled else doc


def parse(raw: str) -> HealthCheck | None:
    """The label's value as a check (None: unreadable)."""
    try:
        doc: Any = json.loads(raw)
        if not isinstance(doc, dict):
            return None
        return HealthCheck(**{**doc, "test": tuple(doc["test"])})
    except (KeyError, TypeError, ValueError, ClusterError):
        return None
