"""The CLI's `service update` / `service rollback` and the health and update flags: Docker's
duration syntax, and the arguments each sends to the managers (decoded by their typed request)."""

from __future__ import annotations

import argparse

import pytest

from overlaynet.cli import service
from overlaynet.cli.main import build_parser
from overlaynet.cluster import requests as rq


def test_durations_are_gos() -> None:
    assert service.duration("5s") == 5.0
    assert service.duration("1m30s") == 90.0
    assert service.duration("500ms") == 0.5
    assert service.duration("2") == 2.0
    for bad in ("", "5x", "s", "5s garbage"):
        with pytest.raises(argparse.ArgumentTypeError):
            service.duration(bad)


def test_update_flags_reach_the_managers_typed_request() -> None:
    ns = build_parser().parse_args(
        [
            "service",
            "update",
            "--image",
            "overlaynet/web:2",
            "--env-add",
            "A=1",
            "--update-parallelism",
            "2",
            "--update-delay",
            "1s",
            "--update-failure-action",
            "rollback",
            "--update-order",
            "start-first",
            "--health-cmd",
            "true",
            "--health-interval",
            "500ms",
            "--detach",
            "web",
        ]
    )
    args = {
        "service": ns.service,
        "image": ns.image,
        "env_add": ns.env_add,
        **service._health_update_args(ns),
    }
    req = rq.decode("service.update", args)
    assert isinstance(req, rq.ServiceUpdate)
    assert (req.update_parallelism, req.update_delay, req.update_order) == (2, 1.0, "start-first")
    assert (req.health_cmd, req.health_interval) == ("true", 0.5)
    assert ns.func is service.cmd_update and ns.detach


def test_rollback_failure_action_cannot_be_rollback() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["service", "update", "--rollback-failure-action", "rollback", "web"]
        )


def test_create_takes_health_and_update_flags() -> None:
    ns = build_parser().parse_args(
        ["service", "create", "--name", "web", "--no-healthcheck", "--update-monitor", "1s", "x"]
    )
    assert ns.no_healthcheck and ns.update_monitor == 1.0 and ns.image == "x"
    ns = build_parser().parse_args(["service", "rollback", "-d", "web"])
    assert ns.func is service.cmd_rollback and ns.service == "web"
