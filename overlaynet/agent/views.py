"""What `inspect`, `ls` and `ps` show: records turned into Docker-shaped documents (pure)."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from overlaynet.agent.hostcore import epoch_from_iso
from overlaynet.dns.records import NameRecord, RecordKind
from overlaynet.host import links
from overlaynet.humanize import human_duration
from overlaynet.images.catalog import Image
from overlaynet.model import Container, Driver, Network, Status, is_sandbox

if TYPE_CHECKING:
    from overlaynet.host.nft import LbView


def network_doc(
    net: Network, containers: list[Container], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`docker network inspect` for one network."""
    members: dict[str, Any] = {}
    prefix = IPv4Network(net.subnet).prefixlen if net.subnet else 0
    for c in containers:
        ep = c.endpoint_on(net.id)
        if ep is None:
            continue
        members[c.id] = {
            "Name": c.name,
            "EndpointID": ep.id,
            "MacAddress": ep.mac or "",
            "IPv4Address": f"{ep.ip}/{prefix}" if ep.ip else "",
            "IPv6Address": "",
        }
    if net.driver == Driver.HOST and not members:
        members = {
            c.id: {
                "Name": c.name,
                "EndpointID": "",
                "MacAddress": "",
                "IPv4Address": "",
                "IPv6Address": "",
            }
            for c in containers
            if c.network_mode == "host"
        }
    config = [{"Subnet": net.subnet, "Gateway": net.gateway}] if net.subnet else []
    doc: dict[str, Any] = {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": str(net.driver),
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": net.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": members,
        "Options": dict(net.options),
        "Labels": dict(net.labels),
    }
    if net.bridge_ifname:
        doc["Options"].setdefault("com.docker.network.bridge.name", net.bridge_ifname)
    if net.driver != Driver.BRIDGE or net.mtu != 1500:
        doc["Options"].setdefault("com.docker.network.driver.mtu", str(net.mtu))
    if net.vni is not None:
        doc["Options"]["com.docker.network.driver.overlay.vxlanid_list"] = str(net.vni)
    doc.update(extra or {})
    return doc


def container_doc(
    c: Container, networks: dict[str, Network], sandbox_key: str, pid: int | None = None
) -> dict[str, Any]:
    """`docker container inspect` for one container; `pid` is the host pid of its first
    process in its own namespaces (`Runtime.exec_pid`), Docker's State.Pid."""
    nets: dict[str, Any] = {}
    for ep in c.endpoints:
        net = networks.get(ep.network_id)
        if net is None:
            continue
        prefix = IPv4Network(net.subnet).prefixlen if net.subnet else 0
        nets[net.name] = {
            "IPAMConfig": None,
            "Links": None,
            "Aliases": list(ep.aliases) or None,
            "MacAddress": ep.mac or "",
            "NetworkID": net.id,
            "EndpointID": ep.id,
            "Gateway": net.gateway or "",
            "IPAddress": ep.ip or "",
            "IPPrefixLen": prefix,
            "DNSNames": [c.name, c.id[:12], *ep.aliases] if net.has_name_resolution else None,
        }
    if c.network_mode in ("host", "none"):
        mode_net = next((n for n in networks.values() if n.name == c.network_mode), None)
        if mode_net is not None:
            nets[mode_net.name] = {
                "IPAMConfig": None,
                "Links": None,
                "Aliases": None,
                "MacAddress": "",
                "NetworkID": mode_net.id,
                "EndpointID": "",
                "Gateway": "",
                "IPAddress": "",
                "IPPrefixLen": 0,
                "DNSNames": None,
            }
    default = nets.get("bridge", {})
    running = c.status == Status.RUNNING
    return {
        "Id": c.id,
        "Created": c.created,
        "Path": c.cmd[0] if c.cmd else "",
        "Args": c.cmd[1:],
        "State": {
            "Status": str(c.status),
            "Running": running,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": pid if running and pid else 0,
            "ExitCode": c.exit_code or 0,
            "Error": "",
            "StartedAt": c.started_at or "0001-01-01T00:00:00Z",
            "FinishedAt": c.finished_at or "0001-01-01T00:00:00Z",
        },
        "Image": c.image,
        "Name": "/" + c.name,
        "HostConfig": {"NetworkMode": c.network_mode},
        "Config": {
            "Hostname": c.uts_name,
            "Image": c.image,
            "Cmd": list(c.cmd),
            "Env": list(c.env),
            "OpenStdin": c.open_stdin,
            "Tty": c.tty,
            "Labels": dict(c.labels),
        },
        "NetworkSettings": {
            "SandboxID": c.id,
            "SandboxKey": sandbox_key,
            "Gateway": default.get("Gateway", ""),
            "IPAddress": default.get("IPAddress", ""),
            "IPPrefixLen": default.get("IPPrefixLen", 0),
            "MacAddress": default.get("MacAddress", ""),
            "Networks": nets,
        },
    }


