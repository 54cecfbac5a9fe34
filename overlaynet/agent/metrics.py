"""Every counter of an agent's planes in one structure, as `stats` and Prometheus text show it.

`collect` (pure) turns what each plane reports (`Vtep.stats()`, `DnsServer.counters()`,
`GossipService.stats()`, the control plane's and manager's counters, the API server's) into
`Sample`s; `stats_doc` groups them by plane for `overlaynet stats`; `render` writes the
Prometheus text exposition format 0.0.4. `serve` is the opt-in HTTP endpoint
(`overlaynet-agent --metrics-addr 127.0.0.1:9323`): GET /metrics only, one connection per
request, bounded in size, time and number, each client contained so none can end the agent.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from overlaynet.boundary import contained

log = logging.getLogger(__name__)

# The planes, in the order `stats` prints them.
PLANES = ("vtep", "dns", "gossip", "control", "manager", "tasks", "api")
# Every metric is `overlaynet_<plane>_<counter>` (Prometheus' own naming advice: a
# single-word application prefix, then what is measured).
PREFIX = "overlaynet"
# Counters that are levels, not running totals: exported as gauges (no `_total` suffix).
GAUGES = frozenset(
    {
        ("vtep", "fdb_entries"),
        ("vtep", "learned"),
        ("vtep", "peers"),
        ("gossip", "replay_cache"),
        ("manager", "connections_open"),
        ("manager", "connections_unauthenticated"),
    }
)
# Counters whose suffix is a value of one dimension: `queries_A` becomes
# `overlaynet_dns_queries_total{type="A"}`, so a dashboard sums or picks by label.
LABELLED_PREFIXES: dict[tuple[str, str], tuple[str, str]] = {
    ("dns", "queries_"): ("queries", "type"),
    ("dns", "answers_"): ("answers", "rcode"),
    ("api", "op:"): ("requests", "op"),
}
# The exposition format's content type (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A scrape request is one line and a few headers; Prometheus sends well under 1 KiB. 8 KiB is
# nginx's default large_client_header_buffers size: more than that is not a scrape.
MAX_REQUEST = 8192
# A scrape that has not sent its request within this long is a stuck or hostile client
# (Prometheus' default scrape timeout is 10 s; it sends its request at once).
REQUEST_TIMEOUT = 5.0
# Scrapers at once: a Prometheus server or two and a curl; more is someone misbehaving, and
# each waits for the answer, so a cap bounds the agent's work.
MAX_CLIENTS = 8

_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True, slots=True)
class Sample:
    """One counter of one plane; `labels` say which network (or op, or query type) it is."""

    plane: str
    counter: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def gauge(self) -> bool:
        return (self.plane, self.counter) in GAUGES

    def family(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The metric name (without `_total`) and the labels the counter's name carries."""
        counter = self.counter
        extra: tuple[tuple[str, str], ...] = ()
        for (plane, prefix), (metric, label) in LABELLED_PREFIXES.items():
            if plane == self.plane and counter.startswith(prefix) and len(counter) > len(prefix):
                counter, extra = metric, ((label, self.counter[len(prefix) :]),)
                break
        name = _NAME_CHARS.sub("_", f"{PREFIX}_{self.plane}_{counter}").lower()
        return name, extra


def _counters(plane: str, values: Mapping[str, Any], *labels: tuple[str, str]) -> list[Sample]:
    """Numeric entries only (a stats dict may also hold lists or nested documents)."""
    return [
        Sample(plane, str(k), float(v), tuple(labels))
        for k, v in sorted(values.items())
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]


def _vtep(stats: Mapping[str, Any], vni_names: Mapping[int, str]) -> list[Sample]:
    out = _counters("vtep", stats.get("counters", {}))
    for vni_text, net in sorted(stats.get("networks", {}).items()):
        vni = int(vni_text)
        labels = (("network", vni_names.get(vni, "")), ("vni", str(vni)))
        out += _counters("vtep", net.get("counters", {}), *labels)
        fdb = net.get("fdb", [])
        # Known unicast is counted on its FDB entry only (switching.egress): sum them here.
        sums = {
            f"fdb_{k}": sum(int(r[k]) for r in fdb)
            for k in ("tx_frames", "tx_bytes", "rx_frames", "rx_bytes")
        }
        flood = net.get("counters", {})
        # Frames taken from the TAP and sent: unicast, flooded and unknown unicast.
        sums["tx_frames"] = (
            sums["fdb_tx_frames"] + flood.get("tx_flood", 0) + flood.get("tx_unknown_unicast", 0)
        )
        sums["fdb_entries"] = len(fdb)
        sums["peers"] = len(net.get("peers", []))
        learning = net.get("learning")
        if learning:
            sums["learned"] = int(learning.get("learned", 0))
        out += _counters("vtep", sums, *labels)
    return out


