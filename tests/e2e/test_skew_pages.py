"""The skew review pages in a real browser: headless Chromium opens /skew and /skew/{id} served by uvicorn on
127.0.0.1 from a private database holding two reports; the inline-SVG charts render with a non-zero size;
screenshots are saved under test-artifacts/.

Needs the `chromium` and `chromium-driver` apt packages and the `selenium` package; skipped (saying which
is missing) without them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.records.skew_reports import save_report
from core.settings import PROJECT_ROOT
from core.stores.database import create_db_engine, upgrade_schema
from tests.servers import free_port, private_database, server_endpoints
from tests.skew_samples import sample_report, skew_app

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium is not installed (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A private database on the test servers, schema at head, with two reports (the newer one skewed)."""
    with (
        server_endpoints(tmp_path_factory.mktemp("stack")) as (admin, _),
        private_database(admin) as database,
    ):
        engine = create_db_engine(database)
        upgrade_schema(engine)
        for seed, skew in ((1, 0.0005), (2, 0.03)):
            with Session(engine) as session, session.begin():
                save_report(session, report=sample_report(seed=seed, skew=skew))
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def base_url(engine: Engine) -> Iterator[str]:
    """The skew app served by uvicorn on a free loopback port, in a thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(skew_app(engine), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through the system chromedriver, with a fresh profile and a laptop-sized window."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    service_module = pytest.importorskip("selenium.webdriver.chrome.service")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tandem-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1366,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=service_module.Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _svg_sizes(driver: Any, selector: str) -> list[tuple[float, float]]:
    """(width, height) in CSS pixels of each element matching `selector`, as laid out by the browser."""
    sizes = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; });",
        selector,
    )
    return [(float(w), float(h)) for w, h in sizes]


def _screenshot(driver: Any, name: str) -> Path:
    """A full-page PNG under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1366, min(max(height, 900), 8000))
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"no screenshot saved at {path}"
    driver.set_window_size(1366, 900)
    return path


def test_reports_page_draws_the_trend(browser: Any, base_url: str) -> None:
    """/skew: the trend SVG has a visible size, one point per report (each with a size), and badges."""
    browser.get(f"{base_url}/skew")
    assert browser.title.startswith("Skew reports")
    (trend,) = _svg_sizes(browser, "svg#trend")
    assert trend[0] > 300
    assert trend[1] > 100
    points = _svg_sizes(browser, "svg#trend circle")
    assert len(points) == 2
    assert all(w > 0 and h > 0 for w, h in points)
    assert _svg_sizes(browser, "svg#trend polyline")[0][0] > 0
    badges = browser.execute_script("return document.querySelectorAll('#reports .badge').length")
    assert badges >= 4  # status and parity per report
    path = _screenshot(browser, "skew-list.png")
    assert path.stat().st_size > 5_000


def test_report_page_draws_bars_and_histograms(browser: Any, base_url: str) -> None:
    """/skew/{id}: the mismatch bars, one histogram per feature with offline and online bars, the examples
    table and the parity section are laid out with non-zero sizes."""
    browser.get(f"{base_url}/skew")
    newest = browser.execute_script("return document.querySelector('#reports tbody a').getAttribute('href')")
    browser.get(f"{base_url}{newest}")
    (bars,) = _svg_sizes(browser, "svg#mismatch-bars")
    assert bars[0] > 300
    assert bars[1] > 50
    filled = [size for size in _svg_sizes(browser, "svg#mismatch-bars rect.bar") if size[0] > 0]
    assert len(filled) == 5  # every feature has skew in the newer report
    histograms = _svg_sizes(browser, "svg.histogram")
    assert len(histograms) == 5
    assert all(w > 100 and h > 50 for w, h in histograms)
    drawn = _svg_sizes(browser, "svg.histogram rect")
    assert sum(1 for w, h in drawn if w > 0 and h > 0) > 20
    for table in ("#features", "#examples", "#parity-counts"):
        (size,) = _svg_sizes(browser, table)
        assert size[0] > 0, table
        assert size[1] > 0, table
    path = _screenshot(browser, "skew-report.png")
    assert path.stat().st_size > 10_000
    assert os.access(path, os.R_OK)
