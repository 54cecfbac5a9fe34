"""Root folders built from images: the shared layer, each container's own part, removal.

No mounts here (the launcher mounts; tests/integration/images runs it), so no root needed."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from overlaynet.images import catalog, rootfs
from overlaynet.images.catalog import ImageFile

pytestmark = pytest.mark.skipif(
    not rootfs.BUSYBOX.is_file(), reason="needs Debian's busybox-static (/bin/busybox)"
)


@pytest.fixture
def images() -> catalog.Catalog:
    return catalog.load(environ={})


def test_busybox_layer_has_applets_etc_and_placeholders(
    images: catalog.Catalog, tmp_path: Path
) -> None:
    fs = rootfs.prepare(images.resolve("alpine"), tmp_path / "c1", "abc123", tmp_path / "layers")
    assert fs is not None
    lower = fs.lower
    for applet in ("sh", "top", "ping", "nslookup", "wget", "nc", "httpd", "ip", "cat", "ls"):
        assert os.readlink(lower / "bin" / applet) == "busybox", applet
    assert (lower / "usr/bin/top").resolve() == (lower / "bin/top").resolve()
    assert "root:x:0:0:root:/root:/bin/sh" in (lower / "etc/passwd").read_text()
    for name in rootfs.DEVICES:
        assert (lower / "dev" / name).is_file(), name  # the launcher binds host nodes here
    assert stat.S_IMODE((lower / "tmp").stat().st_mode) == 0o1777
    assert (fs.upper / "etc/hostname").read_text() == "abc123\n"
    assert fs.work.is_dir() and fs.target.is_dir()
    assert fs.target.parent == tmp_path / "c1" / rootfs.ROOTFS


def test_containers_of_one_image_share_its_layer(images: catalog.Catalog, tmp_path: Path) -> None:
    layers = tmp_path / "layers"
    a = rootfs.prepare(images.resolve("alpine"), tmp_path / "a", "a", layers)
    b = rootfs.prepare(images.resolve("alpine"), tmp_path / "b", "b", layers)
    web = rootfs.prepare(images.resolve("overlaynet/web"), tmp_path / "w", "w", layers)
    assert a is not None and b is not None and web is not None
    assert a.lower == b.lower
    assert a.upper != b.upper
    assert web.lower != a.lower
    assert len([p for p in layers.iterdir() if not p.name.startswith(".")]) == 2


def test_image_files_are_copied_with_their_mode(images: catalog.Catalog, tmp_path: Path) -> None:
    image = images.resolve("dockersamples/atsea-db:mssql")
    fs = rootfs.prepare(image, tmp_path / "db", "db", tmp_path / "layers")
    assert fs is not None
    script = fs.lower / "usr/local/bin/atsea-db"
    assert "1433" in script.read_text()
    assert stat.S_IMODE(script.stat().st_mode) == 0o755


def test_a_changed_recipe_gets_a_new_layer(images: catalog.Catalog, tmp_path: Path) -> None:
    layers = tmp_path / "layers"
    image = images.resolve("busybox")
    first = rootfs.prepare(image, tmp_path / "a", "a", layers)
    src = tmp_path / "motd"
    src.write_text("hello\n")
    extra = ImageFile(PurePosixPath("/etc/motd"), src, 0o644)
    changed = replace(image, files=(*image.files, extra))
    second = rootfs.prepare(changed, tmp_path / "b", "b", layers)
    assert first is not None and second is not None
    assert first.lower != second.lower
    assert not (first.lower / "etc/motd").exists()
    assert (second.lower / "etc/motd").read_text() == "hello\n"


def test_an_image_file_replaces_an_applet_link_not_busybox(tmp_path: Path) -> None:
    src = tmp_path / "mytop"
    src.write_text("#!/bin/sh\necho mine\n")
    image = replace(
        catalog.load(environ={}).resolve("busybox"),
        files=(ImageFile(PurePosixPath("/bin/top"), src, 0o755),),
    )
    fs = rootfs.prepare(image, tmp_path / "c", "c", tmp_path / "layers")
    assert fs is not None
    assert not (fs.lower / "bin/top").is_symlink()
    assert (fs.lower / "bin/top").read_text() == src.read_text()
    assert (fs.lower / "bin/busybox").stat().st_size == 0  # placeholder untouched


def test_host_image_has_no_root_folder(images: catalog.Catalog, tmp_path: Path) -> None:
    assert rootfs.prepare(images.resolve("host"), tmp_path / "h", "h", tmp_path / "l") is None
    assert not (tmp_path / "h").exists()


def test_prepare_keeps_a_restarted_containers_files(
    images: catalog.Catalog, tmp_path: Path
) -> None:
    image = images.resolve("alpine")
    fs = rootfs.prepare(image, tmp_path / "c", "c", tmp_path / "layers")
    assert fs is not None
    (fs.upper / "root").mkdir()
    (fs.upper / "root/notes").write_text("kept")
    again = rootfs.prepare(image, tmp_path / "c", "c", tmp_path / "layers")
    assert again == fs
    assert (fs.upper / "root/notes").read_text() == "kept"


def test_remove_leaves_the_container_folder_clean_and_the_layer(
    images: catalog.Catalog, tmp_path: Path
) -> None:
    container = tmp_path / "c"
    container.mkdir()
    (container / "hosts").write_text("runtime's own file\n")
    fs = rootfs.prepare(images.resolve("alpine"), container, "c", tmp_path / "layers")
    assert fs is not None
    rootfs.remove(container)
    assert sorted(p.name for p in container.iterdir()) == ["hosts"]
    assert fs.lower.is_dir()
    rootfs.remove(container)  # idempotent


def test_size_is_busybox_plus_the_images_files(images: catalog.Catalog) -> None:
    bb = rootfs.BUSYBOX.stat().st_size
    assert rootfs.size(images.resolve("alpine")) == bb
    web = images.resolve("overlaynet/web")
    assert rootfs.size(web) == bb + sum(f.source.stat().st_size for f in web.files)
    assert rootfs.size(images.resolve("host")) is None  # the host's files: nothing of its own
