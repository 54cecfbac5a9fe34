"""docker inspect -f templates."""

from __future__ import annotations

import pytest

from overlaynet.cli.gotemplate import TemplateError, go_format, render

DOC = {
    "Name": "/a1",
    "State": {"Running": True, "Pid": 42},
    "NetworkSettings": {
        "Networks": {
            "mybridge": {"IPAddress": "172.18.0.2", "Aliases": None},
            "bridge": {"IPAddress": "172.17.0.2", "Aliases": ["x", "y"]},
        }
    },
}


def test_field_paths() -> None:
    assert render("{{.Name}} {{.State.Pid}} {{.State.Running}}", DOC) == "/a1 42 true"


def test_maps_print_like_go() -> None:
    out = render("{{.NetworkSettings.Networks.bridge}}", DOC)
    assert out == "map[Aliases:[x y] IPAddress:172.17.0.2]"
    assert go_format(None) == "<nil>"


def test_range_over_a_map_visits_values_in_key_order() -> None:
    tmpl = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    assert render(tmpl, DOC) == "172.17.0.2 172.18.0.2 "


def test_json_and_index() -> None:
    assert render("{{json .State}}", DOC) == '{"Running":true,"Pid":42}'
    assert render('{{index .NetworkSettings.Networks "mybridge"}}', DOC).startswith("map[")


def test_if_else() -> None:
    assert render("{{if .State.Running}}up{{else}}down{{end}}", DOC) == "up"
    assert (
        render("{{if .NetworkSettings.Networks.mybridge.Aliases}}a{{else}}none{{end}}", DOC)
        == "none"
    )


@pytest.mark.parametrize(
    "bad", ["{{.Nope.Deeper}}", "{{range .Name}}", "{{end}}", "{{frob .Name}}", "{{else}}"]
)
def test_bad_templates_raise_template_error(bad: str) -> None:
    with pytest.raises(TemplateError):
        render(bad, DOC)
