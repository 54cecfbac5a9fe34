"""Typed API requests: decoded once, wrong types refused (never coerced), ranges checked."""

from __future__ import annotations

import json
import math
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet import api
from overlaynet.agent import requests as rq
from overlaynet.errors import InvalidArgument
from overlaynet.trace.requests import TRACE_REQUESTS


def test_every_operation_the_cli_sends_decodes_to_its_type() -> None:
    req = api.decode_args(
        rq.ContainerCreate,
        {
            "image": "alpine",
            "cmd": ["sleep", "1"],
            "name": None,
            "network": "bridge",
            "ip": None,
            "aliases": [],
            "env": ["A=1"],
            "interactive": False,
            "start": True,
        },
    )
    assert req == rq.ContainerCreate(image="alpine", cmd=("sleep", "1"), env=("A=1",), start=True)


@pytest.mark.parametrize("text", ['"false"', '"yes please"', "0", "1", "null", "[]"])
def test_a_boolean_must_be_a_json_boolean(text: str) -> None:
    # `force: "false"` used to be truthy and removed a running container (issue 18).
    with pytest.raises(InvalidArgument, match="must be true or false"):
        api.decode_args(rq.ContainerRm, {"container": "x", "force": json.loads(text)})


def test_a_string_is_never_coerced() -> None:
    with pytest.raises(InvalidArgument, match="'name' must be a string"):
        api.decode_args(rq.NetworkCreate, {"name": 5})


def test_null_is_refused_where_the_argument_is_not_optional() -> None:
    with pytest.raises(InvalidArgument, match="'network' must be a string"):
        api.decode_args(rq.ContainerCreate, {"image": "a", "network": None})


def test_missing_and_unknown_arguments_are_named() -> None:
    with pytest.raises(InvalidArgument, match="missing argument 'container'"):
        api.decode_args(rq.ContainerStop, {})
    with pytest.raises(InvalidArgument, match=r"unknown argument .forc. for container\.rm"):
        api.decode_args(rq.ContainerRm, {"container": "x", "forc": True})


@pytest.mark.parametrize(
    "value", [-1, 3600.5, 10**6, math.inf, -math.inf, math.nan, True, "10", None]
)
def test_stop_timeout_is_a_bounded_finite_number(value: Any) -> None:
    with pytest.raises(InvalidArgument, match="'timeout' must be a number"):
        api.decode_args(rq.ContainerStop, {"container": "x", "timeout": value})


def test_stop_timeout_infinity_from_the_wire_is_refused() -> None:
    # Python's json accepts the non-standard Infinity; it froze the agent before (issue 18).
    op, args = api.decode_request(
        b'{"op": "container.stop", "args": {"container": "x", "timeout": Infinity}}'
    )
    with pytest.raises(InvalidArgument):
        api.decode_args(rq.REQUESTS[op], args)


@pytest.mark.parametrize("value", [0, 10, 2.5, 3600])
def test_stop_timeouts_in_range_are_seconds(value: float) -> None:
    req = api.decode_args(rq.ContainerStop, {"container": "x", "timeout": value})
    assert req.timeout == float(value)


def test_the_range_rules_hold_for_requests_built_in_code_too() -> None:
    with pytest.raises(InvalidArgument):
        rq.ContainerStop("x", timeout=-5)
    with pytest.raises(InvalidArgument, match="KEY=VALUE"):
        rq.ContainerCreate(image="a", env=("=1",))


def test_lists_and_objects_of_strings_only() -> None:
    with pytest.raises(InvalidArgument, match="list of strings"):
        api.decode_args(rq.ContainerCreate, {"image": "a", "cmd": ["sleep", 1]})
    with pytest.raises(InvalidArgument, match="list of strings"):
        api.decode_args(rq.ContainerCreate, {"image": "a", "cmd": "sleep 1"})
    with pytest.raises(InvalidArgument, match="object of strings"):
        api.decode_args(rq.NetworkCreate, {"name": "n", "labels": {"a": 1}})


def test_op_names_are_unique_and_match_their_class() -> None:
    assert all(op == cls.OP for op, cls in rq.REQUESTS.items())
    # Every request class the module defines or brings in from a plane's own module (events,
    # watch, impair, trace) is served: none forgotten in REQUESTS.
    defined = {
        v
        for v in vars(rq).values()
        if isinstance(v, type)
        and issubclass(v, api.Request)
        and v.OP  # mixins such as the health/update argument groups name no operation
    }
    # …and so is every managers' request the agent forwards, and trace's.
    served = defined | set(rq.CLUSTER_REQUESTS) | set(TRACE_REQUESTS)
    assert set(rq.REQUESTS.values()) == served


def _default_instance(cls: type[api.Request]) -> api.Request:
    import dataclasses

    hints = typing.get_type_hints(cls)
    # A valid value of each required field's type (a str unless the type says otherwise).
    samples: dict[object, object] = {int: 1, float: 1.0, bool: False}

    def sample(hint: object) -> object:
        if typing.get_origin(hint) is tuple:
            return ("x",)
        return samples.get(hint, "x")

    required = {
        f.name: sample(hints[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return cls(**required)


@pytest.mark.parametrize("cls", list(rq.REQUESTS.values()), ids=list(rq.REQUESTS))
def test_every_request_survives_the_wire(cls: type[api.Request]) -> None:
    req = _default_instance(cls)
    op, args = api.decode_request(api.encode_request(req.OP, req.to_args()).strip())
    assert api.decode_args(rq.REQUESTS[op], args) == req


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@given(
    op=st.sampled_from(sorted(rq.REQUESTS)),
    args=st.dictionaries(
        st.sampled_from(
            [
                "container",
                "network",
                "name",
                "force",
                "timeout",
                "cmd",
                "labels",
                "image",
                "add",
                "ip",
                "all",
                "node",
                "x",
            ]
        ),
        json_values,
        max_size=5,
    ),
)
def test_any_json_arguments_give_a_request_or_invalid_argument(
    op: str, args: dict[str, Any]
) -> None:
    try:
        req = api.decode_args(rq.REQUESTS[op], args)
    except InvalidArgument:
        return
    assert isinstance(req, rq.REQUESTS[op])
