"""The HTML report opens in headless Chromium without errors and shows its tables and figures."""

from __future__ import annotations

import shutil

import pytest
from test_report import write_fake_sweeps

from fishaug.report.build import ReportOptions, build_report_from

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# Flags for a sandbox-less container without network: no GPU, no background traffic.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromedriver are not installed; `make browser` installs them as root "
            "on Debian or Ubuntu (apt-get install chromium chromium-driver)."
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium_profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_report_page_loads_with_tables_and_figures(browser, tmp_path):
    from selenium.webdriver.common.by import By

    sweeps = write_fake_sweeps(tmp_path / "logs")
    result = build_report_from(sweeps, tmp_path / "report", ReportOptions(bootstrap_resamples=500))

    browser.get(result.html.as_uri())

    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    assert browser.title == "fishaug: comparing runs"
    summary_rows = browser.find_elements(By.CSS_SELECTOR, "#summary-table tbody tr")
    assert len(summary_rows) == 5
    assert summary_rows[0].find_element(By.TAG_NAME, "td").text == "randaugment n=2 m=9"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#summary-table tr.baseline")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#failed-table tbody tr")) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#comparison-table tbody tr")) == 4

    figures = browser.find_elements(By.CSS_SELECTOR, "figure img")
    assert len(figures) == len(result.figures)
    for image in figures:
        width = browser.execute_script(
            "return arguments[0].complete ? arguments[0].naturalWidth : 0", image
        )
        assert width > 100, image.get_attribute("alt")
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#label-issues-table img.thumb")
    assert thumbnails
    for image in thumbnails:
        assert browser.execute_script("return arguments[0].naturalWidth", image) > 0
