"""End-to-end journeys in a real browser (Debian's Chromium driven by Playwright) against one
practice as `practicesync serve` runs it, set up only through the CLI as an operator would.

Each journey asserts what staff see on the page, and where it matters what the database
holds (through `practicesync export`). Every page visited is saved as a screenshot named by
its step under $PRACTICESYNC_HOME/screenshots/ (`make test`: var/test/screenshots/): look at
them, a page that renders wrong is a bug. Each page is also checked to fit a laptop's
1280-pixel width, and each journey's main action is reached with Tab and shows its focus.
"""

import base64
import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field
from functools import partial
from zoneinfo import ZoneInfo

import pytest

from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from tests.factories import list_row, write_list
from tests.test_browser import (
    GREY,
    PAUSED,
    SCREENSHOTS,
    browser,  # noqa: F401  (the fixture)
    new_context,
    results_row,
)
from tests.test_serve import PASSWORD, Served, cli, serving

pytestmark = pytest.mark.slow

ADMIN = "manager@harbour.example"
SECOND_ADMIN = "deputy@harbour.example"
NEW_ADMIN = "new.admin@harbour.example"   # journey a: sets up two-step login on screen
RECEPTION = "desk@harbour.example"
FLU = "Hello {first_name}, flu vaccination clinics are open at {practice_name}. Call us to book."
SURNAMES = ("Archer", "Baxter", "Carver", "Dalton", "Ellery", "Fenwick", "Gable", "Hollis",
            "Ingram", "Jarrett", "Keane")
GIVEN = ("Alex", "Bea", "Cal", "Dee", "Eli")
FILLERS = len(SURNAMES) * len(GIVEN)   # 55: with 4 more mobiles, a bulk over the 50 limit


@dataclass
class E2E:
    served: Served
    timezone: ZoneInfo
    # The authenticator app of each admin: the key read off the enrol page.
    phones: dict = field(default_factory=dict)
    # Logged-in browser state per email, so later journeys skip the login they do not test.
    sessions: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.served.base

    def url(self, path: str = "") -> str:
        return f"{self.base}/p/{self.served.slug}/{path}"

    def cli(self, *args: str) -> str:
        return cli(self.served.home, *args)

    def export(self) -> dict:
        return json.loads(self.cli("export", "--practice", self.served.slug))

    def tick(self) -> dict:
        """One dispatcher pass at the next 10:00 practice time: inside the send window
        (every day, see the fixture) and within a day of the patient sync, so bulk sends
        are not held as stale."""
        now = dt.datetime.now(self.timezone)
        at = now.replace(hour=10, minute=0, second=0, microsecond=0)
        if at <= now:
            at += dt.timedelta(days=1)
        return json.loads(self.cli("outreach", "tick", "--now", at.isoformat(), "--json"))


