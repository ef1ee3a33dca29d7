"""The Templates pages through Django's test client: the Results templates and their steps,
editing with the text check (live, and again on save), auto-start for admins only, and no
way in for another practice's member."""

import datetime as dt
import re

import pytest
from django.test import Client
from django.urls import reverse

from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.outreach.models import Sequence
from practicesync.practices.actions import add_staff
from practicesync.results.importer import sync_results
from practicesync.results.models import ResultsTemplate
from tests.factories import ACTOR, log_in, make_patient, make_practice, write_list
from tests.test_outreach_pages import result, row_of, text

RECEPTION = "reception@harbour.example"
CLINICIAN = "gp@harbour.example"
ADMIN = "admin@harbour.example"
KEY = "non_urgent_appointment"


@pytest.fixture
def harbour(au_practice):
    au_practice.booking_url = "https://book.example.org/harbour"
    au_practice.save()
    return au_practice


@pytest.fixture
def template(harbour):
    return ResultsTemplate.objects.get(practice=harbour, action_key=KEY)


def client_as(practice, email, role):
    return log_in(Client(), add_staff(actor=ACTOR, practice=practice, email=email, role=role).user)


@pytest.fixture
def reception(harbour):
    return client_as(harbour, RECEPTION, "reception")


@pytest.fixture
def clinician(harbour):
    return client_as(harbour, CLINICIAN, "clinician")


@pytest.fixture
def admin(harbour):
    return client_as(harbour, ADMIN, "admin")


def url(name, practice, **kwargs):
    return reverse(name, kwargs={"practice": practice.slug, **kwargs})


def steps_of(template):
    return list(template.steps.order_by("position").values_list(
        "position", "channel", "delay", "condition", "body"))


def step_events():
    return AuditEvent.objects.filter(action__startswith="template.")


def post_step(client, practice, **fields):
    data = {"position": "2", "channel": "sms", "delay_days": "2", "body": "Hi", "not_booked": "on"}
    data.update(fields)
    return client.post(url("template_step_save", practice, action_key=KEY), data)


# --- list and detail -----------------------------------------------------------------------

def test_templates_page_lists_one_template_per_automatic_action(reception, harbour):
    response = reception.get(url("templates", harbour))
    assert response.status_code == 200
    html = response.content.decode()
    row = row_of(html, f'data-template="{KEY}"')
    assert f'href="/p/harbour/templates/{KEY}/"' in row and "Non-urgent results" in row
    assert "Off: To action – Paused" in row and text(row).split()[-1] == "On"  # pause on booking
    assert '<td>4</td>' in row  # the default steps
    assert 'href="/p/harbour/templates/" aria-current="page">Templates</a>' in html


def test_a_template_page_shows_its_ordered_steps_and_the_placeholders(clinician, harbour):
    html = clinician.get(url("template", harbour, action_key=KEY)).content.decode()
    rows = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", html, re.S) if "data-step" in r]
    starts = ["1 At Start SMS Always Hello {first_name}, this is {practice_name}.",
              "2 3 days after step 1 SMS Only if not booked Hello {first_name}, a reminder",
              "3 4 days after step 2 Email Only if not booked Please book an appointment",
              "4 3 days after step 3 Staff call Only if not booked Call the patient"]
    assert len(rows) == 4
    for row, start in zip(rows, starts, strict=True):
        assert text(row).startswith(start), text(row)
    assert "1 SMS (" in rows[0] and "GSM-7) for Alex" in rows[0]
    assert 'aria-label="Remove step 2"' in rows[1] and 'href="?step=2#step-form"' in rows[1]
    assert "Add step 5" in html and 'name="position" value="5"' in html
    for name in ("{first_name}", "{practice_name}", "{booking_link}"):
        assert f"<code>{name}</code>" in html
    # The text area checks as staff type, through htmx.
    textarea = re.search(r"<textarea[^>]*>", html).group(0)
    assert 'hx-post="/p/harbour/templates/step-check/"' in textarea
    assert 'hx-trigger="keyup changed delay:300ms"' in textarea
    assert 'hx-target="#step-check"' in textarea and '<label>Text' in html
    # Editing step 1 fills the form and previews it for Alex, never a real patient.
    make_patient(harbour, pms_id="P1", given_name="Ann")
    html = clinician.get(url("template", harbour, action_key=KEY) + "?step=1").content.decode()
    assert "Edit step 1" in html and 'name="position" value="1"' in html
    assert "Hello Alex, this is harbour. Your doctor would like you" in html
    assert "https://book.example.org/harbour" in html and "Ann" not in html


@pytest.mark.parametrize("step", ["³", "99999999999999999999999", "-1", "x"])
def test_a_step_parameter_that_is_not_a_small_number_opens_the_add_form(clinician, harbour, step):
    response = clinician.get(url("template", harbour, action_key=KEY) + f"?step={step}")
    assert response.status_code == 200
    assert 'name="position" value="1"' not in response.content.decode()  # the add form