def collect(
    *,
    vtep: Mapping[str, Any] | None = None,
    vni_names: Mapping[int, str] | None = None,
    dns: Mapping[str, int] | None = None,
    gossip: Mapping[str, Any] | None = None,
    control: Mapping[str, int] | None = None,
    manager: Mapping[str, Any] | None = None,
    tasks: Mapping[str, int] | None = None,
    api: Mapping[str, int] | None = None,
) -> list[Sample]:
    """Every plane's counters as samples (a plane that does not run contributes none).

    `vtep`: `Vtep.stats()`; `vni_names`: VNI → network name; `dns`: `DnsServer.counters()`;
    `gossip`: `GossipService.stats()`; `control`: the control plane's counters; `manager`:
    `{"Rejections", "Connections", "Counters"}` as the agent's `info` has it; `tasks`: the
    worker side of services (the task runner's counters); `api`: the agent's own counters."""
    out: list[Sample] = []
    if vtep is not None:
        out += _vtep(vtep, vni_names or {})
    out += _counters("dns", dns or {})
    out += _counters("gossip", gossip or {})
    out += _counters("control", control or {})
    if manager is not None:
        counters = {
            k: v for k, v in manager.get("Counters", {}).items() if not k.startswith("rejected_")
        }
        out += _counters("manager", counters)
        for reason, count in sorted(manager.get("Rejections", {}).items()):
            out.append(Sample("manager", "rejected", float(count), (("reason", reason),)))
        conns = manager.get("Connections", {})
        out += _counters("manager", {f"connections_{k}": v for k, v in conns.items()})
    out += _counters("tasks", tasks or {})
    out += _counters("api", api or {})
    return out


def stats_doc(host: str, samples: Iterable[Sample]) -> dict[str, Any]:
    """What the `stats` op answers: per plane, its counters with their labels."""
    planes: dict[str, list[dict[str, Any]]] = {p: [] for p in PLANES}
    for s in samples:
        value: float = int(s.value) if s.value.is_integer() else s.value
        planes.setdefault(s.plane, []).append(
            {"counter": s.counter, "labels": dict(s.labels), "value": value}
        )
    return {"host": host, "planes": planes}


def _label_value(text: str) -> str:
    """Escaped as the exposition format says: backslash, double quote and line feed."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def render(host: str, samples: Iterable[Sample]) -> str:
    """The samples as Prometheus text: one `# TYPE` per family, its samples together, a
    `host` label on each; two counters that map to one series are added up."""
    families: dict[str, tuple[bool, dict[tuple[tuple[str, str], ...], float]]] = {}
    for s in samples:
        name, extra = s.family()
        labels = (("host", host), *s.labels, *extra)
        gauge, series = families.setdefault(name, (s.gauge, {}))
        series[labels] = series.get(labels, 0.0) + s.value
    lines: list[str] = []
    for name, (gauge, series) in sorted(families.items()):
        metric = name if gauge else f"{name}_total"
        lines.append(f"# TYPE {metric} {'gauge' if gauge else 'counter'}")
        for labels, value in sorted(series.items()):
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels)
            lines.append(f"{metric}{{{text}}} {_number(value)}")
    return "\n".join(lines) + "\n"


# ---- the HTTP endpoint ---------------------------------------------------------------------


def parse_addr(spec: str) -> tuple[str, int]:
    """`IP:PORT` (an IPv4 address; the port 1-65535) or ValueError saying what is wrong."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid metrics address {spec!r}: use IP:PORT, e.g. 127.0.0.1:9323")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"invalid port in metrics address {spec!r}") from None
    if not 1 <= number <= 65535:
        raise ValueError(f"invalid port in metrics address {spec!r}: use 1-65535")
    return host, number


def response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def answer(request: bytes, page: Callable[[], str]) -> bytes:
    """The response to one request head (pure but for `page`, which renders the metrics)."""
    line = request.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return response("400 Bad Request", b"a request line: GET /metrics HTTP/1.1\n")
    method, target = parts[0], parts[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return response("405 Method Not Allowed", b"only GET /metrics\n")
    if target != "/metrics":
        return response("404 Not Found", b"only /metrics is served here\n")
    out = response("200 OK", page().encode(), CONTENT_TYPE)
    return out.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == "HEAD" else out


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    """Bytes up to the blank line after the headers, or None when more than MAX_REQUEST."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            return None
    return data


async def serve(
    host: str,
    port: int,
    page: Callable[[], str],
    counters: Counter[str],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve GET /metrics on host:port until cancelled; `task_status` gets the bound port.
    Counts `metrics_scrapes`, `metrics_bad_requests`, `metrics_timeouts`, `metrics_busy` and
    `metrics_client_errors` in `counters`."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    busy = trio.Semaphore(MAX_CLIENTS)

    async def client(stream: trio.SocketStream) -> None:
        with contained(counters, "metrics_client_errors", log, "metrics client"):
            async with stream:
                if busy.value == 0:
                    counters["metrics_busy"] += 1
                    with trio.move_on_after(REQUEST_TIMEOUT):
                        await stream.send_all(response("503 Service Unavailable", b"busy\n"))
                    return
                async with busy:
                    with trio.move_on_after(REQUEST_TIMEOUT) as scope:
                        head = await _read_head(stream)
                        if head is None:
                            counters["metrics_bad_requests"] += 1
                            reply = response("431 Request Header Fields Too Large", b"too big\n")
                        else:
                            reply = answer(head, page)
                            if reply.startswith(b"HTTP/1.1 200"):
                                counters["metrics_scrapes"] += 1
                            else:
                                counters["metrics_bad_requests"] += 1
                        await stream.send_all(reply)
                    if scope.cancelled_caught:
                        counters["metrics_timeouts"] += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, client, listeners)
        task_status.started(listeners[0].socket.getsockname()[1])
