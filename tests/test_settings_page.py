"""The Settings page: each section saves through its audited action, shows its errors next to
the fields, is read-only for reception (403 on any change), never shows a provider secret,
and is 404 for a member of another practice."""

import datetime as dt
import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from practicesync.audit.models import AuditEvent
from practicesync.practices.access import SyncNotPermitted, require_sync_permission
from practicesync.practices.actions import add_staff, schedule_nightly_sync
from practicesync.practices.models import Practice
from tests.factories import ACTOR, log_in, make_patient, make_practice

ADMIN = "admin@riverside.example"
RECEPTION = "desk@riverside.example"
SECTIONS = ("permission", "revoke", "schedule", "window", "ages", "stop", "resume", "links",
            "hl7")


@pytest.fixture
def admin(practice):
    return log_in(Client(), add_staff(actor=ACTOR, practice=practice, email=ADMIN,
                                      role="admin").user)


@pytest.fixture
def reception(practice):
    return log_in(Client(), add_staff(actor=ACTOR, practice=practice, email=RECEPTION,
                                      role="reception").user)


def page_url(practice):
    return reverse("settings", kwargs={"practice": practice.slug})


def save(client, practice, section, **data):
    """POST one section's form; its fields carry the section as their prefix."""
    return client.post(reverse("settings_save", kwargs={"practice": practice.slug,
                                                        "section": section}),
                       {f"{section}-{k}": v for k, v in data.items()})


def fresh(practice) -> Practice:
    return Practice.objects.get(id=practice.id)


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def error_of(html: str, field_id: str) -> str:
    """The error list Django links to the field with aria-describedby."""
    assert re.search(rf'id="{field_id}"[^>]*aria-describedby="[^"]*{field_id}_error', html) or \
        re.search(rf'aria-describedby="[^"]*{field_id}_error[^"]*"[^>]*id="{field_id}"', html), \
        f"{field_id} is not described by its error"
    found = re.search(rf'<ul class="errorlist" id="{field_id}_error">(.*?)</ul>', html, re.S)
    assert found, f"no error shown for {field_id}"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


# --- who may see and change it -------------------------------------------------------------

def test_an_admin_gets_every_section_and_the_nav_link(admin, practice):
    schedule_nightly_sync(actor=ACTOR, practice=practice, source="/srv/pms/list.csv",
                          at=dt.time(2, 30))
    html = admin.get(page_url(practice)).content.decode()
    for heading in ("Patient Sync permission and DPIA", "Nightly sync",
                    "Send window and quiet hours", "Stop all sending", "Providers and links"):
        assert f">{heading}</h2>" in html
    for button in ("Record permission", "Turn Patient Sync off", "Save nightly sync",
                   "Save send window", "Save age rules", "Stop all sending", "Save links",
                   "Save feed settings"):
        assert f">{button}</button>" in html
    assert "<code>/srv/pms/list.csv</code> (csv)" in html and "schedule-source" not in html
    assert f'href="{page_url(practice)}" aria-current="page">Settings</a>' in html
    assert "Quiet hours 20:00–08:00 can never be opened" in html


def test_reception_sees_the_settings_read_only_without_the_source(reception, practice):
    schedule_nightly_sync(actor=ACTOR, practice=practice, source="/srv/pms/list.csv")
    response = reception.get(page_url(practice))
    assert response.status_code == 200
    html = response.content.decode()
    assert "only a practice admin can change them" in html
    assert "<button" not in html.split("<main>")[1]
    assert "/srv/pms/list.csv" not in html and "List source: set." in html
    assert 'name="window-send_from" value="09:00"' in html and "disabled" in html
    assert ">Settings</a>" not in html  # the nav link is for admins


def test_reception_cannot_change_any_section(reception, practice):
    before = (list(Practice.objects.filter(id=practice.id).values()), AuditEvent.objects.count())
    for section in SECTIONS:
        response = save(reception, practice, section, reason="x", confirm="on", granted_by="x",
                        dpia_ref="x", send_from="10:00", send_until="12:00", send_days="1",
                        sends_per_hour="1", video_base_url="https://x.example/")
        assert response.status_code == 403, section
    assert (list(Practice.objects.filter(id=practice.id).values()),
            AuditEvent.objects.count()) == before
    assert reception.get(reverse("settings_save", kwargs={"practice": practice.slug,
                                                          "section": "window"})).status_code == 403