def test_another_practices_template_key_is_404(reception, harbour):
    assert reception.get(url("template", harbour, action_key="discuss")).status_code == 404


# --- editing steps -------------------------------------------------------------------------

def test_editing_a_step_saves_it_and_is_audited(clinician, harbour, template):
    response = post_step(clinician, harbour,
                         body="Hi {first_name}, {practice_name} would like you to book: "
                              "{booking_link}")
    assert response.status_code == 302
    assert response["Location"] == f"/p/harbour/templates/{KEY}/#step-2"
    step = template.steps.get(position=2)
    assert (step.channel, step.delay, step.condition) == ("sms", dt.timedelta(days=2),
                                                         "not_booked")
    assert step.body.startswith("Hi {first_name}, {practice_name} would like")
    event = step_events().get()
    assert (event.action, event.actor, event.detail["position"]) == (
        "template.step_changed", CLINICIAN, 2)
    html = clinician.get(response["Location"]).content.decode()
    assert "Step 2 saved." in html and "2 days after step 1" in html

    # "Only if not booked" off, and an email keeps its subject.
    post_step(clinician, harbour, position="3", channel="email", delay_days="0.5",
              subject="From {practice_name}", body="Dear {first_name}, please call us.",
              not_booked="")
    changed = template.steps.get(position=3)
    assert (changed.channel, changed.delay, changed.condition, changed.subject) == (
        "email", dt.timedelta(hours=12), "", "From {practice_name}")
    # A new step at the end: after the call, a letter (the last step stays a staff step).
    post_step(clinician, harbour, position="5", channel="letter", delay_days="7",
              body="Remind by post.")
    assert template.steps.get(position=5).channel == "letter"
    assert step_events().filter(action="template.step_added", actor=CLINICIAN).count() == 1


def test_text_with_result_details_is_refused_next_to_the_field(clinician, harbour, template):
    before = steps_of(template)
    response = post_step(clinician, harbour, body="Your HbA1c is 7.2")
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'<p class="error" role="alert" id="err-body">([^<]*)</p>', html).group(1)
    assert "Not saved" in error and "hba1c" in error and "7.2" in error
    textarea = re.search(r"<textarea[^>]*>([^<]*)</textarea>", html)
    assert 'aria-describedby="err-body ' in textarea.group(0) and 'aria-invalid="true"' in textarea.group(0)
    assert textarea.group(1) == "Your HbA1c is 7.2"  # kept for staff to fix
    assert steps_of(template) == before and not step_events().exists()

    for fields, field in [({"delay_days": "soon"}, "delay_days"), ({"delay_days": "-1"}, "delay_days"),
                          ({"channel": "fax"}, "channel"), ({"position": "9"}, "position")]:
        response = post_step(clinician, harbour, **fields)
        assert response.status_code == 400, fields
        assert f'id="err-{field}"' in response.content.decode(), fields
    assert steps_of(template) == before and not step_events().exists()
    assert clinician.get(url("template_step_save", harbour, action_key=KEY)).status_code == 405


def test_removing_a_step_moves_the_later_ones_up(clinician, harbour, template):
    before = steps_of(template)
    response = clinician.post(url("template_step_remove", harbour, action_key=KEY, position=2))
    assert response.status_code == 302
    assert [s[:2] for s in steps_of(template)] == [(1, "sms"), (2, "email"), (3, "call")]
    assert steps_of(template)[1][1:] == before[2][1:]
    event = step_events().get()
    assert (event.action, event.actor, event.detail["position"]) == (
        "template.step_removed", CLINICIAN, 2)
    assert "Step 2 removed" in clinician.get(response["Location"]).content.decode()
    assert clinician.get(url("template_step_remove", harbour, action_key=KEY,
                             position=1)).status_code == 405


def test_a_step_a_running_follow_up_is_past_is_not_removed(clinician, harbour, template,
                                                           tmp_path):
    make_patient(harbour, pms_id="P1", mobile_phone="+61412345678")
    sync_results(practice=harbour, actor=ACTOR,
                 source=str(write_list(tmp_path / "r.csv", [result("R1")], RESULT_COLUMNS)))
    Sequence.objects.filter(template=template).update(state="active", next_position=3)
    before = steps_of(template)
    html = clinician.post(url("template_step_remove", harbour, action_key=KEY, position=2),
                          follow=True).content.decode()
    assert "Not removed: 1 running follow-up(s) are past step 2" in html
    assert steps_of(template) == before and not step_events().exists()


def test_the_last_step_stays_a_staff_step(clinician, harbour, template):
    """A patient who answers no message reaches a person: the closing call is never removed
    or turned into a message (hazard H-039)."""
    before = steps_of(template)
    assert before[-1][:2] == (4, "call")
    html = clinician.post(url("template_step_remove", harbour, action_key=KEY, position=4),
                          follow=True).content.decode()
    assert "Not removed: the last step must be a staff call or letter" in html
    response = post_step(clinician, harbour, position="4", channel="sms", body="Please book.")
    assert response.status_code == 400 and "the last step must be a staff call" in \
        response.content.decode()
    assert steps_of(template) == before and not step_events().exists()
    assert post_step(clinician, harbour, position="4", channel="letter",
                     body="Please book.").status_code == 302


