"""The live web view in a real browser (Debian's chromium, driven by Selenium, headless) on a
3-host swarm lab: the page shows the hosts, a started container appears and an exited one
changes state, a killed agent's host turns Down, and the page logs no console errors.

`overlaynet lab ui` runs as a user starts it (a subprocess printing its URL). The browser loads
the page once; everything after arrives over the event stream (the page never reloads).
Waits poll the DOM and are bounds, not speed checks; the latencies seen are written beside the
screenshots (benchmarks/results/web/) for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from overlaynet import lab as labmod
from overlaynet.gossip.config import LAB_CONFIG, suspicion_timeouts
from overlaynet.web.agents import round_interval
from overlaynet.web.feed import SEND_INTERVAL
from tests.integration.labs import Lab

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.integration.web.browser import CHROMEDRIVER, CHROMIUM, chromium, lab_ui  # noqa: E402

RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "web"
# Bounds on waits, not assertions of speed. The page: the server polls every round_interval
# and sends at most every SEND_INTERVAL; a busy shared 2-core machine gets a wide margin.
MARGIN = 8.0
PAGE_BOUND = round_interval(3) + SEND_INTERVAL + MARGIN
# A killed agent is declared dead by its peers' SWIM within the longest Lifeguard suspicion
# timeout (LAB_CONFIG, 3 members) plus a probe round to miss its ack; then the page's bound.
DEAD_TIME = (
    suspicion_timeouts(LAB_CONFIG, 3)[1] + LAB_CONFIG.probe_interval + LAB_CONFIG.probe_timeout
)
DOWN_BOUND = DEAD_TIME + PAGE_BOUND

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (tools/setup.sh installs them)",
)

figures: dict[str, float] = {}
logged: list[dict[str, Any]] = []  # everything the browser's console said, across the tests


@pytest.fixture(scope="module")
def ui(swarm3: Lab) -> Iterator[str]:
    """`overlaynet lab ui` on a free port; its URL."""
    with lab_ui(swarm3.name) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser(ui: str) -> Iterator[Any]:
    try:
        with chromium(ui, window="1500,1300", console=True) as driver:
            yield driver
    finally:
        RESULTS.mkdir(parents=True, exist_ok=True)
        if figures:
            (RESULTS / "latency.json").write_text(json.dumps(figures, indent=2) + "\n")


def wait_for(driver: Any, what: str, check: Callable[[Any], Any], bound: float) -> float:
    """Poll the page until `check` holds; how long it took. Fails naming `what` at the bound."""
    start = time.monotonic()
    try:
        WebDriverWait(driver, bound, poll_frequency=0.05).until(check)
    except TimeoutException:
        shot(driver, f"failed-{re.sub(r'[^a-z0-9]+', '-', what.lower())}")
        raise AssertionError(f"the page did not show {what} within {bound:.1f} s") from None
    return time.monotonic() - start


def shot(driver: Any, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(RESULTS / f"{name}.png"))


def host_states(driver: Any) -> dict[str, str]:
    """Hosts as the tables show them (read in one script: the page replaces sections live)."""
    script = (
        "return Object.fromEntries([...document.querySelectorAll('#hosts section.host')]"
        ".map(s => [s.dataset.host, s.dataset.state]))"
    )
    return dict(driver.execute_script(script))


def graph_nodes(driver: Any, kind: str) -> dict[str, str]:
    """Nodes of one kind as the graph draws them: label's first line -> state."""
    script = (
        "return window.onetCy ? window.onetCy.nodes(`[kind='${arguments[0]}']`)"
        ".map(n => [n.data('label').split('\\n')[0], n.data('state') || '']) : []"
    )
    return dict(driver.execute_script(script, kind))


def container_row(driver: Any, host: str, name: str) -> dict[str, str] | None:
    """A container's row in its host's table: its state and text, or None."""
    script = (
        "const row = document.querySelector("
        "`section.host[data-host='${arguments[0]}'] tr[data-container='${arguments[1]}']`);"
        "return row ? {state: row.dataset.state, text: row.textContent} : null;"
    )
    row = driver.execute_script(script, host, name)
    return dict(row) if row else None


