"""Manager requests are decoded once into frozen dataclasses: types exact, nothing coerced,
unknown arguments refused, and each class says who may send it and whether it writes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from overlaynet.cluster import requests as rq
from overlaynet.cluster.errors import ClusterError, ErrorKind


def test_a_request_decodes_to_its_typed_class() -> None:
    req = rq.decode("node.update", {"node": "n1", "label_rm": ["zone"], "label_add": {"a": "b"}})
    assert req == rq.NodeUpdate(node="n1", label_add={"a": "b"}, label_rm=("zone",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.node = "n2"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        ("nothing.here", {}, "unknown cluster operation"),
        ("node.rm", {"node": "n", "force": "false"}, "must be true or false"),
        ("node.rm", {"node": "n", "forse": True}, "unknown argument 'forse'"),
        ("node.rm", {}, "missing argument 'node'"),
        ("node.rm", {"node": ""}, "missing argument 'node'"),
        ("replica.fetch", {"since": 1.0}, "must be an integer"),
        ("join.admit", {"hostname": "h", "addr": "a", "role": "boss"}, "worker or manager"),
        ("join_token", {"role": "admin"}, "worker or manager"),
    ],
)
def test_a_wrong_request_is_invalid(op: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ClusterError, match=message) as info:
        rq.decode(op, args)
    assert info.value.kind is ErrorKind.INVALID


def test_null_is_the_default_and_never_a_value() -> None:
    req = rq.decode("node.update", {"node": "n1", "label_add": None, "label_rm": None})
    assert req == rq.NodeUpdate(node="n1")
    with pytest.raises(ClusterError, match="argument 'node' must be a string"):
        rq.decode("node.update", {"node": None})


def test_wire_arguments_round_trip() -> None:
    req = rq.decode("service.create", {"name": "s", "image": "x", "publish": ["8080:80"]})
    assert rq.decode(req.OP, req.to_args()) == req


def test_writes_and_worker_operations_are_declared_on_the_classes() -> None:
    assert not rq.decode("join_token", {"role": "worker"}).is_write()
    assert rq.decode("join_token", {"role": "worker", "rotate": True}).is_write()
    assert rq.decode("ip.allocate", {"network": "n", "endpoint_id": "e"}).is_write()
    workers = {op for op, cls in rq.REQUESTS.items() if cls.WORKER}
    assert workers == {
        "gossip.report",
        "state.snapshot",
        "ip.allocate",
        "ip.release",
        "leave",
        "task.report",
        "task.assigned",
    }
