"""The endpoint table's record: one container interface on a swarm network (codec, pure).

The one place its bytes are written and read: the control plane publishes it, the host core
turns other hosts' records into FDB entries, ARP answers and names, and `gossip endpoints`
shows them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlaynet.dns.records import NameRecord, RecordKind
from overlaynet.wire.ethernet import mac_to_bytes, mac_to_str

# The gossip table that carries endpoint records (libnetwork's networkdb calls it the same).
ENDPOINT_TABLE = "endpoint_table"


class BadEndpointRecord(ValueError):
    """An endpoint entry from a peer that does not parse: counted and ignored."""


@dataclass(frozen=True)
class EndpointRecord:
    """One container interface on a swarm network, as other hosts need to know it."""

    name: str
    container: str
    ip: str
    mac: str
    host: str  # the underlay address of the VTEP it lives behind
    aliases: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        doc = {
            "name": self.name,
            "container": self.container,
            "ip": self.ip,
            "mac": self.mac,
            "host": self.host,
            "aliases": list(self.aliases),
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> EndpointRecord:
        try:
            doc = json.loads(data)
            return cls(
                name=str(doc["name"]),
                container=str(doc["container"]),
                ip=str(IPv4Address(doc["ip"])),
                mac=mac_to_str(mac_to_bytes(str(doc["mac"]))),
                host=str(IPv4Address(doc["host"])),
                aliases=tuple(str(a) for a in doc.get("aliases", [])),
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise BadEndpointRecord(str(e)) from None

    def dns_records(self, network_id: str) -> list[NameRecord]:
        ip = IPv4Address(self.ip)
        out = [
            NameRecord(network_id, self.name, ip, RecordKind.CONTAINER),
            NameRecord(network_id, self.container[:12], ip, RecordKind.SHORT_ID),
        ]
        out += [NameRecord(network_id, a, ip, RecordKind.ALIAS) for a in self.aliases]
        return out
