"""What the web view's browser tests share: `overlaynet lab ui` started as a user starts it (a
subprocess printing its URL, stopped with Ctrl-C) and Debian's headless chromium driven by
Selenium. Not a test module: the three test files import it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def lab_ui(lab: str, *flags: str) -> Iterator[tuple[str, str]]:
    """`overlaynet lab ui --lab LAB --port 0 FLAGS…`: its URL and the line it printed."""
    argv = [sys.executable, "-m", "overlaynet", "lab", "ui", "--lab", lab, "--port", "0", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints its URL once it is listening
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"no URL in {line!r}"
        yield match.group(0), line
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chromium(url: str, *, window: str | None = None, console: bool = False) -> Iterator[Any]:
    """A headless chromium on `url` (`console`: keep the browser's console log)."""
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    if window is not None:
        options.add_argument(f"--window-size={window}")
    if console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        yield driver
    finally:
        driver.quit()
