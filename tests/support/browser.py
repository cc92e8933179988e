"""A real headless Chromium (Debian's chromium and chromium-driver), driven by Selenium.

Selenium goes through the packaged chromedriver, named explicitly so it never tries to
download one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from harness.waiting import wait_until


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed: run `make deps` (apt chromium chromium-driver)"
        )
    return path


def trusting_home(home: Path, ca_certificate: Path) -> Path:
    """A home directory whose NSS database (~/.pki/nssdb, where Chromium on Linux keeps its
    trust) trusts ca_certificate to identify web servers: a real trust, not an ignored error."""
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True, exist_ok=True)
    certutil = _binary("certutil")
    subprocess.run(
        [certutil, "-d", f"sql:{database}", "-N", "--empty-password"], check=True, timeout=30
    )
    subprocess.run(
        [certutil, "-d", f"sql:{database}", "-A", "-t", "C,,", "-n", "shield lab CA"]
        + ["-i", str(ca_certificate)],
        check=True,
        timeout=30,
    )
    return home


@contextmanager
def chromium(home: Path | None = None) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium for one test, quit when the block ends; with home, Chromium
    runs with that HOME (see trusting_home).

    Open it inside the API's block: Chromium keeps an abandoned event stream's socket open to
    drain it, and the API's shutdown would wait for that stream until the test gives up.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1100",
    ):
        options.add_argument(argument)
    # Console and network errors, for tests that check none happened (see browser_errors).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    environment = None
    if home is not None:
        environment = {**os.environ, "HOME": str(home)}
        options.add_argument(f"--user-data-dir={home / 'chromium'}")
    driver = webdriver.Chrome(
        service=Service(_binary("chromedriver"), env=environment), options=options
    )
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_in_page(
    driver: webdriver.Chrome,
    script: str,
    accept: Callable[[Any], bool] = bool,
    timeout_s: float = 15.0,
    arguments: tuple[Any, ...] = (),
) -> Any:
    """Evaluate script in the page until accept(result); returns the accepted result."""
    results: list[Any] = []

    def accepted() -> bool:
        results.append(driver.execute_script(script, *arguments))
        return accept(results[-1])

    wait_until(
        accepted,
        timeout_s,
        describe=lambda: f"the page to satisfy {script!r}; last value {results[-1]!r}",
    )
    return results[-1]


def browser_errors(driver: webdriver.Chrome) -> list[str]:
    """The console's messages so far (each read once), such as failed network loads."""
    return [entry["message"] for entry in driver.get_log("browser")]
