"""`ps --format '{{.Networks}}'` and `'{{.CreatedAt}}'`, docker's fields the web view's
containers table shows (NETWORKS): the agent's ps rows lacked them, so the templates failed
with "can't evaluate field Networks". Sans-IO: records in, rows out."""

from __future__ import annotations

from overlaynet.agent import views
from overlaynet.cli import formats
from overlaynet.cli.gotemplate import render
from overlaynet.model import Container, Driver, Endpoint, Network, Status

T0 = "2026-11-30T13:33:00.123456Z"
NOW = 1_800_000_000.0


def net(nid: str, name: str, driver: Driver = Driver.BRIDGE) -> Network:
    return Network(nid * 64, name, driver, T0)


NETS = {n.id: n for n in (net("a", "uinet", Driver.OVERLAY), net("b", "bridge"), net("c", "host"))}


def container(name: str, mode: str, *nets: str) -> Container:
    eps = [Endpoint(f"{i}" * 64, n * 64, f"eth{i}") for i, n in enumerate(nets)]
    return Container(name * 64, name, "alpine", ["sh"], T0, eps, mode, status=Status.RUNNING)


def field(c: Container, template: str) -> str:
    (row,) = views.container_rows([c], True, NOW, NETS)
    return render(template, formats.container_context(row))


def test_networks_are_the_endpoints_network_names_sorted() -> None:
    assert field(container("x", "uinet", "b", "a"), "{{.Networks}}") == "bridge,uinet"


def test_host_mode_names_host() -> None:
    assert field(container("h", "host"), "{{.Networks}}") == "host"


def test_created_at_is_gos_time_string() -> None:
    assert field(container("x", "bridge", "b"), "{{.CreatedAt}}") == "2026-11-30 13:33:00 +0000 UTC"
