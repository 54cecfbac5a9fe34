"""A big lab's page draws a host's tables only while its section is open (issue 17's load run: a
50-host page with every table drawn was 560k DOM nodes). Nine hosts, one past the threshold, in
Debian's chromium: closed sections hold no table, opening one draws its tables, and it stays
open across the live redraws that follow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.labs import Lab, make_lab

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.integration.web.browser import CHROMEDRIVER, CHROMIUM, chromium, lab_ui  # noqa: E402

HOSTS = 9  # app.js LAZY_HOSTS is 8
BOUND = 30.0  # a bound on waits on a shared machine, not a speed check

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (tools/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def page() -> Iterator[tuple[Lab, Any]]:
    for lab in make_lab(HOSTS):
        with lab_ui(lab.name) as (url, _), chromium(url) as driver:
            yield lab, driver


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
