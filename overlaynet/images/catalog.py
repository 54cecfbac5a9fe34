"""The image catalog: what an image name means (root filesystem, default command, ports, env).

Docker pulls an image; overlaynet looks its name up in a catalog file instead. The built-in
catalog is `catalog.toml` beside this module; a user file (`$OVERLAYNET_IMAGES`, else
`/etc/overlaynet/images.toml` when present) adds images or replaces built-in ones. Parsing is
pure (`parse`: text in, images out); only `load` reads files.

An entry, keyed by its reference (`name` or `name:tag`, tag `latest` when left out):

    [image."overlaynet/web"]
    root = "busybox"                 # "busybox": a busybox userland; "host": the host's files
    cmd = ["httpd", "-f", "-p", "80", "-h", "/srv/www"]
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    ports = ["80/tcp"]
    description = "HTTP server that says who served the request"
    files = [{ path = "/srv/www/cgi-bin/index.cgi", source = "scripts/web.cgi", mode = 0o755 }]

`source` is relative to the catalog file that names it.
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from overlaynet.errors import InvalidArgument, NotFound, Unavailable

BUILTIN_CATALOG = Path(__file__).with_name("catalog.toml")
# Where a host's administrator extends the catalog, and the variable that points elsewhere
# (as DOCKER_CONFIG does for docker's client configuration).
SYSTEM_CATALOG = Path("/etc/overlaynet/images.toml")
CATALOG_ENV = "OVERLAYNET_IMAGES"
DEFAULT_TAG = "latest"
# Docker's prefixes for the official images: `docker.io/library/alpine` is `alpine`.
_REGISTRY_PREFIXES = ("docker.io/library/", "docker.io/", "index.docker.io/library/", "library/")
# Docker's reference grammar (distribution/reference), lower-case path components joined by `/`,
# an optional tag of word characters, dots and dashes (at most 128).
_NAME = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Files an image adds may not land where the container's kernel file systems are mounted.
_RESERVED = ("proc", "sys", "dev")
_KEYS = frozenset({"root", "cmd", "env", "ports", "description", "files"})
_FILE_KEYS = frozenset({"path", "source", "mode"})
_PORT = re.compile(r"^[0-9]{1,5}(?:/(?:tcp|udp))?$")


class ImageError(Exception):
    """Anything wrong with an image name or a catalog; the message says which and where."""


class InvalidReference(ImageError, InvalidArgument):
    """A name that is not an image reference at all (`docker: invalid reference format`)."""


class UnknownImage(ImageError, NotFound):
    """A well-formed name the catalog does not have."""


class CatalogError(ImageError, Unavailable):
    """A catalog file that cannot be read or has a bad entry."""


class RootKind(enum.Enum):
    """How a container's root filesystem is made."""

    BUSYBOX = "busybox"  # a folder of busybox applets plus the image's files, entered by pivot_root
    HOST = "host"  # the host's own filesystem (today's behaviour: iperf3, dig, tcpdump)


@dataclass(frozen=True)
class ImageFile:
    """A file an image adds to its root filesystem."""

    path: PurePosixPath  # absolute, inside the container
    source: Path  # on the host
    mode: int


@dataclass(frozen=True)
class Image:
    name: str  # repository, e.g. `alpine`, `dockersamples/atsea-db`
    tag: str
    root: RootKind
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    ports: tuple[str, ...]  # `80/tcp`, Docker's ExposedPorts keys
    files: tuple[ImageFile, ...]
    description: str
    catalog: Path  # the file that defined it

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    def environment(self, overrides: Iterable[str] = ()) -> list[str]:
        """The image's env with the container's `-e KEY=VALUE` on top, as Docker merges them."""
        merged: dict[str, str] = {}
        for item in (*self.env, *overrides):
            key, _, value = item.partition("=")
            merged[key] = value
        return [f"{k}={v}" for k, v in merged.items()]


