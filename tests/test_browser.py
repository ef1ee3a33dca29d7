"""The staff pages in a real browser (Debian's Chromium driven by Playwright), against the
app as `practicesync serve` runs it."""

import json
import os
from pathlib import Path

import pytest

from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from tests.factories import list_row, write_list
from tests.test_serve import (
    EMAIL,
    PASSWORD,
    cli,
    served_app,  # noqa: F401  (the fixture)
    serving,
    )

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Kept after the run (`make test` sets PRACTICESYNC_HOME=var/test): look at them.
SCREENSHOTS = Path(os.environ.get("PRACTICESYNC_HOME", "var")) / "screenshots"
SCREENSHOT = SCREENSHOTS / "browser-patients.png"
DECEASED_SCREENSHOT = SCREENSHOTS / "browser-patient-deceased.png"
RESULTS_SCREENSHOT = SCREENSHOTS / "browser-results.png"
RECALLS_SCREENSHOT = SCREENSHOTS / "browser-recalls.png"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

GREY = "rgb(163, 168, 176)"   # .tick.non-digital in site.css
GREEN = "rgb(31, 138, 76)"    # .tick.digital
PAUSED = "rgb(255, 243, 205)"  # .badge.seq-to_action_paused


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, once per test module; each test opens its own contexts."""
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright import sync_api
    # Never let Playwright look for (or fetch) a browser build of its own.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def new_context(browser):
    """A fresh browser profile (its own cookies) with a laptop's screen."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def page(browser):
    context = new_context(browser)
    try:
        yield context.new_page()
    finally:
        context.close()


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


def results_row(result_id, pms_id, test_name, performed, action, **fields) -> dict:
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(result_id=result_id, pms_id=pms_id, test_name=test_name, performed_on=performed,
               reported_on="2026-11-21", actioned_on="2026-11-21" if action else "",
               action=action, filed_under="Investigation Report")
    row.update(fields)
    return row


@pytest.fixture
def served_results_app(tmp_path):
    """A Best Practice practice set up through the CLI, with patients and actioned results
    imported by `results sync` from a CSV, served by `practicesync serve`."""
    cli(tmp_path, "migrate", "--no-input", "-v", "0")
    slug = json.loads(cli(tmp_path, "practice", "create", "--name", "Harbour Medical Centre",
                          "--pms", "bestpractice", "--json"))["slug"]
    cli(tmp_path, "practice", "permit", "--practice", slug, "--granted-by", "Dr Data Controller",
        "--dpia-ref", "DPIA-2026-02")
    cli(tmp_path, "staff", "add", "--practice", slug, "--email", EMAIL, "--role", "reception",
        "--password-stdin", stdin=PASSWORD + "\n")
    patients = write_list(tmp_path / "list.csv", [
        list_row(pms_id="P1", given_name="Nora", family_name="Greyling",
                 mobile_phone="0412 345 601"),
        list_row(pms_id="P2", given_name="Dana", family_name="Greenwood",
                 mobile_phone="0412 345 602"),
        list_row(pms_id="P3", given_name="Omar", family_name="Hale", home_phone="02 9123 4567"),
    ])
    cli(tmp_path, "patients", "sync", "--practice", slug, "--source", str(patients))
    results = write_list(tmp_path / "results.csv", [
        results_row("R1", "P1", "FBC", "2026-11-18", "Non-Urgent Appointment"),
        results_row("R2", "P1", "UEC", "2026-11-18", "Non-Urgent Appointment"),
        results_row("R3", "P2", "INR", "2026-11-19", "Urgent appointment",
                    comment="INR 6.1: stop warfarin, see today"),
        results_row("R4", "P3", "Iron studies", "2026-11-17", "Nurse to Advise",
                    comment="Low iron: start supplements"),
        results_row("R5", "P2", "TSH", "2026-11-10", "No action"),
        results_row("R6", "P1", "PSA", "2026-11-20", ""),
        results_row("R7", "P3", "Skin lesion photo", "2026-11-20", "Non-Urgent Appointment",
                    filed_under="Clinical Photo"),
    ], RESULT_COLUMNS)
    summary = json.loads(cli(tmp_path, "results", "sync", "--practice", slug, "--source",
                             str(results), "--json"))
    assert summary["errors"] == [] and summary["groups_created"] == 4
    yield from serving(tmp_path, slug)


