"""A big lab's page draws a host's tables only while its section is open (issue 17's load run: a
50-host page with every table drawn was 560k DOM nodes). Nine hosts, one past the threshold, in
Debian's chromium: closed sections hold no table, opening one draws its tables, and it stays
open across the live redraws that follow."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.labs import Lab, make_lab

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTS = 9  # app.js LAZY_HOSTS is 8
BOUND = 30.0  # a bound on waits on a shared machine, not a speed check

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (tools/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def page() -> Iterator[tuple[Lab, Any]]:
    for lab in make_lab(HOSTS):
        argv = [sys.executable, "-m", "overlaynet", "lab", "ui", "--lab", lab.name, "--port", "0"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        driver = None
        try:
            assert proc.stdout is not None
            match = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline())
            assert match
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
            driver.get(match.group(0))
            yield lab, driver
        finally:
            if driver is not None:
                driver.quit()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


SECTIONS = """return [...document.querySelectorAll('#hosts section.host')].map(s => ({
  host: s.dataset.host,
  open: s.querySelector('details.tables').open,
  tables: s.querySelectorAll('table, p.empty').length,
}))"""


def test_closed_sections_hold_no_table_and_an_opened_one_stays_open(
    page: tuple[Lab, Any],
) -> None:
    lab, driver = page
    wait = WebDriverWait(driver, BOUND)
    wait.until(lambda d: len(d.execute_script(SECTIONS)) == HOSTS)
    sections = driver.execute_script(SECTIONS)
    assert all(not s["open"] and s["tables"] == 0 for s in sections), sections
    driver.execute_script(
        "document.querySelector(\"section.host[data-host='node2'] details.tables summary\").click()"
    )
    node2 = next(s for s in driver.execute_script(SECTIONS) if s["host"] == "node2")
    assert node2["open"] and node2["tables"] >= 2  # containers, gossip members, …
    # A change on node2 redraws its section from the live feed: it stays open, with the row.
    lab.ok("node2", "run", "-d", "--name", "lazy1", "alpine", "top")
    row = "section.host[data-host='node2'] tr[data-container='lazy1']"
    wait.until(lambda d: d.execute_script(f'return !!document.querySelector("{row}")'))
    others = [s for s in driver.execute_script(SECTIONS) if s["host"] != "node2"]
    assert all(not s["open"] and s["tables"] == 0 for s in others)