def split_reference(ref: str) -> tuple[str, str]:
    """`alpine` -> (`alpine`, `latest`); `docker.io/library/alpine:3` -> (`alpine`, `3`)."""
    if "@" in ref:
        raise InvalidReference(f"invalid reference format: {ref!r}: digests are not supported")
    name, tag = ref, DEFAULT_TAG
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref[: -len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
    for prefix in _REGISTRY_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if not _NAME.match(name):
        why = "repository name must be lowercase" if name.lower() != name else "bad name"
        raise InvalidReference(f"invalid reference format: {ref!r}: {why}")
    if not _TAG.match(tag):
        raise InvalidReference(f"invalid reference format: {ref!r}: bad tag {tag!r}")
    return name, tag


def parse(text: str, source: Path) -> dict[str, Image]:
    """The images of one catalog file, keyed `name:tag`; `source` names the file in errors and
    anchors relative file sources."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"{source}: not valid TOML: {e}") from None
    unknown = set(doc) - {"image"}
    if unknown:
        raise CatalogError(f"{source}: unknown top-level keys {sorted(unknown)}; use [image.NAME]")
    entries = doc.get("image", {})
    if not isinstance(entries, dict):
        raise CatalogError(f"{source}: `image` must be a table of images")
    images: dict[str, Image] = {}
    for ref, entry in entries.items():
        image = _parse_entry(ref, entry, source)
        if image.reference in images:
            raise CatalogError(f"{source}: image {image.reference} is defined twice")
        images[image.reference] = image
    return images


def _parse_entry(ref: str, entry: object, source: Path) -> Image:
    where = f"{source}: image {ref!r}"
    try:
        name, tag = split_reference(ref)
    except InvalidReference as e:
        raise CatalogError(f"{where}: {e}") from None
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: must be a table")
    extra = set(entry) - _KEYS
    if extra:
        raise CatalogError(f"{where}: unknown keys {sorted(extra)} (known: {sorted(_KEYS)})")
    try:
        root = RootKind(entry.get("root", RootKind.BUSYBOX.value))
    except ValueError:
        kinds = ", ".join(k.value for k in RootKind)
        raise CatalogError(f"{where}: root must be one of {kinds}") from None
    cmd = _strings(entry.get("cmd", []), f"{where}: cmd")
    env = _strings(entry.get("env", []), f"{where}: env")
    for item in env:
        if "=" not in item or item.startswith("="):
            raise CatalogError(f"{where}: env item {item!r} is not KEY=VALUE")
    ports = _strings(entry.get("ports", []), f"{where}: ports")
    for port in ports:
        if not _PORT.match(port) or not 0 < int(port.split("/")[0]) < 65536:
            raise CatalogError(f"{where}: port {port!r} is not PORT or PORT/tcp|udp")
    ports = tuple(p if "/" in p else f"{p}/tcp" for p in ports)
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise CatalogError(f"{where}: description must be a string")
    files = tuple(_parse_file(f, where, source) for f in _list(entry.get("files", []), where))
    if files and root is RootKind.HOST:
        raise CatalogError(f"{where}: a `host` root cannot add files")
    return Image(name, tag, root, cmd, env, ports, files, description, source)


def _parse_file(item: object, where: str, source: Path) -> ImageFile:
    if not isinstance(item, dict) or set(item) - _FILE_KEYS or not {"path", "source"} <= set(item):
        raise CatalogError(f"{where}: each file is {{ path = ..., source = ..., mode = 0o644 }}")
    path, src, mode = item["path"], item["source"], item.get("mode", 0o644)
    if not isinstance(path, str) or not isinstance(src, str) or not isinstance(mode, int):
        raise CatalogError(f"{where}: file path and source are strings, mode an integer")
    inside = PurePosixPath(path)
    if not inside.is_absolute() or ".." in inside.parts or len(inside.parts) < 2:
        raise CatalogError(f"{where}: file path {path!r} must be absolute, without `..`")
    if inside.parts[1] in _RESERVED:
        raise CatalogError(f"{where}: file path {path!r} is under /{inside.parts[1]}")
    if not 0 <= mode <= 0o7777:
        raise CatalogError(f"{where}: file mode {mode:o} is not a permission mode")
    return ImageFile(inside, source.parent / src, mode)


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise CatalogError(f"{where}: expected a list")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    items = _list(value, where)
    if not all(isinstance(v, str) for v in items):
        raise CatalogError(f"{where}: expected a list of strings")
    return tuple(str(v) for v in items)


@dataclass(frozen=True)
class Catalog:
    images: Mapping[str, Image]  # by `name:tag`
    sources: tuple[Path, ...]  # the files read, built-in first

    def resolve(self, ref: str) -> Image:
        """The image a user's name means, or `UnknownImage` naming the catalog files."""
        name, tag = split_reference(ref)
        image = self.images.get(f"{name}:{tag}")
        if image is None:
            files = ", ".join(str(s) for s in self.sources)
            known = ", ".join(sorted(self.images))
            raise UnknownImage(
                f"Unable to find image '{name}:{tag}' in the overlaynet image catalog "
                f"({files}); known images: {known}. Add it to {SYSTEM_CATALOG} or "
                f"${CATALOG_ENV}."
            )
        return image

    def list(self) -> list[Image]:
        """Every image, sorted by reference (what `overlaynet image ls` shows)."""
        return [self.images[k] for k in sorted(self.images)]


def merge(layers: Iterable[Mapping[str, Image]], sources: Iterable[Path]) -> Catalog:
    """Later layers add images and replace earlier ones of the same reference."""
    images: dict[str, Image] = {}
    for layer in layers:
        images.update(layer)
    return Catalog(images, tuple(sources))


def user_catalog_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The user's catalog: `$OVERLAYNET_IMAGES` (which must exist), else the system file if any."""
    env = os.environ if environ is None else environ
    chosen = env.get(CATALOG_ENV)
    if chosen:
        return Path(chosen)
    return SYSTEM_CATALOG if SYSTEM_CATALOG.exists() else None


def load(user_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Catalog:
    """The built-in catalog with the user's on top (`user_file`, else `user_catalog_path`)."""
    paths = [BUILTIN_CATALOG]
    extra = user_file if user_file is not None else user_catalog_path(environ)
    if extra is not None:
        paths.append(extra)
    layers = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as e:
            raise CatalogError(f"cannot read image catalog {path}: {e.strerror}") from None
        layer = parse(text, path)
        for image in layer.values():
            for f in image.files:
                if not f.source.is_file():
                    raise CatalogError(
                        f"{path}: image {image.reference}: file {f.source} does not exist"
                    )
        layers.append(layer)
    return merge(layers, paths)


def resolve(ref: str) -> Image:
    """`load().resolve(ref)`: the image a name means with the catalogs as they are now."""
    return load().resolve(ref)
