"""The web view's second version on a real 3-host swarm lab:

- fed, not polling: a container started on node2 reaches the server's view through node2's
  `watch` (its change generation moves, an `asks_fed` is counted) while the safety round has
  not run again (it is set to an hour here): asserted on the cursor and counters, not on time;
- in Debian's chromium (Selenium, headless) with `--allow-actions`: node1's tables show the FDB
  entry of the peer container on node2 (with counters) and its ARP answer; a ping from the page
  captures the underlay and shows its packets decoded layer by layer with their VNI, each
  joined to node1's FDB entry that sent it; a trace from pa to pb (by name) lists both hosts'
  VTEP hops and "answered" and lights the path on the graph; a trace to a name on another
  network says it stopped at dns and marks pa; the page logs no console errors. Screenshots go
  under benchmarks/results/web/.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from overlaynet.web import server
from tests.integration.labs import Lab

RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "web"
# Bounds on waits (a shared 2-core machine), not assertions of speed.
BOUND = 30.0


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def containers_named(state: Any, host: str, name: str) -> list[Any]:
    return [
        r
        for r in state["view"].values()
        if r.get("kind") == "container" and r["host"] == host and r["name"] == name
    ]


async def wait_for(what: str, check: Callable[[], bool]) -> None:
    with trio.move_on_after(BOUND):
        while not await trio.to_thread.run_sync(check):
            await trio.sleep(0.1)
        return
    raise AssertionError(f"{what} not seen within {BOUND:g} s")


async def test_a_started_container_reaches_the_view_through_watch_not_the_poll(
    swarm3: Lab,
) -> None:
    async with trio.open_nursery() as nursery:
        serve = partial(server.serve, safety_interval=3600.0)
        (url,) = await nursery.start(serve, swarm3.name, 0, "127.0.0.1")
        # Every watcher has made its first call (cursor from the agent's epoch).
        await wait_for(
            "a cursor per host",
            lambda: set(get_json(f"{url}/api/stats")["cursors"]) == {"node1", "node2", "node3"},
        )
        before = await trio.to_thread.run_sync(get_json, f"{url}/api/stats")
        await trio.to_thread.run_sync(
            swarm3.ok, "node2", "run", "-d", "--name", "fed1", "alpine", "top"
        )
        await wait_for(
            "fed1 running in the view",
            lambda: any(
                c["state"] == "running"
                for c in containers_named(get_json(f"{url}/api/state"), "node2", "fed1")
            ),
        )
        after = await trio.to_thread.run_sync(get_json, f"{url}/api/stats")
        nursery.cancel_scope.cancel()
    assert after["safety_rounds"] == before["safety_rounds"] == 1  # only the first round ran
    assert after["cursors"]["node2"] > before["cursors"]["node2"]
    assert after["asks_fed"] > before["asks_fed"]
    await trio.to_thread.run_sync(swarm3.ok, "node2", "rm", "-f", "fed1")


# ---- in the browser, with --allow-actions ----------------------------------------------------

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.integration.web.browser import CHROMEDRIVER, CHROMIUM, chromium, lab_ui  # noqa: E402

needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (tools/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def pair(swarm3: Lab) -> Iterator[dict[str, str]]:
    """Container a on node1 and b on node2 on one attachable overlay; b's address and MAC."""
    swarm3.ok("node1", "network", "create", "-d", "overlay", "--attachable", "pktnet")
    swarm3.ok("node1", "run", "-d", "--name", "pa", "--network", "pktnet", "alpine", "top")
    swarm3.ok("node2", "run", "-d", "--name", "pb", "--network", "pktnet", "alpine", "top")
    doc = json.loads(swarm3.ok("node2", "container", "inspect", "pb"))
    doc = doc[0] if isinstance(doc, list) else doc
    net = doc["NetworkSettings"]["Networks"]["pktnet"]
    try:
        yield {"ip": net["IPAddress"], "mac": net["MacAddress"]}
    finally:
        swarm3.cli("node1", "rm", "-f", "pa")
        swarm3.cli("node2", "rm", "-f", "pb")