def status_text(c: Container, age_of: dict[str, float]) -> str:
    """The STATUS column of `docker ps`; `age_of` gives seconds since started/finished."""
    if c.status == Status.RUNNING:
        return f"Up {human_duration(age_of.get('started', 0))}"
    if c.status == Status.EXITED:
        return f"Exited ({c.exit_code or 0}) {human_duration(age_of.get('finished', 0))} ago"
    return "Created"


def command_text(cmd: list[str], width: int = 20) -> str:
    """The COMMAND column: quoted and cut like docker's `ps` (ellipsis past 20 characters)."""
    text = " ".join(cmd)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f'"{text}"'


def ps_networks(c: Container, networks: Mapping[str, Network]) -> list[str]:
    """The names `ps --format '{{.Networks}}'` joins: every network the container has an
    endpoint on, and `host`/`none` for those modes (Docker's NetworkSettings.Networks keys,
    sorted as its formatter sorts them)."""
    names = {networks[e.network_id].name for e in c.endpoints if e.network_id in networks}
    if c.network_mode in ("host", "none"):
        names.add(c.network_mode)
    return sorted(names)


def created_at_text(iso: str) -> str:
    """`ps --format '{{.CreatedAt}}'`: Go's time.Unix(created, 0).String() in UTC, as docker
    prints it on a host whose zone is UTC (`2026-11-30 13:33:00 +0000 UTC`)."""
    when = datetime.datetime.fromtimestamp(int(epoch_from_iso(iso)), datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def container_rows(
    containers: Iterable[Container],
    include_all: bool,
    now: float,
    networks: Mapping[str, Network] | None = None,
) -> list[Any]:
    """`ps` rows, newest first; stopped containers only with `--all`. With the host's
    `networks` (id -> network) each row names its networks (`{{.Networks}}`)."""
    rows = []
    for c in sorted(containers, key=lambda c: c.created, reverse=True):
        if (not include_all and c.status != Status.RUNNING) or is_sandbox(c):
            continue  # the agent's own sandboxes are no containers to the user (Docker's)
        ages = {
            "started": now - _epoch(c.started_at, now),
            "finished": now - _epoch(c.finished_at, now),
        }
        rows.append(
            {
                "id": c.id,
                "image": c.image,
                "command": command_text(c.cmd),
                "created": human_duration(now - _epoch(c.created, now)) + " ago",
                "status": status_text(c, ages),
                "ports": "",
                "names": c.name,
                "state": str(c.status),
                "labels": dict(c.labels),
                "created_at": created_at_text(c.created),
            }
        )
        if networks is not None:
            rows[-1]["networks"] = ps_networks(c, networks)
    return rows


def image_id(image: Image) -> str:
    """A stable id for a catalog entry, as Docker's image id is a digest of its config: the
    same recipe gives the same id on every host, a changed one a new id."""
    recipe = {
        "ref": image.reference,
        "root": image.root.value,
        "cmd": image.cmd,
        "env": image.env,
        "ports": image.ports,
        "files": [[str(f.path), f.mode] for f in image.files],
    }
    return "sha256:" + hashlib.sha256(json.dumps(recipe).encode()).hexdigest()


def human_size(size: int) -> str:
    """Docker's units.HumanSize: decimal units, four significant digits (`2.2MB`, `512B`)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.4g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def image_rows(images: Iterable[Image], sizes: Mapping[str, int | None]) -> list[dict[str, Any]]:
    """`image ls` rows in Docker's image formatter fields. The catalog has no build time, so
    CreatedSince/CreatedAt say N/A; Size is what the image's root adds (N/A for `host`)."""
    rows = []
    for image in images:
        size = sizes.get(image.reference)
        rows.append(
            {
                "ID": image_id(image),
                "Repository": image.name,
                "Tag": image.tag,
                "Digest": "<none>",
                "CreatedSince": "N/A",
                "CreatedAt": "N/A",
                "Size": human_size(size) if size is not None else "N/A",
                "Containers": "N/A",
                "Root": image.root.value,
                "Command": list(image.cmd),
                "Ports": list(image.ports),
                "Description": image.description,
            }
        )
    return rows


def _epoch(iso: str | None, now: float) -> float:
    return now if not iso else epoch_from_iso(iso)


def kernel_doc() -> dict[str, Any]:
    """`host links`: the host namespace's links (with their bridge), addresses and routes."""
    dumped = links.dump()
    by_index = {link.index: link.ifname for link in dumped}
    return {
        "links": [
            {
                "ifname": link.ifname,
                "kind": link.kind,
                "master": by_index.get(link.master or 0, ""),
                "state": link.state,
                "mtu": link.mtu,
                "mac": link.mac,
            }
            for link in dumped
        ],
        "addresses": [[name, str(addr)] for name, addr in links.addresses()],
        "routes": links.routes(),
    }


def peers_doc(addresses: Iterable[str], names: dict[str, str]) -> list[dict[str, str]]:
    """`network inspect`'s Peers in Docker's layout: every host in the overlay (this one
    included), by name where the swarm knows it, and its underlay address."""
    rows = [{"Name": names.get(a, a), "IP": a} for a in set(addresses)]
    return sorted(rows, key=lambda r: (r["Name"], r["IP"]))


def dns_doc(
    network: str,
    resolves: bool,
    ttl: int,
    records: Iterable[NameRecord],
    origins: dict[NameRecord, dict[str, str]],
) -> dict[str, Any]:
    """`overlaynet dns NETWORK`: the names a container on the network resolves, with the TTL
    its answers carry and where each came from (`origins`: a local container, or the gossip
    owner host). A `tasks.` name has its task container's origin, a service name comes from
    the managers' service list; a record found nowhere says "unknown"."""
    by_address = {r.address: o for r, o in origins.items() if r.kind is RecordKind.CONTAINER}

    def origin_of(r: NameRecord) -> dict[str, str]:
        if r in origins:
            return origins[r]
        if r.kind is RecordKind.TASK and r.address in by_address:
            return by_address[r.address]
        if r.kind is RecordKind.SERVICE:
            return {"Source": "service", "Owner": "managers"}
        return {"Source": "unknown"}

    rows = [
        {
            "Name": r.name,
            "FQDN": f"{r.name}.{network}",
            "Kind": r.kind.value,
            "Address": str(r.address),
            "TTL": ttl,
            "Origin": origin_of(r),
        }
        for r in sorted(records, key=lambda r: (r.name.lower(), r.address, r.kind.value))
    ]
    return {"Network": network, "ResolvesNames": resolves, "TTL": ttl, "Records": rows}


def lb_doc(
    network: str,
    network_id: str,
    sandbox: str | None,
    lb_addr: str | None,
    view: LbView | None,
    services: Mapping[str, str],
    tasks: Mapping[str, str],
) -> dict[str, Any]:
    """`network lb NETWORK`: this node's load-balancer sandbox there (None: this node has
    none on it), each VIP it balances with the service it stands for (`services`: VIP address,
    or `addr:port/proto` in the ingress sandbox, → service name) and its backends with their
    task containers (`tasks`: address → container name), the connections each was sent
    (Connections) and holds now (Active), and the nft table as read back from the kernel."""
    vips = []
    for v in view.vips if view is not None else ():
        key = v.key
        port = "*" if key.port is None else str(key.port)
        service = services.get(key.vip) or services.get(f"{key.vip}:{port}/{key.protocol}", "")
        vips.append(
            {
                "VIP": str(key),
                "Service": service,
                "Backends": [
                    {
                        "Address": str(b.backend),
                        "Task": tasks.get(b.backend.addr, ""),
                        "Connections": b.connections,
                        "Active": b.active,
                    }
                    for b in v.backends
                ],
            }
        )
    return {
        "Network": network,
        "NetworkID": network_id,
        "Sandbox": sandbox,
        "LbAddress": lb_addr,
        "VIPs": vips,
        "Rules": view.rules if view is not None else "",
    }