def test_results_and_recalls_summary_in_a_browser(served_results_app, page):
    from playwright.sync_api import expect

    app = served_results_app
    results = f"{app.base}/p/{app.slug}/results/"
    summary = f"{app.base}/p/{app.slug}/recalls/summary/"
    page.goto(results)
    page.get_by_label("Email").fill(app.email)
    page.get_by_label("Password").fill(app.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(results)
    expect(page.get_by_role("heading", name="Results")).to_be_visible()
    nav = page.get_by_role("navigation", name="Practice pages")
    expect(nav.get_by_role("link", name="Results")).to_have_attribute("aria-current", "page")

    # One row per patient per day, newest first; the unactioned PSA and the photo filed
    # where results do not count are not there.
    rows = page.locator("table.results tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.nth(0)).to_contain_text("GREENWOOD, Dana")
    expect(rows.nth(0)).to_contain_text("19/11/2026")
    expect(rows.nth(3)).to_contain_text("10/11/2026")
    body = page.locator("table.results tbody")
    expect(body).not_to_contain_text("PSA")
    expect(body).not_to_contain_text("Skin lesion photo")
    nora = page.locator("table.results tbody tr", has_text="GREYLING, Nora")
    expect(nora.locator("ul.tests li")).to_have_text(["FBC", "UEC"])
    expect(nora).to_contain_text("Template: Non-urgent results")
    paused = nora.locator(".badge")
    expect(paused).to_have_text("To action – Paused")
    expect(paused).to_have_css("background-color", PAUSED)
    expect(page.locator("table.results tbody tr", has_text="10/11/2026")).to_contain_text(
        "No action")

    # The disposition filter, as staff use it.
    page.get_by_label("Disposition").select_option("checklist")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(2)
    expect(body).not_to_contain_text("GREYLING")
    page.get_by_label("Disposition").select_option("")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(4)
    page.screenshot(path=str(RESULTS_SCREENSHOT), full_page=True)
    assert RESULTS_SCREENSHOT.stat().st_size > 5_000

    # Recalls > Summary: most urgent first, with the doctor's comment for the phone call.
    nav.get_by_role("link", name="Recalls > Summary").click()
    expect(page).to_have_url(summary)
    to_do = page.locator("table.checklist.to-do tbody tr")
    done = page.locator("table.checklist.done tbody tr")
    expect(to_do).to_have_count(2)
    expect(to_do.nth(0)).to_contain_text("Return Urgent")
    expect(to_do.nth(0)).to_contain_text("INR 6.1: stop warfarin, see today")
    expect(to_do.nth(0)).to_contain_text("+61412345602")
    expect(to_do.nth(1)).to_contain_text("Nurse to Advise")
    expect(done).to_have_text(["Nothing done yet."])

    to_do.filter(has_text="HALE, Omar").get_by_role("button", name="Mark done").click()
    expect(page).to_have_url(summary)
    expect(page.get_by_role("status")).to_contain_text("Marked done.")
    expect(to_do).to_have_count(1)
    expect(to_do).not_to_contain_text("HALE")
    expect(done).to_have_count(1)
    expect(done).to_contain_text("HALE, Omar")
    expect(done).to_contain_text(app.email)
    page.screenshot(path=str(RECALLS_SCREENSHOT), full_page=True)
    assert RECALLS_SCREENSHOT.stat().st_size > 5_000


STARTED_SCREENSHOT = SCREENSHOTS / "browser-results-started.png"
PATIENT_MESSAGE_SCREENSHOT = SCREENSHOTS / "browser-patient-message.png"
MESSAGES_SCREENSHOT = SCREENSHOTS / "browser-messages.png"


def test_start_a_paused_sequence_and_message_a_patient_in_a_browser(served_results_app, page):
    from playwright.sync_api import expect

    app = served_results_app
    results = f"{app.base}/p/{app.slug}/results/"
    page.goto(results)
    page.get_by_label("Email").fill(app.email)
    page.get_by_label("Password").fill(app.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(results)

    nora = page.locator("table.results tbody tr", has_text="GREYLING, Nora")
    expect(nora.locator(".badge")).to_have_text("To action – Paused")
    expect(nora.get_by_role("button")).to_have_text(["Start", "Cancel"])
    # Keyboard only: focus the button by its accessible name and press Enter.
    start = nora.get_by_role("button", name="Start follow-up for GREYLING, Nora, 18/11/2026")
    start.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Started")
    expect(nora.locator(".badge")).to_have_text("Active")
    expect(nora.get_by_role("button")).to_have_text(["Pause", "Cancel"])
    page.screenshot(path=str(STARTED_SCREENSHOT), full_page=True)
    assert STARTED_SCREENSHOT.stat().st_size > 5_000

    # The patient page's Message form: a refusal is explained, a send is listed.
    nav = page.get_by_role("navigation", name="Practice pages")
    nora.get_by_role("link", name="GREYLING, Nora").click()
    # The Video invite form has its own channel radios: the forms are named by their headings.
    form = page.get_by_role("form", name="Send a message")
    form.get_by_label("Email", exact=True).check()
    form.get_by_role("textbox", name="Message").fill("Hello {first_name}, please call us.")
    form.get_by_role("button", name="Send message").click()
    expect(form.get_by_role("alert")).to_contain_text("Not sent:")
    expect(form.get_by_role("textbox", name="Message")).to_have_value(
        "Hello {first_name}, please call us.")
    form.get_by_label("SMS", exact=True).check()
    form.get_by_role("button", name="Send message").click()
    expect(page.get_by_role("status")).to_contain_text("Message queued.")
    # The patient's Messages, not the Follow-ups table above it.
    listed = page.get_by_role("region", name="Messages").locator("table.messages-list tbody")
    expect(listed.locator("tr")).to_have_count(1)
    expect(listed).to_contain_text("Hello Nora, please call us.")
    page.screenshot(path=str(PATIENT_MESSAGE_SCREENSHOT), full_page=True)

    nav.get_by_role("link", name="Messages").click()
    expect(nav.get_by_role("link", name="Messages")).to_have_attribute("aria-current", "page")
    expect(page.locator("table.messages-list tbody tr")).to_have_count(1)
    expect(page.locator("table.messages-list tbody")).to_contain_text("GREYLING, Nora")
    page.screenshot(path=str(MESSAGES_SCREENSHOT), full_page=True)
    nav.get_by_role("link", name="Tasks").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    expect(page.locator("table.tasks tbody")).to_contain_text("No open tasks.")