class Phone:
    """An authenticator app. django-otp takes each 30-second code once, so a second login
    within the same step waits for the next code, as a person would."""

    def __init__(self, shown_key: str):
        self.key = base64.b32decode(shown_key.replace(" ", ""))
        self.last_step = None

    def code(self) -> str:
        from django_otp.oath import TOTP

        totp = TOTP(self.key)
        while self.last_step is not None and totp.t() <= self.last_step:
            time.sleep(0.5)
        self.last_step = totp.t()
        return f"{totp.token():06d}"

    def wrong_code(self) -> str:
        from django_otp.oath import TOTP

        return f"{(TOTP(self.key).token() + 1) % 1_000_000:06d}"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A Best Practice practice with staff, patients (digital, non-digital, deceased, one
    matching two accounts), and doctor-actioned results: Nora's automatic group waits as
    To action – Paused, Dana's and Omar's are on the checklist."""
    home = tmp_path_factory.mktemp("e2e")
    run = partial(cli, home)
    run("migrate", "--no-input", "-v", "0")
    practice = json.loads(run("practice", "create", "--name", "Harbour Medical Centre",
                              "--pms", "bestpractice", "--json"))
    slug = practice["slug"]
    run("practice", "permit", "--practice", slug, "--granted-by", "Dr Data Controller",
        "--dpia-ref", "DPIA-2026-07")
    for email, role in ((ADMIN, "admin"), (SECOND_ADMIN, "admin"), (NEW_ADMIN, "admin"),
                        (RECEPTION, "reception")):
        run("staff", "add", "--practice", slug, "--email", email, "--role", role,
            "--password-stdin", stdin=PASSWORD + "\n")
    # Every day in the window, so the test's dispatcher pass is never days away.
    run("outreach", "policy", "--practice", slug, "--send-days", "1234567")
    accounts = home / "accounts.csv"
    accounts.write_text(
        "account_id,given_name,family_name,date_of_birth,email,mobile_phone,nhs_number\n"
        "A1,Dana,Greenwood,1975-06-07,dana@example.org,,\n"
        "A2,Kit,Moss,2001-04-04,kit@example.org,,\n"
        "A3,Kit,Moss,2001-04-04,,,\n", encoding="utf-8")
    run("accounts", "import", "--practice", slug, "--source", str(accounts))
    fillers = [list_row(pms_id=f"P{100 + i}", given_name=GIVEN[i % len(GIVEN)],
                        family_name=SURNAMES[i // len(GIVEN)],
                        date_of_birth=f"{1965 + i % 30}-0{1 + i % 9}-1{i % 9}",
                        mobile_phone=f"0413 000 {100 + i}") for i in range(FILLERS)]
    patients = write_list(home / "list.csv", [
        list_row(pms_id="P1", given_name="Nora", family_name="Greyling",
                 date_of_birth="1950-03-04", mobile_phone="0412 345 601"),
        list_row(pms_id="P2", given_name="Dana", family_name="Greenwood",
                 date_of_birth="1975-06-07", mobile_phone="0412 345 602"),
        list_row(pms_id="P3", given_name="Omar", family_name="Hale", date_of_birth="1948-02-02",
                 home_phone="02 9123 4567"),
        list_row(pms_id="P4", given_name="Edith", family_name="Hale",
                 date_of_birth="1931-01-01", registration_status="deceased",
                 date_of_death="2026-10-01", mobile_phone="0412 345 604"),
        list_row(pms_id="P5", given_name="Kit", family_name="Moss", date_of_birth="2001-04-04",
                 mobile_phone="0412 345 605"),
        list_row(pms_id="P6", given_name="Wendy", family_name="Bramble",
                 date_of_birth="1955-08-09", mobile_phone="0412 345 606"),
        *fillers,
    ])
    summary = json.loads(run("patients", "sync", "--practice", slug, "--source", str(patients),
                             "--json"))
    assert summary["errors"] == [] and summary["needs_review"] == 1
    results = write_list(home / "results.csv", [
        results_row("R1", "P1", "FBC", "2026-11-18", "Non-Urgent Appointment"),
        results_row("R2", "P1", "UEC", "2026-11-18", "Non-Urgent Appointment"),
        results_row("R3", "P2", "INR", "2026-11-19", "Urgent appointment",
                    comment="INR 6.1: stop warfarin, see today"),
        results_row("R4", "P3", "Iron studies", "2026-11-17", "Nurse to Advise",
                    comment="Low iron: start supplements"),
        results_row("R5", "P2", "TSH", "2026-11-10", "No action"),
    ], RESULT_COLUMNS)
    summary = json.loads(run("results", "sync", "--practice", slug, "--source", str(results),
                             "--json"))
    assert summary["errors"] == [] and summary["groups_created"] == 4
    for served in serving(home, slug):
        yield E2E(served, ZoneInfo(practice["timezone"]))


# --- helpers ---------------------------------------------------------------------------------

def shot(page, step: str) -> None:
    """Save the whole page as `e2e-<step>.png`, after checking that it fits the laptop's
    width (no sideways scrolling) and that the stylesheet applied."""
    page.wait_for_load_state()
    path = SCREENSHOTS / f"e2e-{step}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"{step}: the page is {width}px wide, wider than the 1280px screen"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(247, 248, 250)"


def tab_to(page, target, *, limit: int = 120) -> None:
    """Press Tab until `target` has the focus, as a keyboard user would, and check the focus
    shows (site.css's :focus-visible outline)."""
    handle = target.element_handle()
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("e => e === document.activeElement", handle):
            break
    else:
        pytest.fail(f"Tab never reached {target}")
    outline = page.evaluate("e => [getComputedStyle(e).outlineStyle, "
                            "getComputedStyle(e).outlineWidth]", handle)
    assert outline == ["solid", "3px"], outline


def log_in(page, app: E2E, email: str, path: str) -> None:
    page.goto(app.base + path)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def second_step(page, app: E2E, email: str) -> None:
    """After the password: set up the authenticator (first login) or type its code."""
    from playwright.sync_api import expect

    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text(re.compile("Set up two-step login|Two-step login"))
    if heading.inner_text() == "Set up two-step login":
        app.phones[email] = Phone(page.locator("code.key").inner_text())
        page.get_by_label("Code from the app").fill(app.phones[email].code())
        page.get_by_role("button", name="Turn on two-step login").click()
        page.get_by_role("link", name="I have saved my backup codes: continue").click()
    else:
        page.get_by_label("Code", exact=True).fill(app.phones[email].code())
        page.get_by_role("button", name="Continue").click()


def staff_page(browser, app: E2E, email: str, path: str):  # noqa: F811
    """A fresh browser profile logged in as `email` (with its second step when an admin),
    on `path`."""
    context = new_context(browser)
    if email in app.sessions:
        context.add_cookies(app.sessions[email])
        page = context.new_page()
        page.goto(app.base + path)
        return page
    page = context.new_page()
    log_in(page, app, email, path)
    if email != RECEPTION:
        second_step(page, app, email)
    page.wait_for_url(app.base + path)
    app.sessions[email] = context.cookies()
    return page


@pytest.fixture
def contexts(browser):  # noqa: F811
    """Closes the browser profiles a test opened through staff_page."""
    yield
    for context in browser.contexts:
        context.close()


# --- a. log in with two-step login ------------------------------------------------------------

def test_an_admin_sets_up_two_step_login_then_logs_in_with_a_code(app, browser, contexts):  # noqa: F811
    from playwright.sync_api import expect

    page = new_context(browser).new_page()
    patients = app.url("patients/")
    page.goto(patients)
    expect(page).to_have_url(re.compile(r"/login/\?next="))
    shot(page, "a1-login")
    page.get_by_label("Email").fill(NEW_ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # An admin with no authenticator must set one up before any page.
    expect(page).to_have_url(re.compile(r"/account/mfa/enrol/\?next="))
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-step login")
    expect(page.get_by_text("Admins must use two-step login")).to_be_visible()
    expect(page.locator("figure.qr svg")).to_be_visible()
    shown = page.locator("code.key").inner_text()
    assert re.fullmatch(r"([A-Z2-7]{4} ){7}[A-Z2-7]{4}", shown), shown
    phone = app.phones[NEW_ADMIN] = Phone(shown)
    shot(page, "a2-mfa-enrol")

    code_box = page.get_by_label("Code from the app")
    expect(code_box).to_be_focused()   # autofocus: type straight away
    wrong = [phone.wrong_code()]
    page.keyboard.type(wrong[0])
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("That code did not match")
    expect(code_box).to_have_attribute("aria-invalid", "true")
    shot(page, "a3-mfa-enrol-wrong-code")
    time.sleep(1.2)   # django-otp's throttle after one wrong code

    code_box.fill(phone.code())
    tab_to(page, page.get_by_role("button", name="Turn on two-step login"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Two-step login is on")
    codes = page.locator("ul.backup-codes code")
    expect(codes).to_have_count(10)
    assert all(re.fullmatch(r"[a-z2-7]{8}", c) for c in codes.all_inner_texts())
    shot(page, "a4-backup-codes")
    page.get_by_role("link", name="I have saved my backup codes: continue").click()
    expect(page).to_have_url(patients)
    expect(page.get_by_role("heading", name="Patients")).to_be_visible()
    shot(page, "a5-patients-as-admin")

    # Log out; the next login asks for a code from the app.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/"))
    log_in(page, app, NEW_ADMIN, f"/p/{app.served.slug}/patients/")
    expect(page).to_have_url(re.compile(r"/account/mfa/verify/\?next="))
    expect(page.get_by_role("heading", level=1)).to_have_text("Two-step login")
    wrong.append(phone.wrong_code())
    page.get_by_label("Code", exact=True).fill(wrong[1])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_have_text("That code did not match. Try again.")
    shot(page, "a6-mfa-verify-wrong-code")
    # The app's pages stay closed while the second step is not done.
    page.goto(patients)
    expect(page).to_have_url(re.compile(r"/account/mfa/verify/\?next="))
    time.sleep(1.2)
    page.get_by_label("Code", exact=True).fill(phone.code())
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(patients)

    # Each step was audited for the practice; the codes themselves never were.
    page.goto(app.url(f"audit/?action=mfa&actor={NEW_ADMIN}"))
    log = page.locator("table.audit-log tbody")
    expect(log.locator("tr", has_text="mfa.enrolled")).to_have_count(1)
    expect(log.locator("tr", has_text="mfa.verify_failed")).to_have_count(2)
    for code in wrong:
        expect(log).not_to_contain_text(code)
    shot(page, "a7-audit-mfa-events")


# --- b. find a non-digital patient, message them, see it in the outbox -------------------

def test_reception_finds_a_non_digital_patient_and_their_sms_reaches_the_outbox(
        app, browser, contexts):  # noqa: F811
    from playwright.sync_api import expect

    page = staff_page(browser, app, RECEPTION, f"/p/{app.served.slug}/patients/")
    expect(page.locator(".summary")).to_contain_text(f"{FILLERS + 8} patients, 3 digital.")
    shot(page, "b1-patients")
    search = page.get_by_role("searchbox", name="Search patients")
    tab_to(page, search)
    page.keyboard.type("bramble")
    page.keyboard.press("Enter")
    rows = page.locator("table.patients tbody tr")
    expect(rows).to_have_count(1)
    tick = rows.locator(".tick.non-digital")
    expect(tick).to_have_attribute("title", "Non-digital: from the practice list")
    expect(tick).to_have_css("background-color", GREY)
    shot(page, "b2-patients-search")

    rows.get_by_role("link", name="BRAMBLE, Wendy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Wendy BRAMBLE")
    expect(page.get_by_role("heading", level=1).get_by_role("img")).to_have_accessible_name(
        "Non-digital")
    shot(page, "b3-patient")
    form = page.get_by_role("form", name="Send a message")
    form.get_by_label("SMS", exact=True).check()
    form.get_by_role("textbox", name="Message").fill(
        "Hello {first_name}, please call {practice_name} when you can.")
    send = form.get_by_role("button", name="Send message")
    tab_to(page, send)
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Message queued.")
    listed = page.locator("table.messages-list tbody tr", has_text="Hello Wendy")
    expect(listed.locator(".badge")).to_have_text("Queued")
    shot(page, "b4-patient-message-queued")

    report = app.tick()
    assert report["sent"] >= 1, report
    page.reload()
    expect(listed.locator(".badge")).to_have_text("Sent")
    nav = page.get_by_role("navigation", name="Practice pages")
    nav.get_by_role("link", name="Messages").click()
    shot(page, "b5-messages")
    page.get_by_role("navigation", name="Messages or outbox").get_by_role(
        "link", name="Outbox").click()
    expect(page.get_by_role("heading", name="Outbox")).to_be_visible()
    entry = page.locator("table.outbox tbody tr", has_text="+61412345606")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text(
        "Hello Wendy, please call Harbour Medical Centre when you can.")
    shot(page, "b6-outbox")
    sent = [m for m in app.export()["messages"] if m["pms_id"] == "P6" and m["kind"] == "adhoc"]
    assert [(m["channel"], m["status"], m["to"]) for m in sent] == [("sms", "sent", "+61412345606")]


# --- c. start a paused results follow-up ------------------------------------------------------

def test_reception_starts_a_paused_follow_up_from_the_results_page(app, browser, contexts):  # noqa: F811
    from playwright.sync_api import expect

    page = staff_page(browser, app, RECEPTION, f"/p/{app.served.slug}/results/")
    nora = page.locator("table.results tbody tr", has_text="GREYLING, Nora")
    badge = nora.locator(".badge")
    expect(badge).to_have_text("To action – Paused")
    expect(badge).to_have_css("background-color", PAUSED)
    shot(page, "c1-results")
    tab_to(page, nora.get_by_role("button", name="Start follow-up for GREYLING, Nora, 18/11/2026"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Started")
    expect(badge).to_have_text("Active")
    expect(nora.get_by_role("button")).to_have_text(["Pause", "Cancel"])
    shot(page, "c2-results-started")
    group = next(g for g in app.export()["result_groups"] if g["pms_id"] == "P1")
    assert (group["sequence_state"], group["template"]) == ("active", "Non-urgent results")


# --- d. tick a checklist item on Recalls > Summary --------------------------------------------

def test_reception_marks_a_checklist_item_done(app, browser, contexts):  # noqa: F811
    from playwright.sync_api import expect

    summary = app.url("recalls/summary/")
    page = staff_page(browser, app, RECEPTION, f"/p/{app.served.slug}/recalls/summary/")
    to_do = page.locator("table.checklist.to-do tbody tr")
    done = page.locator("table.checklist.done tbody tr")
    expect(to_do).to_have_count(2)
    expect(to_do.nth(0)).to_contain_text("GREENWOOD, Dana")
    expect(to_do.nth(0)).to_contain_text("INR 6.1: stop warfarin, see today")
    shot(page, "d1-recalls-summary")
    tab_to(page, to_do.filter(has_text="HALE, Omar").get_by_role("button", name="Mark done"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(summary)
    expect(page.get_by_role("status")).to_contain_text("Marked done.")
    expect(to_do).to_have_count(1)
    expect(done).to_have_count(1)
    expect(done).to_contain_text("HALE, Omar")
    expect(done).to_contain_text(RECEPTION)
    shot(page, "d2-recalls-summary-done")
    group = next(g for g in app.export()["result_groups"] if g["pms_id"] == "P3")
    assert group["checklist_done_by"] == RECEPTION and group["checklist_done_at"]


# --- e. bulk messages: under the approval limit, then over it with a second admin ------------

def preview(page, **choices) -> None:
    """Set the bulk filter form and press Preview."""
    form = page.locator("form.bulk-filter")
    for legend, option in choices.items():
        form.get_by_role("group", name=legend).get_by_label(option, exact=True).check()
    form.get_by_role("button", name="Preview").click()


def confirm(page, count: int, button: str) -> None:
    form = page.locator("form.confirm")
    form.get_by_label(re.compile("Type the number of patients")).fill(str(count))
    form.get_by_label("I have checked the wording").check()
    tab_to(page, form.get_by_role("button", name=button))
    page.keyboard.press("Enter")


def test_admins_send_bulk_messages_and_see_each_recipient_sent(app, browser, contexts):  # noqa: F811
    from playwright.sync_api import expect

    page = staff_page(browser, app, ADMIN, f"/p/{app.served.slug}/bulk/")
    shot(page, "e1-bulk-list")
    page.get_by_role("link", name="New bulk message").click()
    expect(page.get_by_role("heading", name="New bulk message")).to_be_visible()

    # A saved template first: bulk text comes from one only.
    saving = page.locator("form", has=page.get_by_role("button", name="Save template"))
    saving.get_by_label("Name").fill("Flu clinics")
    saving.get_by_label("SMS", exact=True).check()
    saving.get_by_role("textbox", name="Text").fill(FLU)
    saving.get_by_role("button", name="Save template").click()
    expect(page.get_by_role("status")).to_contain_text("Template “Flu clinics” saved.")
    chosen = page.locator("form.bulk-filter").get_by_label("Saved template")
    expect(chosen).to_have_value(re.compile(r"\d+"))
    shot(page, "e2-bulk-new-template-saved")

    # Non-digital patients aged 70 to 80: Nora and Wendy get it; Omar has no mobile.
    page.get_by_label("From", exact=True).fill("70")
    page.get_by_label("To", exact=True).fill("80")
    preview(page, Digital="Non-digital")
    expect(page.locator(".recipients")).to_have_text(
        "2 patients would get this SMS.")
    excluded = page.locator("table.excluded")
    expect(excluded.locator("caption")).to_have_text("Excluded: 1")
    expect(excluded.locator('tr[data-reason="no_address"]')).to_contain_text("1")
    expect(page.locator("blockquote.preview").first).to_contain_text(
        "flu vaccination clinics are open at Harbour Medical Centre")
    shot(page, "e3-bulk-preview-small")
    confirm(page, 2, "Send the first batch")
    expect(page.get_by_role("status")).to_contain_text("the first batch is queued")
    small = page.url
    progress = page.locator("#bulk-progress")
    expect(progress.locator('[data-status="queued"]')).to_have_text("queued 2")
    shot(page, "e4-bulk-progress-queued")
    assert app.tick()["sent"] >= 2
    # The progress block polls (htmx) while messages are going out: no reload needed.
    expect(progress.locator('[data-status="sent"]')).to_have_text("sent 2", timeout=15_000)
    page.reload()
    recipients = page.locator("table.messages-list tbody tr")
    expect(recipients).to_have_count(2)
    for row in recipients.all():
        expect(row.locator(".badge")).to_have_text("Sent")
    expect(page.locator("table.messages-list tbody")).to_contain_text("GREYLING, Nora")
    expect(page.locator("table.messages-list tbody")).to_contain_text("BRAMBLE, Wendy")
    shot(page, "e5-bulk-sent-small")

    # Everyone with a mobile: over the limit of 50, so a second admin must approve.
    page.goto(app.url("bulk/new/"))
    page.locator("form.bulk-filter").get_by_label("Saved template").select_option(
        label="Flu clinics (SMS)")
    preview(page, **{"Has a mobile number": "Yes"})
    # Dana and Kit; Edith died; Nora and Wendy had this text an hour ago (sent_today).
    everyone = FILLERS + 2
    expect(page.locator(".recipients")).to_have_text(
        f"{everyone} patients would get this SMS.")
    expect(page.locator('table.excluded tr[data-reason="sent_today"]')).to_contain_text("2")
    expect(page.locator(".warning")).to_contain_text("another admin must approve it")
    shot(page, "e6-bulk-preview-large")
    confirm(page, everyone, "Create and ask another admin to approve")
    expect(page.get_by_role("status")).to_contain_text("waiting for approval by another admin")
    large = page.url
    expect(page.locator("#bulk-progress")).to_contain_text(
        "You created it, so another admin must approve it.")
    expect(page.get_by_role("button", name="Approve and send the first batch")).to_have_count(0)
    expect(page.locator("table.messages-list tbody")).to_contain_text(
        "nothing is sent before the approval")
    shot(page, "e7-bulk-waiting-for-approval")

    second = staff_page(browser, app, SECOND_ADMIN, large.removeprefix(app.base))
    tab_to(second, second.get_by_role("button", name="Approve and send the first batch"))
    second.keyboard.press("Enter")
    expect(second.get_by_role("status")).to_contain_text("Approved: the first batch is queued.")
    expect(second.locator("#bulk-progress .phase .badge")).to_have_text(
        "First batch sent; the rest wait for Release")
    shot(second, "e8-bulk-approved-by-second-admin")
    assert app.tick()["sent"] >= 10
    page.reload()
    expect(page.locator('#bulk-progress [data-status="sent"]')).to_have_text("sent 10")
    expect(page.locator("#bulk-progress dt:text-is('Waiting for Release') + dd")).to_have_text(
        str(everyone - 10))
    shot(page, "e9-bulk-first-batch-sent")
    page.get_by_role("button", name="Release: send to everyone else").click()
    expect(page.get_by_role("status")).to_contain_text("Released: everyone else is queued.")
    assert app.tick()["sent"] >= everyone - 10
    page.reload()
    expect(page.locator('#bulk-progress [data-status="sent"]')).to_have_text(f"sent {everyone}")
    expect(page.locator("table.messages-list tbody .badge").first).to_have_text("Sent")
    shot(page, "e10-bulk-released-sent")

    page.goto(app.url("bulk/"))
    expect(page.locator("table.bulks tbody tr")).to_have_count(2)
    shot(page, "e11-bulk-list-after")
    bulks = {}
    for m in app.export()["messages"]:
        if m["bulk_id"]:
            bulks.setdefault(m["bulk_id"], []).append(m["status"])
    small_id, large_id = (int(re.search(r"/bulk/(\d+)/", u).group(1)) for u in (small, large))
    assert bulks == {small_id: ["sent"] * 2, large_id: ["sent"] * everyone}


# --- f. every other page once ----------------------------------------------------------------

def test_every_other_page_renders_for_an_admin(app, browser, contexts):  # noqa: F811
    from playwright.sync_api import expect

    page = staff_page(browser, app, ADMIN, f"/p/{app.served.slug}/templates/")
    expect(page.locator("table.templates tbody tr")).to_have_count(1)
    shot(page, "f1-templates")
    page.get_by_role("link", name="Non-urgent results").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Non-urgent results")
    shot(page, "f2-template")
    text = page.get_by_role("textbox", name="Text")
    tab_to(page, text)
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    check = page.locator("#step-check")
    page.keyboard.type("Hello {first_name}, your doctor asks you to book.")
    expect(check.locator(".sms-size")).to_contain_text("GSM-7, 1 segment.")
    expect(check.locator(".ok")).to_have_text("No problems found.")
    page.keyboard.type(" Please call the practice on the number on our website, or book "
                       "online with the link we sent you last time. Our reception team is "
                       "here from 8am to 6pm on weekdays. Thank you.")
    expect(check.locator(".sms-size")).to_contain_text("2 segments")
    shot(page, "f3-template-live-check")

    nav = page.get_by_role("navigation", name="Practice pages")
    nav.get_by_role("link", name="Sync").click()
    expect(page.get_by_role("heading", name="Patient Sync")).to_be_visible()
    runs = page.locator("table.sync-runs tbody tr")
    expect(runs.filter(has_text="Practice list")).to_have_count(1)
    shot(page, "f4-sync-runs")
    runs.filter(has_text="Practice list").get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sync run")
    shot(page, "f5-sync-run")

    nav.get_by_role("link", name=re.compile("^Review")).click()
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    expect(page.locator(".summary")).to_contain_text("1 open.")
    shot(page, "f6-review-queue")
    page.locator("table.review-items tbody").get_by_role("link").first.click()
    expect(page.locator("table.review-records")).to_contain_text("MOSS")
    shot(page, "f7-review-item")

    nav.get_by_role("link", name="Audit").click()
    shot(page, "f8-audit-log")
    page.get_by_label("Action").fill("staff")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(".summary")).to_contain_text("4 events match.")
    expect(page.locator("table.audit-log tbody tr")).to_have_count(4)
    expect(page.locator("table.audit-log tbody")).to_contain_text(SECOND_ADMIN)
    shot(page, "f9-audit-log-filtered")

    for name, heading, step in (("Settings", "Settings", "f10-settings"),
                                ("Requests", "Requests", "f11-requests"),
                                ("Tasks", "Tasks", "f12-tasks"),
                                ("Messages", "Messages", "f13-messages"),
                                ("Patients", "Patients", "f14-patients"),
                                ("Results", "Results", "f15-results"),
                                ("Recalls > Summary", "Recalls > Summary", "f16-recalls")):
        nav.get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        expect(nav.get_by_role("link", name=name, exact=True)).to_have_attribute(
            "aria-current", "page")
        shot(page, step)
    expect(page.locator("form.logout button")).to_be_visible()

    page.goto(app.url("patients/P1"))
    shot(page, "f17-patient-with-follow-up")
    page.get_by_role("link", name="Two-step login").click()
    expect(page.get_by_text("Two-step login is on")).to_be_visible()
    shot(page, "f18-two-step-login")

    page.goto(f"{app.base}/api/docs")
    expect(page.locator(".swagger-ui .title")).to_contain_text("practicesync API")
    expect(page.locator(".opblock").first).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "e2e-f19-api-docs.png"), full_page=True)
