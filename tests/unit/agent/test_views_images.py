"""`image ls` rows and `inspect`'s State.Pid as the views shape them (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlaynet.agent import requests as rq
from overlaynet.agent import views
from overlaynet.errors import InvalidArgument
from overlaynet.images import catalog
from overlaynet.model import Container, Status

TOML = """
[image.alpine]
cmd = ["/bin/sh"]
[image."dockersamples/atsea-db:mssql"]
cmd = ["db"]
ports = ["1433"]
[image.host]
root = "host"
cmd = ["sleep", "infinity"]
"""


def _images() -> list[catalog.Image]:
    return list(catalog.parse(TOML, Path("/x/catalog.toml")).values())


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (999, "999B"), (1000, "1kB"), (1_982_000, "1.982MB"), (5_590_000, "5.59MB")],
)
def test_human_size_is_dockers(size: int, text: str) -> None:
    assert views.human_size(size) == text


def test_image_rows_in_dockers_fields() -> None:
    images = _images()
    rows = views.image_rows(images, {"alpine:latest": 2_000_000, "host:latest": None})
    by_repo = {r["Repository"]: r for r in rows}
    assert by_repo["alpine"]["Tag"] == "latest" and by_repo["alpine"]["Size"] == "2MB"
    assert by_repo["host"]["Size"] == "N/A"  # adds nothing of its own
    assert by_repo["dockersamples/atsea-db"]["Tag"] == "mssql"
    assert by_repo["dockersamples/atsea-db"]["Ports"] == ["1433/tcp"]
    assert all(r["ID"].startswith("sha256:") and len(r["ID"]) == 71 for r in rows)
    assert len({r["ID"] for r in rows}) == len(rows)


def test_image_id_follows_the_recipe_only() -> None:
    a = _images()[0]
    again = catalog.parse(TOML, Path("/elsewhere/catalog.toml"))["alpine:latest"]
    assert views.image_id(a) == views.image_id(again)  # same recipe, same id anywhere
    changed = catalog.parse(TOML.replace('"/bin/sh"', '"ash"'), Path("/x"))["alpine:latest"]
    assert views.image_id(changed) != views.image_id(a)


def test_state_pid_is_the_exec_pid_and_zero_unless_running() -> None:
    c = Container(id="a" * 64, name="c", image="alpine", cmd=["top"], created="now", pid=100)
    c.status = Status.RUNNING
    assert views.container_doc(c, {}, "/ns", 4242)["State"]["Pid"] == 4242
    c.status = Status.EXITED
    assert views.container_doc(c, {}, "/ns", 4242)["State"]["Pid"] == 0


def test_attach_needs_an_interactive_start() -> None:
    with pytest.raises(InvalidArgument, match="run -i"):
        rq.ContainerCreate(image="alpine", attach=True)
    rq.ContainerCreate(image="alpine", attach=True, interactive=True, start=True)
