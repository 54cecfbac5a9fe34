"""`--format` for the list commands, as docker prints it (pure).

- no format or `table`: the command's default table; `-q` prints IDs only.
- `json`: one compact JSON object per row, keys sorted (docker's `{{json .}}` of the row).
- `table TEMPLATE`: a header line made by running TEMPLATE on the column names, then a line per
  row, all aligned by docker's tabwriter.
- any other TEMPLATE: one line per row, no header, no alignment.
`\\t` and `\\n` typed literally in a format become a tab and a newline, as in docker.

A row is a *context*: the fields docker's formatter offers for that object (`ID`, `Names`,
`RunningFor`…), built here from the agent's API reply. A field the agent does not report yet is
left out, so a template naming it fails with "can't evaluate field" instead of printing a guess.
(cli/command/formatter/{formatter,container}.go, cli/command/{network,node}/formatter.go.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from overlaynet.cli import gotemplate
from overlaynet.cli.tables import tabwrite
from overlaynet.names import short_id

TABLE = "table"
JSON = "json"
QUIET_FORMAT = "{{.ID}}"
JSON_FORMAT = "{{json .}}"

Context = dict[str, Any]


@dataclass(frozen=True)
class Listing:
    """What one list command prints by default and how its columns are headed."""

    headers: Mapping[str, str]
    default_table: str
    # docker ps and images: `-q` beats a custom --format; network/node ls: the format wins.
    quiet_beats_template: bool

    def choose(self, source: str | None, quiet: bool) -> str:
        """The format docker would use for `--format source` and `-q` (its NewFormat)."""
        if not source or source == TABLE:
            return QUIET_FORMAT if quiet else self.default_table
        if quiet and self.quiet_beats_template:
            return QUIET_FORMAT
        return source


CONTAINERS = Listing(
    headers={
        "ID": "CONTAINER ID",
        "Names": "NAMES",
        "Image": "IMAGE",
        "Command": "COMMAND",
        "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED",
        "Ports": "PORTS",
        "State": "STATE",
        "Status": "STATUS",
        "Size": "SIZE",
        "Labels": "LABELS",
        "Mounts": "MOUNTS",
        "LocalVolumes": "LOCAL VOLUMES",
        "Networks": "NETWORKS",
    },
    default_table=(
        "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}"
        "\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}"
    ),
    quiet_beats_template=True,
)

NETWORKS = Listing(
    headers={
        "ID": "NETWORK ID",
        "Name": "NAME",
        "Driver": "DRIVER",
        "Scope": "SCOPE",
        "IPv4": "IPV4",
        "IPv6": "IPV6",
        "Internal": "INTERNAL",
        "Labels": "LABELS",
        "CreatedAt": "CREATED AT",
    },
    default_table="table {{.ID}}\\t{{.Name}}\\t{{.Driver}}\\t{{.Scope}}",
    quiet_beats_template=False,
)

NODES = Listing(
    headers={
        "ID": "ID",
        "Self": "",
        "Hostname": "HOSTNAME",
        "Status": "STATUS",
        "Availability": "AVAILABILITY",
        "ManagerStatus": "MANAGER STATUS",
        "EngineVersion": "ENGINE VERSION",
        "TLSStatus": "TLS STATUS",
    },
    # docker's default adds ENGINE VERSION, which the managers do not know for other nodes;
    # this is the layout the swarm tutorials show.
    default_table=(
        "table {{.ID}} {{if .Self}}*{{else}} {{ end }}\\t{{.Hostname}}\\t{{.Status}}"
        "\\t{{.Availability}}\\t{{.ManagerStatus}}"
    ),
    quiet_beats_template=False,
)

# For `image ls` once the image catalog is listed by the agent (cli/command/formatter/image.go).
IMAGES = Listing(
    headers={
        "ID": "IMAGE ID",
        "Repository": "REPOSITORY",
        "Tag": "TAG",
        "Digest": "DIGEST",
        "CreatedSince": "CREATED",
        "CreatedAt": "CREATED AT",
        "Size": "SIZE",
        "Containers": "CONTAINERS",
    },
    default_table="table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}",
    quiet_beats_template=True,
)


def _prepare(fmt: str) -> tuple[bool, str]:
    """docker's preFormat: is it a table, and the template with `\\t`/`\\n` made real."""
    is_table = fmt.startswith(TABLE)
    if is_table:
        fmt = fmt[len(TABLE) :]
    elif fmt == JSON:
        fmt = JSON_FORMAT
    fmt = fmt.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    return is_table, fmt