@pytest.fixture(scope="module")
def actions_ui(swarm3: Lab) -> Iterator[str]:
    with lab_ui(swarm3.name, "--allow-actions") as (url, line):
        assert "actions allowed" in line, line
        yield url


@pytest.fixture(scope="module")
def page(actions_ui: str, pair: dict[str, str]) -> Iterator[Any]:
    with chromium(actions_ui, window="1500,2400", console=True) as driver:
        yield driver


def shot(driver: Any, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(RESULTS / f"{name}.png"))


def until(driver: Any, what: str, check: Callable[[Any], Any]) -> Any:
    try:
        return WebDriverWait(driver, BOUND, poll_frequency=0.1).until(check)
    except TimeoutException:
        shot(driver, f"failed-{re.sub(r'[^a-z0-9]+', '-', what.lower())}")
        raise AssertionError(f"the page did not show {what} within {BOUND:g} s") from None


def fdb_rows(driver: Any, host: str, network: str) -> list[str]:
    script = (
        "return [...document.querySelectorAll("
        "`section.host[data-host='${arguments[0]}'] tr[data-network='${arguments[1]}']`)]"
        ".map(r => r.dataset.fdbMac + ' ' + r.textContent)"
    )
    return list(driver.execute_script(script, host, network))


def problems(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


@needs_chromium
def test_tables_show_the_fdb_entry_of_the_peer_container(page: Any, pair: dict[str, str]) -> None:
    rows = until(
        page,
        "node1's FDB entry for pb",
        lambda d: [r for r in fdb_rows(d, "node1", "pktnet") if r.startswith(pair["mac"])],
    )
    assert "node2" in rows[0]  # the remote VTEP's host is named
    arp = page.execute_script(
        "return document.querySelector(`section.host[data-host='node1'] "
        "tr[data-arp-ip='${arguments[0]}']`)?.textContent",
        pair["ip"].split("/")[0],
    )
    assert arp is not None and pair["mac"] in arp
    shot(page, "5-tables-fdb")
    assert problems(page) == []


@needs_chromium
def test_a_pings_packets_appear_decoded_with_their_vni(page: Any, pair: dict[str, str]) -> None:
    until(
        page, "the packets panel", lambda d: d.find_element(By.ID, "packets-panel").is_displayed()
    )
    network = Select(page.find_element(By.ID, "pkt-network"))
    until(page, "pktnet to choose", lambda d: any("pktnet" in o.text for o in network.options))
    choice = next(o for o in network.options if "pktnet" in o.text)
    vni = re.search(r"VNI (\d+)", choice.text)
    assert vni
    network.select_by_value(str(choice.get_attribute("value")))
    until(
        page,
        "pa to ping from",
        lambda d: any(
            o.get_attribute("value") == "node1/pa"
            for o in Select(d.find_element(By.ID, "pkt-from")).options
        ),
    )
    Select(page.find_element(By.ID, "pkt-from")).select_by_value("node1/pa")
    Select(page.find_element(By.ID, "pkt-to")).select_by_value(pair["ip"].split("/")[0])
    page.find_element(By.ID, "pkt-go").click()
    until(
        page,
        "the capture's result",
        lambda d: "packets" in d.find_element(By.ID, "pkt-status").text,
    )
    status = page.find_element(By.ID, "pkt-status").text
    assert "3 packets transmitted, 3 packets received" in status, status
    found = page.execute_script(
        "return [...document.querySelectorAll('#packets li.packet')].map(p => ({"
        "vni: p.dataset.vni, layers: [...p.querySelectorAll('[data-layer]')]"
        ".map(l => l.dataset.layer), text: p.textContent}))"
    )
    icmp = [p for p in found if "ICMP" in p["layers"]]
    assert icmp, found
    assert all(p["vni"] == vni.group(1) for p in icmp)
    assert icmp[0]["layers"][:4] == ["Ether", "IPv4", "UDP", "VXLAN"]
    requests_out = [p for p in icmp if "echo-request" in p["text"]]
    assert any("FDB entry on node1" in p["text"] and pair["mac"] in p["text"] for p in requests_out)
    shot(page, "6-packets-decoded")
    assert problems(page) == []


# ---- a trace from the page -------------------------------------------------------------------


@pytest.fixture(scope="module")
def elsewhere(swarm3: Lab) -> Iterator[str]:
    """Container pc on node1 on an overlay of its own: a name pa's resolver does not know."""
    swarm3.ok("node1", "network", "create", "-d", "overlay", "--attachable", "trnet2")
    swarm3.ok("node1", "run", "-d", "--name", "pc", "--network", "trnet2", "alpine", "top")
    try:
        yield "pc"
    finally:
        swarm3.cli("node1", "rm", "-f", "pc")
        swarm3.cli("node1", "network", "rm", "trnet2")


def trace_from_page(driver: Any, source: str, to: str) -> dict[str, Any]:
    """Runs a trace from the page's form; the hops, the result line and the lit elements."""
    until(driver, "the trace panel", lambda d: d.find_element(By.ID, "trace-panel").is_displayed())
    until(
        driver,
        f"{source} to trace from",
        lambda d: any(
            o.get_attribute("value") == source
            for o in Select(d.find_element(By.ID, "trace-from")).options
        ),
    )
    Select(driver.find_element(By.ID, "trace-from")).select_by_value(source)
    box = driver.find_element(By.ID, "trace-to")
    box.clear()
    box.send_keys(to)
    driver.execute_script("document.getElementById('trace-result').textContent = ''")
    driver.find_element(By.ID, "trace-go").click()
    until(
        driver,
        f"the result of the trace to {to}",
        lambda d: (
            d.find_element(By.ID, "trace-result").text.startswith("Result:")
            or d.find_element(By.ID, "trace-status").text not in ("", "tracing…")
        ),
    )
    return dict(
        driver.execute_script(
            "return {result: document.getElementById('trace-result').textContent,"
            " status: document.getElementById('trace-status').textContent,"
            " hops: [...document.querySelectorAll('#trace-hops li.hop')]"
            "   .map(h => h.dataset.host + ' ' + h.dataset.stage),"
            " lit: window.onetCy.$('.trace').map(e => e.id()),"
            " stop: window.onetCy.$('.trace-stop').map(e => e.id())}"
        )
    )


@needs_chromium
def test_a_cross_host_trace_shows_both_vteps_and_answered(page: Any, pair: dict[str, str]) -> None:
    got = trace_from_page(page, "node1/pa", "pb")
    assert got["result"] == "Result: answered", got
    assert "node1 vtep" in got["hops"] and "node2 peer-vtep" in got["hops"], got["hops"]
    assert "node2 destination" in got["hops"]
    lit = set(got["lit"])
    assert {"host/node1", "host/node2", "underlay", "ul:node1", "ul:node2"} <= lit, lit
    assert sum(1 for e in lit if e.startswith("vtep:") and e.endswith((":node1", ":node2"))) == 2
    assert any(e.startswith("ctr/node1/") for e in lit) and any(
        e.startswith("ctr/node2/") for e in lit
    )
    assert "host/node3" not in lit and got["stop"] == []
    shot(page, "7-trace-answered")
    assert problems(page) == []


@needs_chromium
def test_a_trace_to_a_name_on_another_network_names_the_stop(
    page: Any, pair: dict[str, str], elsewhere: str
) -> None:
    got = trace_from_page(page, "node1/pa", elsewhere)
    assert got["result"].startswith("Result: stopped at dns on node1"), got
    assert elsewhere in got["result"]
    (stop,) = got["stop"]
    assert stop.startswith("ctr/node1/")  # pa itself: its resolver gave no address
    assert "underlay" not in got["lit"]
    shot(page, "8-trace-stopped")
    assert problems(page) == []