def test_an_unknown_section_is_404_and_get_is_not_allowed(admin, practice):
    assert save(admin, practice, "nonsense", reason="x").status_code == 404
    assert admin.get(reverse("settings_save", kwargs={"practice": practice.slug,
                                                      "section": "window"})).status_code == 405


# --- Patient Sync permission ---------------------------------------------------------------

def test_turning_patient_sync_off_needs_a_reason_and_is_audited(admin, practice):
    response = save(admin, practice, "revoke", reason="  ")
    assert response.status_code == 400
    assert error_of(response.content.decode(), "id_revoke-reason") == "This field is required."
    assert fresh(practice).sync_permitted and not events("practice.sync_revoked")

    response = save(admin, practice, "revoke", reason="DPIA under review")
    assert response.status_code == 302
    assert response["Location"] == page_url(practice) + "#permission"
    practice = fresh(practice)
    assert not practice.sync_permitted
    with pytest.raises(SyncNotPermitted):
        require_sync_permission(practice)  # every gated command now refuses
    event, = events("practice.sync_revoked")
    assert (event.actor, event.why, event.detail["before"]["dpia_ref"]) == (
        ADMIN, "DPIA under review", "DPIA-1")
    html = admin.get(page_url(practice)).content.decode()
    assert "Saved: Patient Sync turned off." in html
    assert f"Turned off by {ADMIN}" in html and "DPIA under review" in html
    assert ">Turn Patient Sync off</button>" not in html


def test_recording_the_permission_shows_who_recorded_it(admin, practice):
    response = save(admin, practice, "permission", granted_by="", dpia_ref="")
    assert response.status_code == 400
    html = response.content.decode()
    assert error_of(html, "id_permission-granted_by") == "This field is required."
    assert error_of(html, "id_permission-dpia_ref") == "This field is required."

    assert save(admin, practice, "permission", granted_by="Dr Rhys Evans (data controller)",
                dpia_ref="DPIA-2026-07").status_code == 302
    practice = fresh(practice)
    assert (practice.permission_granted_by, practice.dpia_ref) == (
        "Dr Rhys Evans (data controller)", "DPIA-2026-07")
    assert events("practice.sync_permitted")[-1].actor == ADMIN
    html = admin.get(page_url(practice)).content.decode()
    assert re.search(r"On\. Granted by Dr Rhys Evans \(data controller\) \(DPIA reference "
                     rf"DPIA-2026-07\), recorded by {ADMIN} on \d\d/\d\d/\d{{4}} \d\d:\d\d", html)


# --- nightly sync --------------------------------------------------------------------------

def test_schedule_saves_and_shows_the_next_run_in_practice_time(au_practice):
    schedule_nightly_sync(actor=ACTOR, practice=au_practice, source="https://fhir.example.org/r4",
                          fmt="fhir")
    client = log_in(Client(), add_staff(actor=ACTOR, practice=au_practice, email=ADMIN,
                                        role="admin").user)
    # The source is the operator's (H-044): a source posted from the web is ignored.
    response = save(client, au_practice, "schedule", at="03:30", fmt="csv",
                    source="/srv/other-practice/list.csv")
    assert response.status_code == 302
    practice = fresh(au_practice)
    assert (practice.nightly_sync_at, practice.list_format, practice.list_source) == (
        dt.time(3, 30), "fhir", "https://fhir.example.org/r4")
    local = practice.next_sync_due.astimezone(practice.tz)
    assert (local.hour, local.minute) == (3, 30)
    event = events("practice.sync_scheduled")[-1]
    assert event.actor == ADMIN and event.detail["format"] == "fhir"
    html = client.get(page_url(practice)).content.decode()
    assert f"Next run: {local:%a %d/%m/%Y} 03:30 practice time (Australia/Sydney)." in html

    response = save(client, au_practice, "schedule", at="25:00", fmt="xml", source="")
    html = response.content.decode()
    assert response.status_code == 400
    assert error_of(html, "id_schedule-at") == "Enter a valid time."
    assert len(events("practice.sync_scheduled")) == 2


# --- send window, ages, stop-all -----------------------------------------------------------