# Row values are rendered with docker's `json` (compact); headers with its header functions.
_ROW_FUNCTIONS: dict[str, gotemplate.Function] = {"json": gotemplate.docker_json}


def render(
    listing: Listing, source: str | None, rows: Sequence[Context], quiet: bool = False
) -> str:
    """The text docker prints for `rows` (no final newline; empty when nothing is printed).

    Raises gotemplate.TemplateError for a template that does not parse or fit the rows.
    """
    is_table, template = _prepare(listing.choose(source, quiet))
    lines = [gotemplate.render(template, row, _ROW_FUNCTIONS) for row in rows]
    if not is_table:
        return "\n".join(lines)
    # docker ignores an error while heading the table and keeps what was written before it.
    header = gotemplate.render(
        template, dict(listing.headers), gotemplate.HEADER_FUNCTIONS, keep_partial=True
    )
    return tabwrite("\n".join([header, *lines]))


# ---- contexts: the agent's rows as docker's formatter fields -------------------------------


def _labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(sorted(f"{k}={v}" for k, v in labels.items()))


def _label_getter(labels: Mapping[str, str]) -> Callable[[str], str]:
    return lambda name: labels.get(name, "")


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# docker ps cuts COMMAND to this many characters unless --no-trunc (formatter.Command).
COMMAND_WIDTH = 20


def container_context(row: Mapping[str, Any], trunc: bool = True) -> Context:
    """A `container.ls` row as docker's ContainerContext fields."""
    cmd = row.get("cmd")
    if isinstance(cmd, list):
        text = " ".join(str(c) for c in cmd)
        command = '"' + (_ellipsis(text, COMMAND_WIDTH) if trunc else text) + '"'
    else:
        command = str(row.get("command", ""))  # quoted and cut by the agent already
    # overlaynet containers have no labels and no volumes: empty is the true answer.
    labels: Mapping[str, str] = row.get("labels") or {}
    ctx: Context = {
        "ID": short_id(row["id"]) if trunc else row["id"],
        "Image": row.get("image", ""),
        "Command": command,
        "RunningFor": row.get("created", ""),
        "Ports": row.get("ports", ""),
        "State": row.get("state", ""),
        "Status": row.get("status", ""),
        "Names": row.get("names", ""),
        "Labels": _labels_text(labels),
        "Label": _label_getter(labels),
        "Mounts": "",
        "LocalVolumes": "0",
    }
    if "networks" in row:
        ctx["Networks"] = ",".join(row["networks"])
    if "created_at" in row:
        ctx["CreatedAt"] = row["created_at"]
    if "size" in row:
        ctx["Size"] = row["size"]
    return dict(sorted(ctx.items()))


def network_context(row: Mapping[str, Any], trunc: bool = True) -> Context:
    """A `network.ls` row as docker's networkContext fields."""
    ctx: Context = {
        "ID": short_id(row["id"]) if trunc else row["id"],
        "Name": row.get("name", ""),
        "Driver": row.get("driver", ""),
        "Scope": row.get("scope", ""),
        # overlaynet networks are IPv4 only.
        "IPv4": "true",
        "IPv6": "false",
    }
    if "internal" in row:
        ctx["Internal"] = "true" if row["internal"] else "false"
    if "labels" in row:
        labels: Mapping[str, str] = row["labels"] or {}
        ctx["Labels"] = _labels_text(labels)
        ctx["Label"] = _label_getter(labels)
    if "created_at" in row:
        ctx["CreatedAt"] = row["created_at"]
    return dict(sorted(ctx.items()))


def _pretty(value: Any) -> str:
    """docker's PrettyPrint: the first letter capitalised ("ready" → "Ready")."""
    text = "" if value is None else str(value)
    return text[:1].upper() + text[1:]


def node_context(row: Mapping[str, Any]) -> Context:
    """A `node.ls` row as docker's nodeContext fields (node IDs are never cut)."""
    ctx: Context = {
        "ID": row["id"],
        "Self": bool(row.get("self")),
        "Hostname": row.get("hostname", ""),
        "Status": _pretty(row.get("status")),
        "Availability": _pretty(row.get("availability")),
        "ManagerStatus": _pretty(row.get("manager_status")),
    }
    if "engine_version" in row:
        ctx["EngineVersion"] = row["engine_version"]
    return dict(sorted(ctx.items()))
