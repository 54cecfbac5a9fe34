"""--format as docker prints it: default tables, json lines, Go templates, table headers."""

from __future__ import annotations

import json

import pytest

from overlaynet.cli import formats
from overlaynet.cli.gotemplate import TemplateError

NET_ROWS = [
    {"id": "a" * 64, "name": "bridge", "driver": "bridge", "scope": "local"},
    {"id": "b" * 64, "name": "myoverlay", "driver": "overlay", "scope": "swarm"},
]
CONTAINER_ROW = {
    "id": "c" * 64,
    "image": "alpine",
    "command": '"top"',
    "created": "2 minutes ago",
    "status": "Up 2 minutes",
    "ports": "",
    "names": "alpine_host",
    "state": "running",
}
NODE_ROWS = [
    {
        "id": "n1aaaaaaaaaaaaaaaaaaaaaaa",
        "self": True,
        "hostname": "node1",
        "status": "Ready",
        "availability": "active",
        "manager_status": "Leader",
        "role": "manager",
    },
    {
        "id": "n2aaaaaaaaaaaaaaaaaaaaaaa",
        "self": False,
        "hostname": "node2",
        "status": "Down",
        "availability": "drain",
        "manager_status": "",
        "role": "worker",
    },
]


def networks(source: str | None, quiet: bool = False, trunc: bool = True) -> str:
    contexts = [formats.network_context(r, trunc) for r in NET_ROWS]
    return formats.render(formats.NETWORKS, source, contexts, quiet)


def test_default_network_table_is_dockers_layout() -> None:
    assert networks(None).splitlines() == [
        "NETWORK ID     NAME        DRIVER    SCOPE",
        "aaaaaaaaaaaa   bridge      bridge    local",
        "bbbbbbbbbbbb   myoverlay   overlay   swarm",
    ]
    assert networks("table") == networks(None)


def test_quiet_prints_ids_and_no_trunc_prints_them_whole() -> None:
    assert networks(None, quiet=True).splitlines() == ["a" * 12, "b" * 12]
    assert networks(None, quiet=True, trunc=False).splitlines() == ["a" * 64, "b" * 64]


def test_a_template_prints_one_line_per_row_without_header() -> None:
    assert networks("{{.Name}}") == "bridge\nmyoverlay"
    # Typed in a shell, \t arrives as backslash-t: docker turns it into a tab.
    assert networks("{{.ID}}\\t{{.Name}}") == "aaaaaaaaaaaa\tbridge\nbbbbbbbbbbbb\tmyoverlay"


def test_table_template_heads_columns_with_dockers_names() -> None:
    out = networks("table {{.ID}}\\t{{.Name}}").splitlines()
    assert out == ["NETWORK ID     NAME", "aaaaaaaaaaaa   bridge", "bbbbbbbbbbbb   myoverlay"]


def test_header_functions_leave_the_header_as_it_is() -> None:
    out = networks("table {{upper .Name}}\\t{{json .Driver}}").splitlines()
    assert out == ["NAME        DRIVER", 'BRIDGE      "bridge"', 'MYOVERLAY   "overlay"']


def test_json_is_one_compact_sorted_object_per_row() -> None:
    lines = networks("json").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["Name"] == "bridge" and first["ID"] == "a" * 12
    assert lines[0].startswith('{"Driver":"bridge","ID":')  # no spaces, keys in order
    assert list(first) == sorted(first)


def test_quiet_beats_a_custom_format_for_ps_but_not_for_network_ls() -> None:
    ctx = [formats.container_context(CONTAINER_ROW)]
    assert formats.render(formats.CONTAINERS, "{{.Names}}", ctx, quiet=True) == "c" * 12
    assert networks("{{.Name}}", quiet=True) == "bridge\nmyoverlay"


def test_default_ps_table() -> None:
    out = formats.render(formats.CONTAINERS, None, [formats.container_context(CONTAINER_ROW)])
    assert out.splitlines() == [
        "CONTAINER ID   IMAGE     COMMAND   CREATED         STATUS         PORTS     NAMES",
        'cccccccccccc   alpine    "top"     2 minutes ago   Up 2 minutes             alpine_host',
    ]


def test_ps_names_template_and_labels() -> None:
    ctx = formats.container_context(CONTAINER_ROW)
    assert formats.render(formats.CONTAINERS, "{{.Names}}", [ctx]) == "alpine_host"
    assert formats.render(formats.CONTAINERS, '{{.Label "x"}}|{{.Mounts}}', [ctx]) == "|"
    labelled = formats.container_context({**CONTAINER_ROW, "labels": {"b": "2", "a": "1"}})
    assert formats.render(formats.CONTAINERS, '{{.Labels}} {{.Label "b"}}', [labelled]) == (
        "a=1,b=2 2"
    )


def test_no_trunc_shows_the_whole_command_when_the_agent_sends_it() -> None:
    row = {**CONTAINER_ROW, "cmd": ["sh", "-c", "echo a very long command"]}
    assert formats.container_context(row)["Command"] == '"sh -c echo a very l…"'
    assert formats.container_context(row, trunc=False)["Command"] == (
        '"sh -c echo a very long command"'
    )


def test_a_field_the_agent_does_not_report_is_an_error_not_a_guess() -> None:
    ctx = [formats.container_context(CONTAINER_ROW)]
    with pytest.raises(TemplateError, match="Networks"):
        formats.render(formats.CONTAINERS, "{{.Networks}}", ctx)
    with_nets = [formats.container_context({**CONTAINER_ROW, "networks": ["bridge", "x"]})]
    assert formats.render(formats.CONTAINERS, "{{.Networks}}", with_nets) == "bridge,x"


def test_node_table_marks_self_and_pretty_prints_states() -> None:
    out = formats.render(formats.NODES, None, [formats.node_context(n) for n in NODE_ROWS])
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER", "STATUS"]
    assert lines[1].split() == [
        "n1aaaaaaaaaaaaaaaaaaaaaaa",
        "*",
        "node1",
        "Ready",
        "Active",
        "Leader",
    ]
    assert lines[2].split() == ["n2aaaaaaaaaaaaaaaaaaaaaaa", "node2", "Down", "Drain"]
    assert lines[0].index("HOSTNAME") == lines[1].index("node1") == lines[2].index("node2")


def test_node_templates_see_docker_fields() -> None:
    ctx = [formats.node_context(n) for n in NODE_ROWS]
    out = formats.render(formats.NODES, "{{.Hostname}} {{.Self}} {{.ManagerStatus}}", ctx)
    assert out == "node1 true Leader\nnode2 false "


def test_no_rows_prints_only_the_header_or_nothing() -> None:
    assert formats.render(formats.NETWORKS, None, []) == "NETWORK ID   NAME      DRIVER    SCOPE"
    assert formats.render(formats.NETWORKS, "{{.Name}}", []) == ""


def test_a_template_that_does_not_parse_raises() -> None:
    with pytest.raises(TemplateError):
        networks("{{if .Name}}")
    with pytest.raises(TemplateError):
        networks("{{frob .Name}}")
