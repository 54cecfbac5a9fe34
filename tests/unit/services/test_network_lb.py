"""`network lb NET` (issue 13): the agent's document of a network's load balancing (views.lb_doc)
and the CLI's text of it (service.lb_table)."""

from __future__ import annotations

import pytest

from overlaynet.agent.tasks import TaskNetwork
from overlaynet.agent.views import lb_doc
from overlaynet.cli.service import idle_text, lb_table
from overlaynet.cluster import lbidle
from overlaynet.host.nft import Backend, BackendView, LbView, VipKey, VipView

RULES = "table ip overlaynet_lb {\n  chain v_10_0_0_2_tcp_any { dnat to 10.0.0.5 }\n}\n"


def view() -> LbView:
    web = VipKey("10.0.0.2", None, "tcp")
    mesh = VipKey("172.18.0.2", 8080, "tcp")
    return LbView(
        (
            VipView(
                web, (BackendView(Backend("10.0.0.5"), 7, 1), BackendView(Backend("10.0.0.6"), 3))
            ),
            VipView(mesh, (BackendView(Backend("10.255.0.5", 80), 2),)),
        ),
        RULES,
    )


def test_each_vip_names_its_service_and_each_backend_its_task() -> None:
    doc = lb_doc(
        "appnet",
        "n1",
        "lb_appnet",
        "10.0.0.4",
        view(),
        {"10.0.0.2": "web", "172.18.0.2:8080/tcp": "mesh"},
        {"10.0.0.5": "web.1.t1", "10.255.0.5": "mesh.1.t2"},
    )
    assert doc["Sandbox"] == "lb_appnet" and doc["LbAddress"] == "10.0.0.4"
    assert doc["Rules"] == RULES
    web, mesh = doc["VIPs"]
    assert (web["VIP"], web["Service"]) == ("10.0.0.2:*/tcp", "web")
    assert web["Backends"] == [
        {"Address": "10.0.0.5", "Task": "web.1.t1", "Connections": 7, "Active": 1},
        {"Address": "10.0.0.6", "Task": "", "Connections": 3, "Active": 0},
    ]
    assert (mesh["VIP"], mesh["Service"]) == ("172.18.0.2:8080/tcp", "mesh")
    assert mesh["Backends"][0]["Address"] == "10.255.0.5:80"


def test_the_text_has_a_row_per_backend_and_the_rules() -> None:
    doc = lb_doc("appnet", "n1", "lb_appnet", "10.0.0.4", view(), {"10.0.0.2": "web"}, {})
    text = lb_table(doc)
    lines = text.splitlines()
    assert lines[0] == "network appnet: load balancer lb_appnet at 10.0.0.4"
    assert lines[1].split() == ["VIP", "SERVICE", "BACKEND", "TASK", "CONNECTIONS", "ACTIVE"]
    assert lines[2].split() == ["10.0.0.2:*/tcp", "web", "10.0.0.5", "-", "7", "1"]
    assert lines[4].split() == ["172.18.0.2:8080/tcp", "-", "10.255.0.5:80", "-", "2", "0"]
    assert text.endswith("nft rules as installed:\n" + RULES.rstrip())


def test_a_node_without_a_sandbox_on_the_network_says_so() -> None:
    doc = lb_doc("appnet", "n1", None, None, None, {}, {})
    assert doc["VIPs"] == [] and doc["Rules"] == ""
    assert "no load balancer on this node" in lb_table(doc)


def test_idle_timeout_option_is_validated_and_travels_as_a_label() -> None:
    labels = lbidle.fold_into_labels({"lb-idle-timeout": "7200"}, {"team": "a"})
    assert labels == {"team": "a", lbidle.LB_IDLE_LABEL: "7200"}
    assert lbidle.from_labels(labels) == 7200
    assert lbidle.from_labels({}) is None
    assert lbidle.from_labels({lbidle.LB_IDLE_LABEL: "nonsense"}) is None
    for bad in ("soon", "0", "-5", str(lbidle.MAX_SECONDS + 1)):
        with pytest.raises(lbidle.BadIdleTimeout, match="lb-idle-timeout"):
            lbidle.fold_into_labels({"lb-idle-timeout": bad}, {})
    assert lbidle.fold_into_labels({}, {"x": "1"}) == {"x": "1"}
    text = idle_text({"Seconds": 432000, "Source": "kernel default", "Sysctl": "net.netfilter.x"})
    assert text.startswith("idle connections kept 432000 s (5 days, kernel default")


def test_an_lb_entry_carries_its_networks_idle_timeout() -> None:
    entry = {
        "network_id": "n1", "network_name": "appnet", "vni": 4097, "subnet": "10.0.1.0/24",
        "gateway": "10.0.1.1", "ip": "10.0.1.5", "mac": "02:42:0a:00:01:05",
    }  # fmt: skip
    assert TaskNetwork.from_doc(entry).idle_timeout is None
    assert TaskNetwork.from_doc({**entry, "idle_timeout": None}).idle_timeout is None
    assert TaskNetwork.from_doc({**entry, "idle_timeout": 7200}).idle_timeout == 7200
    with pytest.raises(TypeError):
        TaskNetwork.from_doc({**entry, "idle_timeout": "7200"})
