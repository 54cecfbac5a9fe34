"""Service names in DNS (agent/servicedns.py + DnsTable's names without addresses)."""

from __future__ import annotations

from ipaddress import IPv4Address

from overlaynet.agent.servicedns import ServiceNames, parse_services, service_records
from overlaynet.dns.feed import DnsView
from overlaynet.dns.records import DnsTable, NameRecord, RecordKind
from overlaynet.dns.records import Network as DnsNetwork

NET = "n1"
SERVICES = {
    "services": [
        {
            "id": "s1",
            "name": "web",
            "endpoint_mode": "vip",
            "networks": [NET],
            "vips": [{"network_id": NET, "addr": "10.0.0.2"}],
        },
        {"id": "s2", "name": "db", "endpoint_mode": "dnsrr", "networks": [NET], "vips": []},
    ]
}


def container(name: str, ip: str) -> NameRecord:
    return NameRecord(NET, name, IPv4Address(ip), RecordKind.CONTAINER)


def names(records: set[NameRecord], name: str) -> set[str]:
    return {str(r.address) for r in records if r.name == name}


def test_vip_service_answers_its_vip_and_tasks_their_addresses() -> None:
    services, bad = parse_services(SERVICES)
    recs = {NET: [container("web.1.aaa", "10.0.0.3"), container("web.2.bbb", "10.0.0.4")]}
    out, known = service_records(services, recs, {NET: "atsea"})
    assert bad == 0
    assert names(out[NET], "web") == {"10.0.0.2"}
    assert names(out[NET], "tasks.web") == {"10.0.0.3", "10.0.0.4"}
    assert known[NET] == {"web", "tasks.web", "db", "tasks.db"}


def test_dnsrr_service_answers_its_tasks() -> None:
    services, _ = parse_services(SERVICES)
    recs = {NET: [container("db.1.ccc", "10.0.0.7"), container("dbx", "10.0.0.8")]}
    out, _ = service_records(services, recs, {NET: "atsea"})
    assert names(out[NET], "db") == {"10.0.0.7"}  # `dbx` is no task of db
    assert names(out[NET], "tasks.db") == {"10.0.0.7"}


def test_no_names_on_ingress_or_networks_not_served_here() -> None:
    services, _ = parse_services(SERVICES)
    out, known = service_records(services, {}, {NET: "ingress"})
    assert out == {} and known == {}
    out, known = service_records(services, {}, {})
    assert out == {} and known == {}


def test_unreadable_service_entries_are_counted() -> None:
    services, bad = parse_services({"services": [{"name": "x", "vips": [{"addr": "nope"}]}, 7]})
    assert services == [] and bad == 2


def _table_with(view_records: list[NameRecord]) -> DnsTable:
    table = DnsTable()
    net = DnsNetwork(NET, "atsea")
    view = DnsView({NET: net}, {NET: set(view_records)}, {"c1": {NET}})
    sn = ServiceNames()
    assert sn.update(SERVICES)
    sn.add_to(view, table)
    table.set_network(net)
    table.replace_records(NET, view.records[NET])
    table.attach("c1", NET)
    return table


def test_service_without_running_task_exists_with_no_address() -> None:
    # moby#34327: between tasks the name answers NOERROR/empty, never NXDOMAIN.
    table = _table_with([])
    assert table.resolve("c1", "db") == []
    assert table.resolve("c1", "tasks.db") == []
    assert table.resolve("c1", "web") == [IPv4Address("10.0.0.2")]
    assert table.resolve("c1", "nosuch") is None


def test_service_names_change_only_when_the_services_do() -> None:
    sn = ServiceNames()
    assert sn.update(SERVICES)
    assert not sn.update(SERVICES)
    assert sn.update({"services": []})


def test_vip_backends_are_the_running_tasks_on_that_network_for_both_protocols() -> None:
    from overlaynet.agent.lb import desired_vips
    from overlaynet.host.nft import Backend, VipKey

    services, _ = parse_services(SERVICES)
    task_ips = {(NET, "web"): {IPv4Address("10.0.0.4"), IPv4Address("10.0.0.3")}}
    wanted = desired_vips(services, task_ips, NET)
    backends = (Backend("10.0.0.3"), Backend("10.0.0.4"))
    # dnsrr services (db) have no VIP; every port of the VIP, tcp and udp.
    assert wanted == {
        VipKey("10.0.0.2", None, "tcp"): backends,
        VipKey("10.0.0.2", None, "udp"): backends,
    }
    assert desired_vips(services, task_ips, "other") == {}
    # No running task: the VIP stays, with no backend (it refuses rather than hangs).
    assert desired_vips(services, {}, NET)[VipKey("10.0.0.2", None, "tcp")] == ()


def test_routing_mesh_ports_and_backends() -> None:
    from overlaynet.agent.lb import ingress_backends, published_ports
    from overlaynet.agent.tasks import AssignedTask
    from overlaynet.host.nft import Backend, PortMapping, VipKey

    doc = {
        "services": [
            {
                "name": "app",
                "networks": ["ing"],
                "vips": [],
                "ports": [{"protocol": "tcp", "target": 8080, "published": 80, "mode": "ingress"}],
            }
        ]
    }
    services, bad = parse_services(doc)
    assert bad == 0
    ips = {("ing", "app"): {IPv4Address("10.255.0.5"), IPv4Address("10.255.0.6")}}
    assert ingress_backends(services, ips, "ing", "172.18.0.2") == {
        VipKey("172.18.0.2", 80, "tcp"): (Backend("10.255.0.5", 8080), Backend("10.255.0.6", 8080))
    }
    db = AssignedTask.from_doc(
        {
            "id": "t1", "service_name": "db", "name": "db.1", "image": "x",
            "desired_state": "running", "state": "running",
            "ports": [{"protocol": "tcp", "target": 1433, "published": None, "mode": "host"}],
        }
    )  # fmt: skip
    wanted = published_ports(services, "172.18.0.2", [(db, "172.18.0.3")])
    assert wanted == {
        (80, "tcp"): PortMapping(80, "tcp", "172.18.0.2", 80),
        # mode=host without a published port publishes the target, masqueraded to the task.
        (1433, "tcp"): PortMapping(1433, "tcp", "172.18.0.3", 1433, masquerade=True),
    }
    # No ingress sandbox here yet: only the host-mode task's port.
    assert set(published_ports(services, None, [(db, "172.18.0.3")])) == {(1433, "tcp")}
