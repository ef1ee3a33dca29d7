"""The Patients page in a real browser (Debian's Chromium driven by Playwright), against the
app as `practicesync serve` runs it."""

import os
from pathlib import Path

import pytest

from tests.test_serve import served_app  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path("/tmp/patients.png")
DECEASED_SCREENSHOT = Path("/tmp/patient-deceased.png")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

GREY = "rgb(163, 168, 176)"   # .tick.non-digital in site.css
GREEN = "rgb(31, 138, 76)"    # .tick.digital


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright import sync_api
    # Never let Playwright look for (or fetch) a browser build of its own.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 720})
            context.set_default_timeout(15_000)
            yield context.new_page()
        finally:
            browser.close()


def test_patients_page_in_a_browser_shows_the_grey_tick(served_app, page):  # noqa: F811
    from playwright.sync_api import expect

    patients = f"{served_app.base}/p/{served_app.slug}/patients/"
    page.goto(patients)
    expect(page).to_have_url(f"{served_app.base}/login/?next=/p/{served_app.slug}/patients/")

    page.get_by_label("Email").fill(served_app.email)
    page.get_by_label("Password").fill(served_app.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(patients)
    expect(page.get_by_role("heading", name="Patients")).to_be_visible()

    grey_row = page.locator("table.patients tbody tr", has_text="GREYLING, Nora")
    grey = grey_row.locator(".tick.non-digital")
    expect(grey).to_be_visible()
    expect(grey).to_have_attribute("title", "Non-digital: from the practice list")
    expect(grey).to_have_css("background-color", GREY)
    expect(grey_row.locator(".tick.digital")).to_have_count(0)

    green_row = page.locator("table.patients tbody tr", has_text="GREENWOOD, Dana")
    green = green_row.locator(".tick.digital")
    expect(green).to_be_visible()
    expect(green).to_have_css("background-color", GREEN)

    # The stylesheet really applied: ticks are round badges, not bare check marks.
    box = grey.bounding_box()
    assert box is not None and 12 <= box["width"] <= 30 and abs(box["width"] - box["height"]) < 2
    assert grey.evaluate("e => getComputedStyle(e).borderRadius") == "50%"

    # The filter works from the form, as staff use it.
    page.get_by_label("Digital", exact=True).select_option("no")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.patients tbody tr")).to_have_count(2)
    expect(page.locator("table.patients tbody")).to_contain_text("GREYLING, Nora")
    expect(page.locator("table.patients tbody")).not_to_contain_text("GREENWOOD")
    page.goto(patients)

    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 5_000

    # The deep link a PMS toolbar button opens.
    page.get_by_role("link", name="GREYLING, Nora").click()
    expect(page).to_have_url(f"{patients}P1")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Nora GREYLING")
    expect(page.locator(".warning")).to_have_count(0)

    # A deceased patient's page says plainly that nothing is sent.
    page.goto(f"{patients}P3")
    warning = page.locator("p.warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("Deceased (01/10/2026): no messages are sent")
    page.screenshot(path=str(DECEASED_SCREENSHOT), full_page=True)
