"""The image catalog: names and tags, unknown names, user files, and malformed entries."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.errors import InvalidArgument, NotFound
from overlaynet.images import catalog
from overlaynet.images.catalog import (
    BUILTIN_CATALOG,
    CatalogError,
    InvalidReference,
    RootKind,
    UnknownImage,
)

TUTORIAL_IMAGES = (
    "alpine",
    "busybox",
    "host",
    "overlaynet/web",
    "overlaynet/echo",
    "dockersamples/atsea-db:mssql",
    "dockersamples/atsea-appserver:1.0",
)


@pytest.fixture
def builtin() -> catalog.Catalog:
    return catalog.load(environ={})


@pytest.mark.parametrize("ref", TUTORIAL_IMAGES)
def test_builtin_catalog_has_the_tutorial_images(builtin: catalog.Catalog, ref: str) -> None:
    image = builtin.resolve(ref)
    assert image.catalog == BUILTIN_CATALOG
    assert image.cmd, "every built-in image has a default command"


def test_alpine_and_alpine_latest_and_docker_hub_spelling_are_one_image(
    builtin: catalog.Catalog,
) -> None:
    same = {builtin.resolve(r) for r in ("alpine", "alpine:latest", "docker.io/library/alpine")}
    assert len(same) == 1
    assert builtin.resolve("alpine").reference == "alpine:latest"


def test_alpine_and_busybox_run_busybox_and_host_runs_the_host(builtin: catalog.Catalog) -> None:
    assert builtin.resolve("alpine").root is RootKind.BUSYBOX
    assert builtin.resolve("busybox").root is RootKind.BUSYBOX
    assert builtin.resolve("host").root is RootKind.HOST


def test_service_images_expose_their_ports(builtin: catalog.Catalog) -> None:
    assert builtin.resolve("overlaynet/web").ports == ("80/tcp",)
    assert builtin.resolve("overlaynet/echo").ports == ("7/tcp",)
    assert builtin.resolve("dockersamples/atsea-db:mssql").ports == ("1433/tcp",)
    assert builtin.resolve("dockersamples/atsea-appserver:1.0").ports == ("8080/tcp",)


def test_a_tag_the_catalog_lacks_is_unknown(builtin: catalog.Catalog) -> None:
    with pytest.raises(UnknownImage):
        builtin.resolve("alpine:3.19")
    with pytest.raises(UnknownImage):
        builtin.resolve("dockersamples/atsea-db")  # only :mssql exists, as in the tutorial


def test_unknown_image_names_the_catalog_and_is_not_found(builtin: catalog.Catalog) -> None:
    with pytest.raises(UnknownImage) as caught:
        builtin.resolve("nginx")
    message = str(caught.value)
    assert "'nginx:latest'" in message
    assert str(BUILTIN_CATALOG) in message
    assert "alpine:latest" in message  # what the user could have meant
    assert isinstance(caught.value, NotFound)  # the API maps it to Docker's not-found


@pytest.mark.parametrize("ref", ["Alpine", "alpine@sha256:abcd", "", "alpine:", "a b", "-x"])
def test_malformed_references_are_invalid_arguments(builtin: catalog.Catalog, ref: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        builtin.resolve(ref)
    assert isinstance(caught.value, InvalidArgument)
    assert "invalid reference format" in str(caught.value)


_COMPONENT = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8})?", fullmatch=True)
_TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(st.lists(_COMPONENT, min_size=1, max_size=3), _TAGS)
def test_name_and_tag_split_back_out(components: list[str], tag: str) -> None:
    name = "/".join(components)
    if name.startswith(("library/", "docker.io/")):
        return  # prefixes Docker drops; covered by the alpine spelling test
    assert catalog.split_reference(f"{name}:{tag}") == (name, tag)
    assert catalog.split_reference(name) == (name, "latest")


@given(st.text(max_size=40))
def test_any_text_is_a_reference_or_an_invalid_reference(text: str) -> None:
    try:
        name, tag = catalog.split_reference(text)
    except InvalidReference:
        return
    assert name and tag


def _user_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "images.toml"
    path.write_text(text)
    return path


def test_user_file_from_the_environment_adds_and_overrides_images(tmp_path: Path) -> None:
    (tmp_path / "hello.sh").write_text("#!/bin/sh\necho hello\n")
    path = _user_file(
        tmp_path,
        """