def test_the_send_window_saves_and_is_audited(admin, practice):
    response = save(admin, practice, "window", send_days=["1", "2", "3", "4", "5", "6"],
                    send_from="08:30", send_until="17:00", sends_per_hour="120")
    assert response.status_code == 302 and response["Location"].endswith("#window")
    practice = fresh(practice)
    assert (practice.send_days, practice.send_from, practice.send_until,
            practice.sends_per_hour) == ("123456", dt.time(8, 30), dt.time(17), 120)
    event, = events("practice.outreach_policy_changed")
    assert event.actor == ADMIN
    assert event.detail["send_days"] == {"old": "12345", "new": "123456"}
    assert event.detail["send_until"] == {"old": "18:00:00", "new": "17:00:00"}


@pytest.mark.parametrize("send_from, send_until, words", [
    ("17:00", "09:00", "send window 17:00-09:00 is empty"),
    ("07:00", "12:00", "reaches into the quiet hours 20:00-08:00"),
    ("09:00", "21:30", "reaches into the quiet hours 20:00-08:00"),
])
def test_a_bad_window_is_refused_with_the_reason_shown(admin, practice, send_from, send_until,
                                                       words):
    response = save(admin, practice, "window", send_days=["1", "2"], send_from=send_from,
                    send_until=send_until, sends_per_hour="10")
    assert response.status_code == 400
    html = response.content.decode()
    alert = re.search(r'<div class="error" role="alert" id="window-errors">(.*?)</div>', html, re.S)
    assert alert and words in alert.group(1)
    assert '<fieldset aria-describedby="window-errors">' in html
    assert f'name="window-send_from" value="{send_from}"' in html  # what was typed stays
    assert fresh(practice).send_from == dt.time(9) and not events("practice.outreach_policy_changed")


def test_the_window_needs_a_day_and_a_positive_rate(admin, practice):
    response = save(admin, practice, "window", send_from="09:00", send_until="17:00",
                    sends_per_hour="0")
    html = response.content.decode()
    assert response.status_code == 400
    assert "This field is required." in html.split('id="id_window-send_days_error"')[1][:200]
    assert "greater than or equal to 1" in error_of(html, "id_window-sends_per_hour")


def test_age_rules_save_and_teens_cannot_end_below_the_minimum(admin, practice):
    response = save(admin, practice, "ages", min_age_sms="14", teen_until="12")
    assert response.status_code == 400
    assert "teen_until must not be below min_age_sms" in response.content.decode()
    assert save(admin, practice, "ages", min_age_sms="13", teen_until="16").status_code == 302
    practice = fresh(practice)
    assert (practice.min_age_sms, practice.teen_until) == (13, 16)
    assert events("practice.outreach_policy_changed")[-1].detail["min_age_sms"]["new"] == "13"


def test_stop_all_needs_a_reason_and_a_confirmation(admin, practice):
    response = save(admin, practice, "stop", reason="", confirm="")
    html = response.content.decode()
    assert response.status_code == 400
    assert error_of(html, "id_stop-reason") == "This field is required."
    assert error_of(html, "id_stop-confirm") == "This field is required."
    assert save(admin, practice, "stop", reason="Wrong text went out",
                confirm="").status_code == 400
    assert not fresh(practice).stop_all

    assert save(admin, practice, "stop", reason="Wrong text went out",
                confirm="on").status_code == 302
    assert fresh(practice).stop_all
    event, = events("practice.outreach_policy_changed")
    assert (event.actor, event.why, event.detail["stop_all"]) == (
        ADMIN, "Wrong text went out", {"old": "False", "new": "True"})
    html = admin.get(page_url(practice)).content.decode()
    assert "All sending is stopped" in html and f"Stopped by {ADMIN}" in html
    assert ">Resume sending</button>" in html and ">Stop all sending</button>" not in html
    # Every page of the practice says so, not just Settings.
    patients = admin.get(f"/p/{practice.slug}/patients/").content.decode()
    assert 'class="stop-all" role="alert"' in patients

    assert save(admin, practice, "resume", reason="").status_code == 400
    assert save(admin, practice, "resume", reason="Text fixed").status_code == 302
    assert not fresh(practice).stop_all
    assert events("practice.outreach_policy_changed")[-1].why == "Text fixed"
    assert "stop-all" not in admin.get(f"/p/{practice.slug}/patients/").content.decode()