def console_problems(driver: Any) -> list[dict[str, Any]]:
    """Errors and warnings the page logged since the last look (all of it is kept in `logged`)."""
    entries = driver.get_log("browser")
    logged.extend(entries)
    return [e for e in entries if e["level"] in ("SEVERE", "WARNING")]


def test_the_page_shows_the_three_hosts(browser: Any) -> None:
    took = wait_for(
        browser,
        "three Ready hosts",
        lambda d: host_states(d) == {"node1": "Ready", "node2": "Ready", "node3": "Ready"},
        PAGE_BOUND,
    )
    figures["first_view_s"] = round(took, 3)
    assert graph_nodes(browser, "host") == {"node1": "Ready", "node2": "Ready", "node3": "Ready"}
    assert browser.find_element(By.ID, "conn").text == "live"
    shot(browser, "1-three-hosts")
    assert console_problems(browser) == []


def test_a_started_container_appears_and_a_stopped_one_shows_exited(
    swarm3: Lab, browser: Any
) -> None:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "--attachable", "uinet")
    swarm3.ok("node2", "run", "-d", "--name", "web2", "--network", "uinet", "alpine", "top")
    took = wait_for(
        browser,
        "container web2 running on node2",
        lambda d: (container_row(d, "node2", "web2") or {}).get("state") == "running",
        PAGE_BOUND,
    )
    figures["container_start_to_page_s"] = round(took, 3)
    assert graph_nodes(browser, "container").get("web2") == "running"
    assert "uinet" in (container_row(browser, "node2", "web2") or {})["text"]
    events = browser.find_element(By.ID, "events").text
    # The poll may catch it between create and start: "created, created", then "→ running".
    assert "node2: container web2 (alpine) created" in events
    shot(browser, "2-container-started")

    swarm3.ok("node2", "stop", "-t", "0", "web2")
    wait_for(
        browser,
        "container web2 exited",
        lambda d: (container_row(d, "node2", "web2") or {}).get("state") == "exited",
        PAGE_BOUND,
    )
    assert graph_nodes(browser, "container").get("web2") == "exited"
    shot(browser, "3-container-exited")
    assert console_problems(browser) == []


def test_a_killed_agent_turns_its_host_down(swarm3: Lab, browser: Any) -> None:
    killed_at = time.monotonic()
    labmod.stop_agent(swarm3.name, "node3", signal.SIGKILL)
    wait_for(browser, "node3 Down", lambda d: host_states(d).get("node3") == "Down", DOWN_BOUND)
    figures["agent_kill_to_down_s"] = round(time.monotonic() - killed_at, 3)
    figures["gossip_dead_time_bound_s"] = round(DEAD_TIME, 3)
    assert graph_nodes(browser, "host")["node3"] == "Down"
    assert host_states(browser) == {"node1": "Ready", "node2": "Ready", "node3": "Down"}
    # Ready, then Unreachable (its socket refuses at once) and maybe Suspect, then Down.
    assert re.search(r"node3: \w+ → Down", browser.find_element(By.ID, "events").text)
    shot(browser, "4-host-down")
    assert console_problems(browser) == []


def test_a_read_only_server_hides_the_packets_and_refuses_actions(ui: str, browser: Any) -> None:
    assert not browser.find_element(By.ID, "packets-panel").is_displayed()
    request = urllib.request.Request(
        ui + "api/actions/capture",
        data=b'{"network": "uinet"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


def test_the_page_logged_no_console_errors_in_any_state(browser: Any) -> None:
    console_problems(browser)
    assert browser.find_element(By.ID, "conn").text == "live"
    problems = [e for e in logged if e["level"] in ("SEVERE", "WARNING")]
    assert problems == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_server_stops_on_ctrl_c_or_term_with_streams_open(
    swarm3: Lab, sig: signal.Signals
) -> None:
    argv = [sys.executable, "-m", "overlaynet", "lab", "ui", "--lab", swarm3.name, "--port", "0"]
    # Started as a shell's background job would be: SIGINT ignored on the way in.
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline())
        assert match
        with urllib.request.urlopen(match.group(0) + "events", timeout=10) as stream:
            assert stream.readline() == b"retry: 2000\n"  # a browser is watching
            proc.send_signal(sig)
            assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
