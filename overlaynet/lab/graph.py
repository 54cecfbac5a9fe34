"""A picture of a lab: hosts, the underlay, networks and their bridges, containers, VTEPs and the
VXLAN tunnels between hosts that share an overlay, as Graphviz DOT (SVG or PNG through `dot`).

The pure part is in two steps, both tested without root: `host_view` turns one agent's API
answers (`network.ls`/`inspect`, `container.ls`/`inspect`, `gossip.members`) into a `HostView`,
keeping whatever it cannot read as a problem instead of failing; `to_dot` draws a `Topology`.
`collect` asks each lab host's agent over its socket; `write` runs graphviz.

What is drawn, per host (a box): its underlay port `eth0` with its address, each network with a
bridge or VTEP (`bridge`, user bridges, overlays; `host` and `none` only when a container uses
them, since they have no kernel objects of their own), each container with its address on each
network, and for an overlay its VTEP (VNI, TAP, FDB size). Between hosts: one edge per VNI and
pair of hosts that list each other as peers (a one-way arrow when only one side does, which is
exactly the asymmetry to look for when a ping goes one way only); a peer that is no lab host (a
kernel `vxlan` device, say) is drawn as an outside VTEP.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overlaynet import api
from overlaynet.errors import ApiError
from overlaynet.lab.lifecycle import (
    UNDERLAY_BRIDGE,
    UNDERLAY_PREFIX,
    UNDERLAY_PREFIXLEN,
    read_hosts,
)
from overlaynet.names import check_lab_name, lab_namespace
from overlaynet.paths import HostPaths

# One answer of a healthy agent takes milliseconds; a busy 2-core machine can stretch it, but
# a picture must not hang on an agent that stopped answering.
AGENT_TIMEOUT = 10.0
# Graphviz lays out a lab of a few hosts in well under a second; this bounds a pathological one.
DOT_TIMEOUT = 60.0
# What `-o` may end with: the text itself, or what graphviz renders it to.
FORMATS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png"}
# Drivers whose network has no kernel object of its own on the host (drawn only when used).
NO_KERNEL_OBJECT = frozenset({"host", "null"})
# RFC 7348 section 5: the well-known VXLAN port, shown when the VTEP's address has none.
VXLAN_PORT = 4789


class GraphError(RuntimeError):
    """A picture that cannot be made; the message says what to do."""


# ---- the data drawn ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """A container's endpoint on one network."""

    network_id: str
    network: str
    ip: str
    mac: str


@dataclass(frozen=True)
class ContainerView:
    id: str
    name: str
    state: str
    network_mode: str
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Vtep:
    """An overlay's data plane on one host."""

    address: str  # "ip:port" the VTEP sends from and listens on
    vni: int
    tap: str
    peers: tuple[str, ...]  # underlay addresses frames are replicated to
    fdb_entries: int

    @property
    def ip(self) -> str:
        return self.address.rpartition(":")[0] or self.address


@dataclass(frozen=True)
class NetworkView:
    id: str
    name: str
    driver: str
    scope: str
    subnet: str = ""
    bridge: str = ""
    vni: int | None = None
    vtep: Vtep | None = None  # None also for an overlay whose data plane is not up on this host


@dataclass(frozen=True)
class Member:
    """A gossip member as one host sees it."""

    name: str
    addr: str
    state: str


