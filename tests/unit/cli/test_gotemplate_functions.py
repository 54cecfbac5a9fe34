"""The template features --format users type: trim markers, functions, methods with arguments."""

from __future__ import annotations

import pytest

from overlaynet.cli.gotemplate import HEADER_FUNCTIONS, TemplateError, docker_json, render

DOC = {
    "Name": "web",
    "Tags": ["a", "b"],
    "Label": lambda key: {"tier": "front"}.get(key, ""),
    "Empty": "",
}


def test_trim_markers_remove_the_white_space_beside_them() -> None:
    assert render("a  {{- .Name -}}  b", DOC) == "awebb"
    assert render("{{range .Tags}}\n  {{- .}}{{end}}", DOC) == "ab"


def test_comments_print_nothing() -> None:
    assert render("x{{/* why */}}y", DOC) == "xy"


def test_a_method_takes_arguments() -> None:
    assert render('{{.Label "tier"}}|{{.Label "none"}}', DOC) == "front|"
    with pytest.raises(TemplateError, match="not a method"):
        render('{{.Name "x"}}', DOC)


def test_dockers_string_functions() -> None:
    assert render('{{join .Tags ","}} {{upper .Name}} {{title "hello world"}}', DOC) == (
        "a,b WEB Hello World"
    )
    assert render("[{{pad .Name 1 2}}][{{pad .Empty 1 2}}]", DOC) == "[ web  ][]"
    assert render("{{truncate .Name 2}} {{len .Tags}}", DOC) == "we 2"


def test_json_leaves_methods_out() -> None:
    assert docker_json({"B": 1, "A": "x", "Label": lambda k: k}) == '{"B":1,"A":"x"}'


def test_header_functions_keep_the_header() -> None:
    header = {"Name": "NAME", "Tags": "TAGS"}
    assert render('{{upper .Name}} {{join .Tags ","}}', header, HEADER_FUNCTIONS) == "NAME TAGS"


def test_keep_partial_returns_what_came_before_an_error() -> None:
    assert render("{{.Name}} {{.Nope}} x", {"Name": "N"}, keep_partial=True) == "N "
    with pytest.raises(TemplateError):
        render("{{.Name}} {{.Nope}} x", {"Name": "N"})


def test_range_over_a_string_is_an_error() -> None:
    with pytest.raises(TemplateError, match="range can't iterate"):
        render("{{range .Name}}x{{end}}", DOC)