# --- providers and links -------------------------------------------------------------------

def test_providers_show_set_or_not_set_and_never_a_secret(admin, practice, settings):
    settings.PRACTICESYNC_PROVIDERS = {
        **settings.PRACTICESYNC_PROVIDERS,
        "sms": "practicesync.outreach.channels.twilio_sms.TwilioSmsProvider"}
    settings.TWILIO_ACCOUNT_SID = "AC-test-sid-0001"
    settings.TWILIO_AUTH_TOKEN = "tok-never-shown-9f8e7d"
    settings.TWILIO_FROM = ""
    html = admin.get(page_url(practice)).content.decode()
    assert "tok-never-shown-9f8e7d" not in html and "AC-test-sid-0001" not in html
    row = re.search(r"<tr><td>SMS</td>.*?</tr>", html, re.S).group(0)
    assert "<td>Twilio</td>" in row
    assert "<code>TWILIO_AUTH_TOKEN</code>: set" in row
    assert "<code>TWILIO_FROM</code>: <strong>not set</strong>" in row
    assert "Local outbox: nothing leaves this machine" in html  # email and push


def test_links_must_be_https(admin, practice):
    response = save(admin, practice, "links", booking_url="http://book.example.org/",
                    video_base_url="http://video.example.org/room/")
    html = response.content.decode()
    assert response.status_code == 400
    assert "https://" in error_of(html, "id_links-video_base_url")
    assert "https://" in error_of(html, "id_links-booking_url")
    assert fresh(practice).video_base_url == "https://video.example.org/room/"

    assert save(admin, practice, "links", booking_url="",
                video_base_url="https://meet.riverside.example/r/").status_code == 302
    assert fresh(practice).video_base_url == "https://meet.riverside.example/r/"
    event, = events("practice.outreach_policy_changed")
    assert event.detail == {"video_base_url": {"old": "https://video.example.org/room/",
                                               "new": "https://meet.riverside.example/r/"}}


def test_hl7_settings_save(admin, practice):
    assert save(admin, practice, "hl7", ack_mode="original",
                pms_id_system="2.16.840.1.113883.2.1.4.1").status_code == 302
    practice = fresh(practice)
    assert (practice.hl7_ack_mode, practice.pms_id_system) == (
        "original", "2.16.840.1.113883.2.1.4.1")
    assert events("practice.hl7_settings_changed")[-1].actor == ADMIN
    assert save(admin, practice, "hl7", ack_mode="eventually").status_code == 400


# --- another practice ----------------------------------------------------------------------

def test_a_member_of_another_practice_gets_404_everywhere(practice):
    other = make_practice(slug="elsewhere")
    client = log_in(Client(), add_staff(actor=ACTOR, practice=other, email="a@else.example",
                                        role="admin").user)
    before = (list(Practice.objects.filter(id=practice.id).values()), AuditEvent.objects.count())
    assert client.get(page_url(practice)).status_code == 404
    for section in SECTIONS:
        response = save(client, practice, section, reason="x", confirm="on")
        assert response.status_code == 404, section
    assert (list(Practice.objects.filter(id=practice.id).values()),
            AuditEvent.objects.count()) == before


# --- export --------------------------------------------------------------------------------

def test_an_admin_downloads_the_export_and_it_is_audited(admin, practice):
    make_patient(practice, pms_id="P1", family_name="Quill")
    html = admin.get(page_url(practice)).content.decode()
    assert f'href="/p/{practice.slug}/export.json"' in html
    response = admin.get(f"/p/{practice.slug}/export.json")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{practice.slug}-export.json"'
    data = json.loads(b"".join(response.streaming_content))
    assert data["schema"] == "practicesync.export/1"
    assert [p["family_name"] for p in data["patients"]] == ["Quill"]
    event, = events("practice.exported")
    assert (event.actor, event.why) == (ADMIN, "web")


def test_only_admins_may_export(reception, practice):
    assert "export.json" not in reception.get(page_url(practice)).content.decode()
    assert reception.get(f"/p/{practice.slug}/export.json").status_code == 403
    assert not events("practice.exported")