[image."acme/hello:2"]
cmd = ["/usr/local/bin/hello"]
ports = ["9000"]
files = [{ path = "/usr/local/bin/hello", source = "hello.sh", mode = 0o755 }]

[image.alpine]
root = "busybox"
cmd = ["top"]
""",
    )
    cat = catalog.load(environ={catalog.CATALOG_ENV: str(path)})
    hello = cat.resolve("acme/hello:2")
    assert hello.root is RootKind.BUSYBOX
    assert hello.ports == ("9000/tcp",)
    assert hello.files[0].source == tmp_path / "hello.sh"  # relative to the user's file
    assert hello.files[0].mode == 0o755
    assert cat.resolve("alpine").cmd == ("top",)
    assert cat.resolve("alpine").catalog == path
    assert cat.resolve("busybox").catalog == BUILTIN_CATALOG  # the rest stays
    assert cat.sources == (BUILTIN_CATALOG, path)
    with pytest.raises(UnknownImage) as caught:
        cat.resolve("nope")
    assert str(path) in str(caught.value)


def test_a_user_file_named_but_missing_is_a_catalog_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(CatalogError, match=r"absent\.toml"):
        catalog.load(environ={catalog.CATALOG_ENV: str(missing)})


def test_a_user_file_whose_source_file_is_missing_is_a_catalog_error(tmp_path: Path) -> None:
    path = _user_file(
        tmp_path, '[image.x]\nfiles = [{ path = "/x", source = "gone.sh" }]\ncmd = ["/x"]\n'
    )
    with pytest.raises(CatalogError, match=r"gone\.sh"):
        catalog.load(user_file=path)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[image.x\n", "not valid TOML"),
        ("[images.x]\n", "unknown top-level keys"),
        ('[image.x]\nentrypoint = ["sh"]\n', "unknown keys"),
        ('[image.x]\nroot = "debian"\n', "root must be one of"),
        ('[image.x]\ncmd = "sh"\n', "expected a list"),
        ("[image.x]\ncmd = [1]\n", "list of strings"),
        ('[image.x]\nenv = ["NOEQUALS"]\n', "KEY=VALUE"),
        ('[image.x]\nports = ["http"]\n', "is not PORT"),
        ('[image.x]\nports = ["70000"]\n', "is not PORT"),
        ('[image.x]\nfiles = [{ path = "etc/x", source = "a" }]\n', "must be absolute"),
        ('[image.x]\nfiles = [{ path = "/etc/../x", source = "a" }]\n', "must be absolute"),
        ('[image.x]\nfiles = [{ path = "/proc/x", source = "a" }]\n', "is under /proc"),
        ('[image.x]\nfiles = [{ path = "/x" }]\n', "each file is"),
        ('[image.x]\nroot = "host"\nfiles = [{ path = "/x", source = "a" }]\n', "cannot add"),
        ('[image.x]\n[image."x:latest"]\n', "defined twice"),
        ("[image.X]\n", "lowercase"),
    ],
)
def test_malformed_entries_name_the_file_and_the_problem(text: str, why: str) -> None:
    source = Path("/etc/overlaynet/images.toml")
    with pytest.raises(CatalogError) as caught:
        catalog.parse(text, source)
    assert why in str(caught.value)
    assert str(source) in str(caught.value)


def test_container_env_overrides_the_image_env(builtin: catalog.Catalog) -> None:
    image = builtin.resolve("alpine")
    env = image.environment(["PATH=/opt/bin", "A=1"])
    assert env == ["PATH=/opt/bin", "A=1"]
    assert image.environment() == list(image.env)


def test_image_list_is_sorted_by_reference(builtin: catalog.Catalog) -> None:
    refs = [i.reference for i in builtin.list()]
    assert refs == sorted(refs)
    assert "dockersamples/atsea-db:mssql" in refs
