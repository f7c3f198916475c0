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


def test_hovering_a_curve_names_it_and_the_legend_hides_it(browser, report_written):
    """The interactive epoch curves: a real mouse over a point shows the trace's activation,
    value and interval; a click on its legend entry hides the line. From disk, no network."""
    from selenium.webdriver.common.action_chains import ActionChains
    out, index = report_written
    assert (index.parent / "plotly.min.js").exists()
    browser.get(index.resolve().as_uri())
    div = browser.find_element("css selector", ".plotly-figure")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", div)
    point = browser.execute_script("""
        var gd = arguments[0], k = gd._fullData.length - 1, tr = gd._fullData[k], i = 1;
        var xa = gd._fullLayout[tr.xaxis.replace('x', 'xaxis')], ya = gd._fullLayout[tr.yaxis.replace('y', 'yaxis')];
        var box = gd.getBoundingClientRect();
        return {k: k, name: tr.name, y: tr.y[i], x: xa._offset + xa.d2p(tr.x[i]) - box.width / 2,
                top: ya._offset + ya.d2p(tr.y[i]) - box.height / 2};""", div)
    ActionChains(browser).move_to_element_with_offset(div, int(point["x"]), int(point["top"])).perform()
    texts = [e.text for e in browser.find_elements("css selector", ".hoverlayer .hovertext")]
    assert len(texts) == 1 and texts[0].startswith(point["name"]), (texts, point)
    assert "95% CI" in texts[0] and f"{point['y']:.3g}"[:3] in texts[0]
    import pandas as pd
    assert point["name"] in set(pd.read_csv(index.parent / "per_run.csv")["activation"])
    # the legend: the entry of that trace hides it in every panel
    entries = div.find_elements("css selector", ".legend .traces")
    names = [e.text for e in entries]
    toggle = entries[names.index(point["name"])].find_element("css selector", ".legendtoggle")
    ActionChains(browser).move_to_element(toggle).click().perform()
    from selenium.webdriver.support.ui import WebDriverWait  # a click waits out the double-click time
    hidden = WebDriverWait(browser, 10).until(lambda b: b.execute_script(
        "return arguments[0]._fullData.filter(t => t.visible === 'legendonly').map(t => t.name);", div))
    assert set(hidden) == {point["name"]}
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
