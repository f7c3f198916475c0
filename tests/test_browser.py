"""The report in a real browser: headless Chromium loads it from disk with every figure and no errors."""
import os
import tempfile

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing: install the Debian packages chromium and "
                              f"chromium-driver to run the browser test"),
]


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.TemporaryDirectory(prefix="actconv-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={profile.name}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium-manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def test_report_opens_from_disk(browser, report_written):
    _, index = report_written
    browser.get(index.resolve().as_uri())
    images = browser.find_elements("tag name", "img")
    assert images
    widths = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0);")
    assert len(widths) == len(images) and all(w > 0 for w in widths), widths
    table = browser.find_element("id", "findings")
    rows = table.find_elements("css selector", "tbody tr")
    assert len(rows) >= 6
    # each row shows the verdict the report's CSV holds for it, in the same order
    import pandas as pd
    csv = pd.read_csv(index.parent / "findings.csv")
    shown = [(r.find_element("css selector", "td:nth-child(2)").text,
              r.find_element("css selector", ".verdict").text) for r in rows]
    assert shown == list(zip(csv["scope"], csv["verdict"]))
    assert "<script>" in browser.title  # the malicious study name shows as text, not code
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