def test_reception_may_read_templates_but_not_change_them(reception, harbour, template):
    html = reception.get(url("template", harbour, action_key=KEY)).content.decode()
    assert "Save step" not in html and "Remove step" not in html
    assert "changed by the practice's clinicians and admins" in html
    before = steps_of(template)
    assert post_step(reception, harbour, position="1", body="Hello").status_code == 403
    assert reception.post(url("template_step_remove", harbour, action_key=KEY,
                              position=2)).status_code == 403
    assert steps_of(template) == before and not step_events().exists()


# --- the live check ------------------------------------------------------------------------

def check(client, practice, body, channel="sms", **more):
    response = client.post(url("template_step_check", practice),
                           {"channel": channel, "body": body, **more})
    assert response.status_code == 200
    return response.content.decode()


def test_the_live_check_counts_segments_and_names_problems(reception, harbour):
    fragment = check(reception, harbour, "a" * 161)
    assert "<html" not in fragment and "<body" not in fragment
    assert "SMS: 161 characters, GSM-7, 2 segments." in text(fragment)
    assert "No problems found." in fragment
    assert "SMS: 160 characters, GSM-7, 1 segment." in text(check(reception, harbour, "a" * 160))
    emoji = text(check(reception, harbour, "Hello 😀"))
    assert "SMS: 8 characters, UCS-2, 1 segment" in emoji and "such as an emoji" in emoji

    refused = check(reception, harbour, "Your HbA1c is 7.2")
    assert re.search(r'<ul class="problems"><li>sms text may not give result details: hba1c</li>'
                     r'<li>sms text may not contain result values: 7.2</li></ul>', refused)
    # The preview fills the placeholders for Alex, a made-up patient.
    preview = text(check(reception, harbour, "Hi {first_name}, book: {booking_link}"))
    assert "Hi Alex, book: https://book.example.org/harbour" in preview
    assert "unknown placeholder {nhs}" in check(reception, harbour, "Hi {nhs}")
    # Email text may name results; its subject is previewed too and there are no segments.
    email = check(reception, harbour, "About your results", channel="email",
                  subject="{practice_name} results")
    assert "No problems found." in email and "harbour results" in email and "SMS:" not in email
    # A staff call step is a note for staff: no patient preview.
    assert "Alex" not in check(reception, harbour, "Call them to book", channel="call")
    assert reception.get(url("template_step_check", harbour)).status_code == 405


# --- auto-start ----------------------------------------------------------------------------

def test_only_an_admin_changes_auto_start(reception, admin, harbour, template):
    auto_start = url("template_auto_start", harbour, action_key=KEY)
    html = reception.get(url("template", harbour, action_key=KEY)).content.decode()
    assert "Only an admin can change this." in html and auto_start not in html
    assert reception.post(auto_start, {"auto_start": "on"}).status_code == 403
    template.refresh_from_db()
    assert template.auto_start is False and not step_events().exists()

    html = admin.get(url("template", harbour, action_key=KEY)).content.decode()
    assert f'action="{auto_start}"' in html and "Turn auto-start on" in html
    response = admin.post(auto_start, {"auto_start": "on"})
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.auto_start is True
    event = step_events().get()
    assert (event.action, event.actor, event.why) == ("template.auto_start", ADMIN, "on")
    html = admin.get(response["Location"]).content.decode()
    assert "Auto-start is on" in html and "Turn auto-start off" in html
    admin.post(auto_start, {"auto_start": "off"})
    template.refresh_from_db()
    assert template.auto_start is False


# --- another practice ----------------------------------------------------------------------

def test_a_member_of_another_practice_gets_404_on_every_url(harbour, template):
    other = make_practice(slug="other", pms="bestpractice")
    outsider = client_as(other, "admin@other.example", "admin")
    before = (steps_of(template), template.auto_start, step_events().count())
    urls = [url("templates", harbour), url("template", harbour, action_key=KEY),
            url("template_step_check", harbour),
            url("template_step_save", harbour, action_key=KEY),
            url("template_step_remove", harbour, action_key=KEY, position=1),
            url("template_auto_start", harbour, action_key=KEY)]
    for address in urls:
        for method in ("get", "post"):
            response = getattr(outsider, method)(
                address, {"position": "1", "channel": "sms", "delay_days": "1", "body": "x",
                          "auto_start": "on"} if method == "post" else {})
            assert response.status_code == 404, (method, address, response.status_code)
            assert "Hello {first_name}" not in response.content.decode()
    template.refresh_from_db()
    assert (steps_of(template), template.auto_start, step_events().count()) == before
    # Its own slug with harbour's template key finds its own template, not harbour's.
    outsider.post(url("template_step_save", other, action_key=KEY),
                  {"position": "1", "channel": "sms", "delay_days": "1", "body": "Hi"})
    assert steps_of(template) == before[0]
