"""--filter as dockerd applies it: OR within a key, AND across keys, label AND, closed sets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.cli import filters
from overlaynet.cli.filters import IMAGES, FilterError, Filters, parse_filter

NETS: list[dict[str, Any]] = [
    {"id": "17e3aa", "name": "bridge", "driver": "bridge", "scope": "local", "labels": {}},
    {"id": "6ed5bb", "name": "host", "driver": "host", "scope": "local", "labels": {}},
    {
        "id": "9a1fcc",
        "name": "mybridge",
        "driver": "bridge",
        "scope": "local",
        "labels": {"a": "1"},
    },
    {
        "id": "0f0fdd",
        "name": "myoverlay",
        "driver": "overlay",
        "scope": "swarm",
        "labels": {"a": "1", "b": "2"},
    },
]
CONTAINERS: list[dict[str, Any]] = [
    {"id": "aaa111", "names": "alpine_host", "state": "running", "image": "alpine"},
    {"id": "bbb222", "names": "alpine_client", "state": "exited", "image": "alpine:latest"},
    {"id": "ccc333", "names": "web", "state": "created", "image": "overlaynet/web"},
]
NODES: list[dict[str, Any]] = [
    {"id": "x1abc", "hostname": "node1", "role": "manager"},
    {"id": "y2def", "hostname": "node2", "role": "worker"},
    {"id": "z3ghi", "hostname": "node3", "role": "worker"},
]


def names(kind: filters.Kind, rows: list[dict[str, Any]], *specs: str) -> list[str]:
    picked = kind.select(Filters.of(filters.parse_filter(s) for s in specs), rows)
    return [str(r.get("name") or r.get("names") or r.get("hostname")) for r in picked]


def test_no_filter_keeps_everything() -> None:
    assert names(filters.NETWORKS, NETS) == ["bridge", "host", "mybridge", "myoverlay"]


def test_repeated_keys_are_alternatives() -> None:
    got = names(filters.NETWORKS, NETS, "driver=host", "driver=overlay")
    assert got == ["host", "myoverlay"]


def test_different_keys_must_all_hold() -> None:
    assert names(filters.NETWORKS, NETS, "driver=bridge", "name=my") == ["mybridge"]


def test_name_is_an_unanchored_pattern_and_driver_is_exact() -> None:
    assert names(filters.NETWORKS, NETS, "name=bridge") == ["bridge", "mybridge"]
    assert names(filters.NETWORKS, NETS, "name=^my.*y$") == ["myoverlay"]
    assert names(filters.NETWORKS, NETS, "driver=bri") == []


def test_every_label_given_must_be_on_the_network() -> None:
    assert names(filters.NETWORKS, NETS, "label=a") == ["mybridge", "myoverlay"]
    assert names(filters.NETWORKS, NETS, "label=a", "label=b=2") == ["myoverlay"]
    assert names(filters.NETWORKS, NETS, "label=b=3") == []


def test_type_custom_and_builtin() -> None:
    assert names(filters.NETWORKS, NETS, "type=custom") == ["mybridge", "myoverlay"]
    assert names(filters.NETWORKS, NETS, "type=builtin", "scope=local") == ["bridge", "host"]


def test_network_label_filter_needs_labels_from_the_agent() -> None:
    rows = [{k: v for k, v in n.items() if k != "labels"} for n in NETS]
    with pytest.raises(FilterError, match="labels"):
        names(filters.NETWORKS, rows, "label=a")


def test_container_status_name_and_ancestor() -> None:
    assert names(filters.CONTAINERS, CONTAINERS, "status=running") == ["alpine_host"]
    assert names(filters.CONTAINERS, CONTAINERS, "status=running", "status=exited") == [
        "alpine_host",
        "alpine_client",
    ]
    assert names(filters.CONTAINERS, CONTAINERS, "name=^/alpine") == [
        "alpine_host",
        "alpine_client",
    ]
    assert names(filters.CONTAINERS, CONTAINERS, "ancestor=alpine:latest") == [
        "alpine_host",
        "alpine_client",
    ]
    assert names(filters.CONTAINERS, CONTAINERS, "id=bbb") == ["alpine_client"]
    assert filters.status_implies_all(Filters.of([("status", "exited")]))
    assert not filters.status_implies_all(Filters.of([("name", "x")]))


def test_node_role_and_name_prefix() -> None:
    assert names(filters.NODES, NODES, "role=worker") == ["node2", "node3"]
    assert names(filters.NODES, NODES, "name=node1", "name=node3") == ["node1", "node3"]
    assert names(filters.NODES, NODES, "id=y2") == ["node2"]
    assert names(filters.NODES, NODES, "name=ode") == []  # a prefix, not a pattern


@pytest.mark.parametrize(
    ("kind", "spec", "says"),
    [
        (filters.NETWORKS, "frob=1", "invalid filter 'frob'"),
        (filters.NETWORKS, "type=other", "invalid filter 'type=other'"),
        (filters.CONTAINERS, "status=sleeping", "invalid filter 'status=sleeping'"),
        (filters.NODES, "role=boss", "invalid filter 'role=boss'"),
        (filters.CONTAINERS, "network=x", "not supported"),
    ],
)
def test_bad_filters_are_refused_with_their_name(kind: filters.Kind, spec: str, says: str) -> None:
    with pytest.raises(FilterError, match=says):
        kind.select(Filters.of([filters.parse_filter(spec)]), [])


def test_the_filter_argument_needs_an_equals_sign_and_is_normalised() -> None:
    with pytest.raises(FilterError, match=r"expected name=value"):
        filters.parse_filter("driver")
    assert filters.parse_filter(" Driver = bridge ") == ("driver", "bridge")


@given(
    st.lists(st.sampled_from(["bridge", "host", "overlay", "null"]), max_size=4),
    st.lists(st.sampled_from(["local", "swarm"]), max_size=2),
)
def test_selection_is_or_within_and_across(drivers: list[str], scopes: list[str]) -> None:
    pairs = [("driver", d) for d in drivers] + [("scope", s) for s in scopes]
    got = filters.NETWORKS.select(Filters.of(pairs), NETS)
    expected = [
        n
        for n in NETS
        if (not drivers or n["driver"] in drivers) and (not scopes or n["scope"] in scopes)
    ]
    assert got == expected


IMAGE_ROWS = [
    {"Repository": "alpine", "Tag": "latest"},
    {"Repository": "dockersamples/atsea-db", "Tag": "mssql"},
    {"Repository": "overlaynet/web", "Tag": "latest"},
]


def test_image_reference_filters_are_globs_over_the_name_or_name_tag() -> None:
    # The README says image ls takes --filter: it was an unknown flag.
    def names(*specs: str) -> list[str]:
        chosen = IMAGES.select(Filters.of(parse_filter(s) for s in specs), IMAGE_ROWS)
        return [str(r["Repository"]) for r in chosen]

    assert names("reference=alpine") == ["alpine"]
    assert names("reference=dockersamples/*") == ["dockersamples/atsea-db"]
    assert names("reference=*:latest") == ["alpine"]  # `*` stops at `/`, as Go's path.Match
    assert names("reference=overlaynet/web:latest", "reference=alpine") == [
        "alpine",
        "overlaynet/web",
    ]
    assert names("dangling=true") == [] and len(names("dangling=false")) == 3


def test_image_references_take_go_classes_and_escapes_and_dangling_takes_1_and_0() -> None:
    # `[a-z]` and `\\` were matched as the characters themselves (reference=alp[a-z]ne chose
    # nothing; docker's path.Match chooses alpine), and dangling=1/0 were refused.
    def names(*specs: str) -> list[str]:
        chosen = IMAGES.select(Filters.of(parse_filter(s) for s in specs), IMAGE_ROWS)
        return [str(r["Repository"]) for r in chosen]

    assert names("reference=alp[a-z]ne") == ["alpine"]
    assert names("reference=alp[^0-9]ne:lates[t]") == ["alpine"]
    assert names("reference=alp[^a-z]ne") == []
    assert names("reference=\\alpine") == ["alpine"]  # `\\a` is a
    assert names("reference=alpine[z-a]") == []  # an empty range matches nothing
    assert names("dangling=1") == [] and len(names("dangling=0")) == 3
    for bad in ("alp[", "alpine\\", "alp[]ne", "a[b-]"):
        with pytest.raises(FilterError, match="syntax error in pattern"):
            names(f"reference={bad}")
    with pytest.raises(FilterError, match=r"invalid filter 'dangling=\[0 true\]'"):
        names("dangling=true", "dangling=0")


def test_image_filters_docker_refuses_are_refused() -> None:
    for spec, says in (("bogus=1", "invalid filter 'bogus'"), ("dangling=maybe", "dangling")):
        with pytest.raises(FilterError, match=says):
            IMAGES.check(Filters.of([parse_filter(spec)]))


def test_image_ls_and_images_take_filter_on_the_command_line() -> None:
    from overlaynet.cli import main as cli

    for argv in (
        ["image", "ls", "--filter", "reference=alpine"],
        ["images", "-f", "dangling=false"],
    ):
        ns = cli.build_parser().parse_args(argv)
        assert ns.filter and ns.func is cli.cmd_image_ls