@dataclass(frozen=True)
class HostView:
    name: str
    ip: str
    reachable: bool = True
    networks: tuple[NetworkView, ...] = ()
    containers: tuple[ContainerView, ...] = ()
    members: tuple[Member, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    lab: str
    hosts: tuple[HostView, ...]
    underlay: str = UNDERLAY_BRIDGE  # where the underlay switch lives, e.g. "br0 in onet-x-ul"
    underlay_subnet: str = f"{UNDERLAY_PREFIX}0/{UNDERLAY_PREFIXLEN}"


@dataclass
class HostAnswers:
    """One agent's raw answers; an operation that failed holds its error text instead."""

    network_ls: Any = None
    network_inspect: dict[str, Any] = field(default_factory=dict)
    container_ls: Any = None
    container_inspect: dict[str, Any] = field(default_factory=dict)
    members: Any = None
    errors: list[str] = field(default_factory=list)


# ---- API documents to views (pure) -----------------------------------------------------------


class _Unreadable(ValueError):
    """A document without the field the picture needs, or with the wrong type in it."""


def _text(doc: Any, key: str, default: str | None = None) -> str:
    value = doc.get(key, default) if isinstance(doc, Mapping) else None
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise _Unreadable(f"no text field {key!r}")
    return value


def _mapping(doc: Any, key: str) -> Mapping[str, Any]:
    value = doc.get(key) if isinstance(doc, Mapping) else None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Unreadable(f"field {key!r} is not an object")
    return value


def _rows(answer: Any, what: str, problems: list[str]) -> list[Mapping[str, Any]]:
    if answer is None:
        return []
    if not isinstance(answer, list):
        problems.append(f"{what}: the answer is not a list")
        return []
    rows = [r for r in answer if isinstance(r, Mapping)]
    if len(rows) != len(answer):
        problems.append(f"{what}: {len(answer) - len(rows)} entries are not objects")
    return rows


def _vni(overlay: Mapping[str, Any]) -> int | None:
    if not overlay:
        return None
    vni = overlay.get("VNI")
    if not isinstance(vni, int) or isinstance(vni, bool):
        raise _Unreadable("the overlay has no integer VNI")
    return vni


def _vtep(overlay: Mapping[str, Any]) -> Vtep | None:
    """The overlay's VTEP; None while it has none on this host (an overlay's data plane runs
    only where the network has a local endpoint, DESIGN.md)."""
    vni = _vni(overlay)
    if vni is None or not _text(overlay, "VTEP", ""):
        return None
    dataplane = _mapping(overlay, "DataPlane")
    peers = overlay.get("Peers") or []
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise _Unreadable("the overlay's Peers is not a list of addresses")
    fdb = dataplane.get("fdb") or []
    return Vtep(
        address=_text(overlay, "VTEP", ""),
        vni=vni,
        tap=_text(dataplane, "tap", ""),
        peers=tuple(peers),
        fdb_entries=len(fdb) if isinstance(fdb, list) else 0,
    )


def network_view(row: Mapping[str, Any], doc: Any) -> NetworkView:
    """One network from its `network ls` row and, when it could be read, its inspect document."""
    view = NetworkView(
        id=_text(row, "id"),
        name=_text(row, "name"),
        driver=_text(row, "driver", ""),
        scope=_text(row, "scope", ""),
    )
    if not isinstance(doc, Mapping):
        return view
    config = _mapping(doc, "IPAM").get("Config") or []
    subnet = ""
    if isinstance(config, list) and config and isinstance(config[0], Mapping):
        subnet = _text(config[0], "Subnet", "")
    return NetworkView(
        id=view.id,
        name=view.name,
        driver=view.driver,
        scope=view.scope,
        subnet=subnet,
        bridge=_text(_mapping(doc, "Options"), "com.docker.network.bridge.name", ""),
        vni=_vni(_mapping(doc, "Overlay")),
        vtep=_vtep(_mapping(doc, "Overlay")),
    )


def container_view(row: Mapping[str, Any], doc: Any) -> ContainerView:
    """One container from its `ps` row and, when it could be read, its inspect document."""
    cid, name, state = _text(row, "id"), _text(row, "names"), _text(row, "state", "")
    if not isinstance(doc, Mapping):
        return ContainerView(cid, name, state, "")
    attachments = []
    for net_name, ep in sorted(_mapping(_mapping(doc, "NetworkSettings"), "Networks").items()):
        if not isinstance(ep, Mapping):
            raise _Unreadable(f"endpoint on {net_name} is not an object")
        attachments.append(
            Attachment(
                network_id=_text(ep, "NetworkID", ""),
                network=net_name,
                ip=_text(ep, "IPAddress", ""),
                mac=_text(ep, "MacAddress", ""),
            )
        )
    mode = _text(_mapping(doc, "HostConfig"), "NetworkMode", "")
    return ContainerView(cid, name, state, mode, tuple(attachments))


def host_view(name: str, ip: str, answers: HostAnswers | None) -> HostView:
    """A host as its agent describes it; `answers` None: the agent did not answer at all.
    Whatever cannot be read is named in `problems` and the rest is still drawn."""
    if answers is None:
        return HostView(name, ip, reachable=False, problems=("the agent does not answer",))
    problems = list(answers.errors)
    networks = []
    for row in _rows(answers.network_ls, "network ls", problems):
        try:
            networks.append(network_view(row, answers.network_inspect.get(str(row.get("id")))))
        except _Unreadable as e:
            problems.append(f"network {row.get('name', '?')}: {e}")
    containers = []
    for row in _rows(answers.container_ls, "ps", problems):
        try:
            doc = answers.container_inspect.get(str(row.get("id")))
            containers.append(container_view(row, doc))
        except _Unreadable as e:
            problems.append(f"container {row.get('names', '?')}: {e}")
    members = []
    for row in _rows(answers.members, "gossip members", problems):
        try:
            members.append(Member(_text(row, "name"), _text(row, "addr"), _text(row, "state")))
        except _Unreadable as e:
            problems.append(f"gossip member: {e}")
    return HostView(
        name,
        ip,
        reachable=True,
        networks=tuple(sorted(networks, key=lambda n: (n.name, n.id))),
        containers=tuple(sorted(containers, key=lambda c: (c.name, c.id))),
        members=tuple(members),
        problems=tuple(problems),
    )


# ---- views to DOT (pure) ----------------------------------------------------------------------


def quote(text: str) -> str:
    """A DOT double-quoted string: quotes and backslashes escaped, newlines as centred breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{k}={quote(v)}" for k, v in attrs.items()) + "]"


# Node ids: unique per host and object, stable across runs (sorted input, ids not positions).
def _eth0(host: str) -> str:
    return f"{host}/eth0"


def _net(host: str, net: NetworkView) -> str:
    return f"{host}/net/{net.id}"


def _vtep_id(host: str, net: NetworkView) -> str:
    return f"{host}/vtep/{net.id}"


def _ctr(host: str, c: ContainerView) -> str:
    return f"{host}/ctr/{c.id}"


UNDERLAY_NODE = "underlay"

# Colours: one per kind of object, so the legend is the picture itself.
HOST_FILL = "#f4f4f4"
DOWN_COLOUR = "#c0392b"
BRIDGE_FILL = "#fff3c4"
OVERLAY_FILL = "#d6eaf8"
VTEP_FILL = "#f5cba7"
TUNNEL_COLOUR = "#1f618d"
CONTAINER_FILL = "#ffffff"


def _used_networks(host: HostView) -> list[NetworkView]:
    used = {a.network_id for c in host.containers for a in c.attachments}
    used |= {c.network_mode for c in host.containers}
    return [
        n
        for n in host.networks
        if n.driver not in NO_KERNEL_OBJECT or n.id in used or n.name in used
    ]


def _network_label(net: NetworkView) -> str:
    lines = [f"{net.name} ({net.driver or '?'})"]
    if net.subnet:
        lines.append(net.subnet)
    if net.bridge:
        lines.append(f"bridge {net.bridge}")
    if net.vni is not None and net.vtep is None:
        lines.append(f"VNI {net.vni}, no VTEP here")
    return "\n".join(lines)


def _host_label(host: HostView, names_by_ip: Mapping[str, str]) -> str:
    lines = [host.name, f"eth0 {host.ip}"]
    if not host.reachable:
        lines.append("AGENT DOWN")
    if host.members:
        seen = ", ".join(
            f"{names_by_ip.get(m.addr, m.addr)} {m.state}"
            for m in sorted(host.members, key=lambda m: m.addr)
        )
        lines.append(f"gossip: {seen}")
    return "\n".join(lines)


def _host_lines(host: HostView, names_by_ip: Mapping[str, str]) -> list[str]:
    h = host.name
    style = "rounded,filled" if host.reachable else "rounded,dashed"
    colour = "#888888" if host.reachable else DOWN_COLOUR
    cluster = _attrs(
        label=_host_label(host, names_by_ip), style=style, color=colour, fillcolor=HOST_FILL
    )
    port = _attrs(label="eth0\n" + host.ip, shape="cds")
    out = [
        f"  subgraph {quote('cluster_' + h)} {{",
        f"    graph {cluster};",
        f"    {quote(_eth0(h))} {port};",
    ]
    networks = _used_networks(host)
    by_id = {n.id: n for n in networks}
    by_name = {n.name: n for n in networks}
    for net in networks:
        fill = OVERLAY_FILL if net.vtep is not None or net.driver == "overlay" else BRIDGE_FILL
        shape = "box" if net.driver not in NO_KERNEL_OBJECT else "note"
        out.append(
            f"    {quote(_net(h, net))} "
            f"{_attrs(label=_network_label(net), shape=shape, style='filled', fillcolor=fill)};"
        )
        if net.vtep is not None:
            v = net.vtep
            label = "\n".join(
                [
                    f"VTEP {v.address or '?'}",
                    f"VNI {v.vni}",
                    f"TAP {v.tap or '-'}",
                    f"FDB {v.fdb_entries} {'entry' if v.fdb_entries == 1 else 'entries'}",
                ]
            )
            out.append(
                f"    {quote(_vtep_id(h, net))} "
                f"{_attrs(label=label, shape='hexagon', style='filled', fillcolor=VTEP_FILL)};"
            )
            out.append(
                f"    {quote(_net(h, net))} -- {quote(_vtep_id(h, net))} "
                f"{_attrs(label=v.tap or 'TAP')};"
            )
            out.append(f"    {quote(_vtep_id(h, net))} -- {quote(_eth0(h))} {_attrs(label='udp')};")
    for c in host.containers:
        style = "rounded,filled" if c.state == "running" else "rounded,dashed"
        box = _attrs(
            label=f"{c.name}\n{c.state}", shape="box", style=style, fillcolor=CONTAINER_FILL
        )
        out.append(f"    {quote(_ctr(h, c))} {box};")
        for a in c.attachments:
            target = by_id.get(a.network_id) or by_name.get(a.network)
            if target is None:
                continue
            out.append(
                f"    {quote(_ctr(h, c))} -- {quote(_net(h, target))} {_attrs(label=a.ip or '-')};"
            )
    if host.problems:
        note = "\n".join(["problems:", *host.problems])
        out.append(
            f"    {quote(h + '/problems')} "
            f"{_attrs(label=note, shape='note', color=DOWN_COLOUR, fontcolor=DOWN_COLOUR)};"
        )
    out.append("  }")
    out.append(f"  {quote(_eth0(h))} -- {quote(UNDERLAY_NODE)} {_attrs(label=host.ip)};")
    return out


@dataclass(frozen=True)
class Tunnel:
    """The VXLAN tunnels of one VNI between two VTEPs; `both` when each lists the other."""

    vni: int
    a: str  # node id of one end
    b: str  # node id of the other end
    both: bool


def tunnels(topology: Topology) -> list[Tunnel]:
    """One tunnel per VNI and pair of VTEPs that peer; a peer that is no lab host's VTEP is an
    outside VTEP (node id `outside/<ip>`)."""
    vteps: dict[tuple[int, str], str] = {}  # (VNI, underlay address) -> VTEP node id
    ports = {host.ip: _eth0(host.name) for host in topology.hosts}
    for host in topology.hosts:
        for net in host.networks:
            if net.vtep is not None:
                vteps[(net.vtep.vni, net.vtep.ip or host.ip)] = _vtep_id(host.name, net)
    directed: set[tuple[int, str, str]] = set()
    for host in topology.hosts:
        for net in host.networks:
            if net.vtep is None:
                continue
            here = _vtep_id(host.name, net)
            for peer in net.vtep.peers:
                # A lab host whose VTEP for this VNI is not known (its agent is down, say):
                # the tunnel ends at its underlay port.
                there = vteps.get((net.vtep.vni, peer)) or ports.get(peer, f"outside/{peer}")
                if there != here:
                    directed.add((net.vtep.vni, here, there))
    out = []
    for vni, a, b in sorted(directed):
        back = (vni, b, a) in directed
        if back and b < a:
            continue  # drawn once, from the other end
        out.append(Tunnel(vni, a, b, back))
    return out


def to_dot(topology: Topology) -> str:
    """The whole lab as one Graphviz graph (undirected; one-way tunnels carry an arrow)."""
    names_by_ip = {h.ip: h.name for h in topology.hosts}
    title = "lab " + topology.lab
    underlay = _attrs(
        label=f"underlay {topology.underlay_subnet}\n{topology.underlay}",
        shape="box",
        style="filled",
        fillcolor="#e5e8e8",
    )
    lines = [
        f"graph {quote(title)} {{",
        f"  graph {_attrs(label=title, labelloc='t', fontname='Helvetica', newrank='true')};",
        f"  node {_attrs(fontname='Helvetica', fontsize='10')};",
        f"  edge {_attrs(fontname='Helvetica', fontsize='9')};",
        f"  {quote(UNDERLAY_NODE)} {underlay};",
    ]
    for host in topology.hosts:
        lines += _host_lines(host, names_by_ip)
    outside: set[str] = set()
    for t in tunnels(topology):
        for end in (t.a, t.b):
            if end.startswith("outside/") and end not in outside:
                outside.add(end)
                ip = end.removeprefix("outside/")
                vtep = _attrs(label="outside VTEP\n" + ip, shape="hexagon", style="dashed")
                lines.append(f"  {quote(end)} {vtep};")
                lines.append(f"  {quote(end)} -- {quote(UNDERLAY_NODE)} {_attrs(label=ip)};")
        label = f"VXLAN VNI {t.vni}" + ("" if t.both else " (one way)")
        attrs = {
            "label": label,
            "color": TUNNEL_COLOUR,
            "fontcolor": TUNNEL_COLOUR,
            "penwidth": "2",
            "style": "bold" if t.both else "dashed",
            "dir": "none" if t.both else "forward",
            # Tunnels ride on the underlay: they must not pull the hosts' layout apart.
            "constraint": "false",
        }
        lines.append(f"  {quote(t.a)} -- {quote(t.b)} {_attrs(**attrs)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- collecting and writing (I/O) --------------------------------------------------------------


def _ask(call: Callable[..., Any], answers: HostAnswers, what: str, op: str, **args: Any) -> Any:
    try:
        return call(op, **args)
    except ApiError as e:
        answers.errors.append(f"{what}: {e}")
    except TimeoutError:
        answers.errors.append(f"{what}: no answer within {AGENT_TIMEOUT:g} s")
    return None


def ask_agent(client: api.Client) -> HostAnswers | None:
    """Everything the picture needs from one agent; None when it does not answer at all."""
    answers = HostAnswers()
    try:
        client.call("ping")
    except (api.AgentDown, OSError, ValueError):
        return None
    answers.network_ls = _ask(client.call, answers, "network ls", "network.ls")
    for row in answers.network_ls if isinstance(answers.network_ls, list) else []:
        ref = row.get("id") if isinstance(row, Mapping) else None
        if isinstance(ref, str):
            name = row.get("name", ref)
            doc = _ask(client.call, answers, f"network {name}", "network.inspect", network=ref)
            answers.network_inspect[ref] = doc
    answers.container_ls = _ask(client.call, answers, "ps", "container.ls", all=True)
    for row in answers.container_ls if isinstance(answers.container_ls, list) else []:
        ref = row.get("id") if isinstance(row, Mapping) else None
        if isinstance(ref, str):
            name = row.get("names", ref)
            what = f"container {name}"
            doc = _ask(client.call, answers, what, "container.inspect", container=ref)
            answers.container_inspect[ref] = doc
    answers.members = _ask(client.call, answers, "gossip members", "gossip.members")
    return answers


def collect(lab: str, timeout: float = AGENT_TIMEOUT) -> Topology:
    """Ask every host's agent of `lab`; a host whose agent is down is drawn as such."""
    check_lab_name(lab)
    hosts = read_hosts(lab)
    if not hosts:
        raise GraphError(f"lab {lab} has no hosts: see `overlaynet lab ls`, or build it first")
    views = []
    for h in hosts:
        client = api.Client(HostPaths(h.name, lab).socket, timeout=timeout)
        views.append(host_view(h.name, h.ip, ask_agent(client)))
    return Topology(lab, tuple(views), underlay=f"{UNDERLAY_BRIDGE} in {lab_namespace(lab, 'ul')}")


def output_format(path: str) -> str:
    """`dot`, `svg` or `png` from the file name's suffix."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise GraphError(
            f"cannot tell the picture's format from {path!r}: name it "
            + ", ".join(f"*{s}" for s in FORMATS)
        )
    return fmt


def write(dot_text: str, path: Path, fmt: str, run: Callable[..., Any] = subprocess.run) -> None:
    """Write the DOT text itself, or graphviz's rendering of it, to `path`."""
    if fmt == "dot":
        path.write_text(dot_text)
        return
    argv = ["dot", f"-T{fmt}", "-o", str(path)]
    try:
        done = run(argv, input=dot_text.encode(), capture_output=True, timeout=DOT_TIMEOUT)
    except FileNotFoundError:
        raise GraphError(
            "graphviz's `dot` is not installed: apt-get install graphviz (tools/setup.sh does), "
            "or write the DOT text with -o FILE.dot"
        ) from None
    if done.returncode != 0:
        raise GraphError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")


def problems(topology: Topology) -> Iterable[str]:
    """Every problem met while collecting, `host: problem`, for the CLI to print."""
    for host in topology.hosts:
        for p in host.problems:
            yield f"{host.name}: {p}"
