"""The patient page's own sections: the history of changes from sync runs, the patient's
follow-ups, video invites and non-digital requests, and the practice's Requests list. Every
new URL is walked as a member of another practice: 404, and nothing changes."""

import re
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse

from practicesync.audit import events
from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.dashboard.patient_pages import sync_run_url
from practicesync.outreach.models import Message
from practicesync.patients.models import Patient, PatientRequest, SyncRun
from practicesync.patients.sync import sync_patient_list
from practicesync.practices.actions import add_staff
from practicesync.practices.export import build_export
from practicesync.results.importer import sync_results
from tests.factories import ACTOR, list_row, log_in, make_patient, make_practice, write_list

DESK = "desk@riverside.example"
NURSE = "nurse@riverside.example"


@pytest.fixture
def desk(practice):
    return add_staff(actor=ACTOR, practice=practice, email=DESK, role="reception")


@pytest.fixture
def nurse(practice):
    return add_staff(actor=ACTOR, practice=practice, email=NURSE, role="clinician")


@pytest.fixture
def client_in(desk):
    return log_in(Client(), desk.user)


@pytest.fixture
def ann(practice):
    return make_patient(practice, pms_id="P1", given_name="Ann", family_name="Lee",
                        mobile_phone="+447700900101", email="ann@example.org")


def page(client, practice, pms_id="P1") -> str:
    response = client.get(reverse("patient", kwargs={"practice": practice.slug, "pms_id": pms_id}))
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, anchor: str) -> str:
    found = re.search(rf'<h2 id="{anchor}">.*?</section>', html, re.S)
    assert found, anchor
    return found.group(0)


def text(fragment: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


# --- history ---------------------------------------------------------------------------------

def test_history_shows_what_a_sync_run_changed_newest_first(client_in, practice, tmp_path):
    first = list_row(pms_id="P7", given_name="Ola", family_name="Nowak",
                     mobile_phone="07912 000201")
    sync_patient_list(practice=practice, actor=ACTOR,
                      source=str(write_list(tmp_path / "a.csv", [first])))
    moved = {**first, "mobile_phone": "07912 000299", "postcode": "AB1 2CD"}
    sync_patient_list(practice=practice, actor=ACTOR,
                      source=str(write_list(tmp_path / "b.csv", [moved])))
    created_run, changed_run = SyncRun.objects.order_by("id")

    history = section(page(client_in, practice, "P7"), "history")
    rows = re.findall(r"<tr>.*?</tr>", history.split("<tbody>")[1], re.S)
    assert len(rows) == 2
    assert "Updated" in rows[0] and "Created" in rows[1]  # newest first
    assert "mobile_phone: +447912000201 → +447912000299" in text(rows[0])
    assert "postcode: — → AB1 2CD" in text(rows[0])
    for row, run in ((rows[0], changed_run), (rows[1], created_run)):
        # A link while the dashboard has a page for sync runs, the run's number either way.
        url = sync_run_url(practice, run.id)
        assert (f'<a href="{url}">Run {run.id}</a>' if url else f"Run {run.id}") in row
    assert ACTOR in rows[0]


def test_history_is_capped_with_a_link_to_all_of_it(client_in, practice, ann):
    run = SyncRun.objects.create(practice=practice, source="x", triggered_by=ACTOR,
                                 status="completed", started_at="2026-11-01T02:00:00Z")
    for n in range(25):
        events.record(practice=practice, actor=ACTOR, action="patient.updated", patient=ann,
                      sync_run=run, why="pms_wins", detail={"changes": [
                          {"field": "home_phone", "old": f"0{n}", "new": f"0{n + 1}",
                           "rule": "pms_wins"}]})
    history = section(page(client_in, practice), "history")
    assert history.count("home_phone") == 20
    url = reverse("patient_history", kwargs={"practice": practice.slug, "pms_id": "P1"})
    assert f'<a href="{url}">Show all 25 changes</a>' in history
    full = client_in.get(url).content.decode()
    assert full.count("home_phone") == 25 and "024 → 025" in text(full)


# --- follow-ups ------------------------------------------------------------------------------

def test_the_patients_follow_ups_show_state_and_next_step(au_practice, tmp_path):
    client = log_in(Client(), add_staff(actor=ACTOR, practice=au_practice, email=DESK,
                                        role="reception").user)
    make_patient(au_practice, pms_id="P1", given_name="Ann", family_name="Lee",
                 mobile_phone="+61412345678")
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(result_id="R1", pms_id="P1", test_name="FBC", performed_on="2026-11-18",
               reported_on="2026-11-20", actioned_on="2026-11-20",
               action="Non-Urgent Appointment", filed_under="Investigation Report")
    sync_results(practice=au_practice, actor=ACTOR,
                 source=str(write_list(tmp_path / "r.csv", [row], RESULT_COLUMNS)))
    follow_ups = text(section(page(client, au_practice), "sequences"))
    assert "18/11/2026 Non-Urgent Appointment" in follow_ups
    assert "To action – Paused" in follow_ups
    assert re.search(r"Step 1 of \d+: SMS, once staff press Start", follow_ups)


# --- video invites ---------------------------------------------------------------------------

def video_url(practice, pms_id="P1"):
    return reverse("patient_video", kwargs={"practice": practice.slug, "pms_id": pms_id})


def test_a_video_invite_is_queued_with_a_room_link_shown_on_the_page(client_in, practice, ann):
    response = client_in.post(video_url(practice), {"channel": "email"})
    assert response.status_code == 302 and response["Location"].endswith("/patients/P1#video")
    message = Message.objects.get()
    assert (message.kind, message.channel, message.to, message.created_by) == (
        "video", "email", "ann@example.org", DESK)
    link = re.search(r"(https://video\.example\.org/room/\S+)$", message.body).group(1)
    assert AuditEvent.objects.get(action="message.queued").patient == ann
    html = client_in.get(response["Location"]).content.decode()
    assert "Video invite queued." in html
    assert f'room link <a href="{link}"' in section(html, "video")


def test_video_invites_are_refused_as_the_cli_refuses_them(client_in, practice):
    make_patient(practice, pms_id="P3", given_name="Edith", family_name="Hale",
                 status=Patient.Status.DECEASED, mobile_phone="+447700900103")
    response = client_in.post(video_url(practice, "P3"), {"channel": "sms"})
    assert response.status_code == 400
    assert re.search(r'<p class="error" role="alert" id="video-error">Not sent: [^<]*deceased',
                     response.content.decode())
    assert not Message.objects.exists()
    assert AuditEvent.objects.get(action="message.refused").actor == DESK
    page = client_in.get(reverse("patient", kwargs={"practice": practice.slug, "pms_id": "P3"}))
    assert "Video invites to this patient are refused: deceased." in page.content.decode()
    assert "Send video invite</button>" not in page.content.decode()

    # A mobile shared by a family may be a parent's: no room link by SMS.
    for n in (4, 5):
        make_patient(practice, pms_id=f"P{n}", given_name=f"Kid{n}", family_name="Ward",
                     mobile_phone="+447700900150")
    html = client_in.post(video_url(practice, "P4"), {"channel": "sms"}).content.decode()
    assert "Not sent: the mobile may not be the patient&#x27;s own" in html
    html = client_in.post(video_url(practice, "P4"), {"channel": "push"}).content.decode()
    assert "Not sent: choose SMS or email." in html
    assert not Message.objects.exists()
    assert client_in.get(video_url(practice)).status_code == 405


# --- non-digital requests --------------------------------------------------------------------

def add_url(practice, pms_id="P1"):
    return reverse("patient_request_add", kwargs={"practice": practice.slug, "pms_id": pms_id})


def done_url(practice, request_id):
    return reverse("request_done", kwargs={"practice": practice.slug, "request_id": request_id})


def add(client, practice, **data):
    return client.post(add_url(practice), {f"request-{k}": v for k, v in data.items()})


def test_a_phone_request_is_added_listed_closed_and_exported(client_in, practice, ann, nurse):
    response = add(client_in, practice, reason="Repeat prescription for inhaler",
                   notes="Called at 9:10, prefers a callback after 4pm",
                   assigned_to=nurse.id, due_on="2026-11-25")
    assert response.status_code == 302 and response["Location"].endswith("/patients/P1#requests")
    request = PatientRequest.objects.get()
    assert (request.practice, request.patient, request.assigned_to, request.status,
            request.created_by, str(request.due_on)) == (
        practice, ann, nurse, "open", DESK, "2026-11-25")
    event = AuditEvent.objects.get(action="patient.request_added")
    assert (event.actor, event.patient, event.detail["assigned_to"]) == (DESK, ann, NURSE)

    requests = section(page(client_in, practice), "requests")
    assert "Repeat prescription for inhaler" in requests and NURSE in requests
    assert "25/11/2026" in requests

    listed = client_in.get(reverse("requests", kwargs={"practice": practice.slug}))
    assert "Repeat prescription for inhaler" in listed.content.decode()
    # "Mine" is the nurse's list, not the desk's.
    mine = client_in.get(reverse("requests", kwargs={"practice": practice.slug}),
                         {"assignee": "mine"}).content.decode()
    assert "Repeat prescription" not in mine and "No requests open for you." in mine
    nurse_client = log_in(Client(), nurse.user)
    mine = nurse_client.get(reverse("requests", kwargs={"practice": practice.slug}),
                            {"assignee": "mine"}).content.decode()
    assert "Repeat prescription" in mine
    assert 'aria-current="page">Requests</a>' in mine

    response = nurse_client.post(done_url(practice, request.id), {"assignee": "mine",
                                                                  "status": "open"})
    assert response.status_code == 302
    assert response["Location"].endswith("/requests/?assignee=mine&status=open")
    request.refresh_from_db()
    assert (request.status, request.done_by) == ("done", NURSE) and request.done_at
    assert AuditEvent.objects.get(action="patient.request_done").actor == NURSE
    nurse_client.post(done_url(practice, request.id))  # twice: still one event
    assert AuditEvent.objects.filter(action="patient.request_done").count() == 1

    assert "No open requests." in section(page(client_in, practice), "requests")
    done = client_in.get(reverse("requests", kwargs={"practice": practice.slug}),
                         {"status": "done"}).content.decode()
    assert "Repeat prescription for inhaler" in done and f"{NURSE}, " in done

    exported = dict(build_export(practice))
    assert list(exported["patient_requests"]) == [{
        "id": request.id, "pms_id": "P1", "reason": "Repeat prescription for inhaler",
        "notes": "Called at 9:10, prefers a callback after 4pm", "assigned_to": NURSE,
        "due_on": "2026-11-25", "status": "done", "created_by": DESK,
        "created_at": request.created_at.isoformat(), "done_by": NURSE,
        "done_at": request.done_at.isoformat()}]


def test_done_from_the_patient_page_returns_there(client_in, practice, ann):
    assert add(client_in, practice, reason="Sick note").status_code == 302
    request = PatientRequest.objects.get()
    assert request.assigned_to is None
    response = client_in.post(done_url(practice, request.id), {"back": "patient"})
    assert response["Location"].endswith("/patients/P1#requests")


def test_a_request_needs_a_reason_and_this_practices_staff(client_in, practice, ann):
    response = add(client_in, practice, reason=" ", notes="kept")
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(r'<ul class="errorlist" id="id_request-reason_error"><li>This field is '
                     r'required', html)
    assert 'aria-describedby="id_request-reason_error"' in html
    assert ">\nkept</textarea>" in html and "<details class=\"add-request\" open>" in html

    elsewhere = make_practice(slug="elsewhere")
    stranger = add_staff(actor=ACTOR, practice=elsewhere, email="gp@else.example", role="admin")
    response = add(client_in, practice, reason="Call back", assigned_to=stranger.id)
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert "gp@else.example" not in response.content.decode()  # not even offered
    assert not PatientRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="patient.request_added").exists()


# --- another practice ------------------------------------------------------------------------

def test_a_member_of_another_practice_gets_404_on_every_url(practice, ann, desk):
    assert add(log_in(Client(), desk.user), practice, reason="Forms").status_code == 302
    request = PatientRequest.objects.get()
    other = make_practice(slug="elsewhere")
    make_patient(other, pms_id="P1", given_name="Zed", family_name="Other")
    client = log_in(Client(), add_staff(actor=ACTOR, practice=other, email="a@else.example",
                                        role="admin").user)
    state = (list(PatientRequest.objects.values()), Message.objects.count(),
             AuditEvent.objects.filter(practice=practice).count())
    slug, kw = practice.slug, {"practice": practice.slug, "pms_id": "P1"}
    urls = [reverse("patient", kwargs=kw), reverse("patient_history", kwargs=kw),
            reverse("patient_video", kwargs=kw), reverse("patient_request_add", kwargs=kw),
            reverse("requests", kwargs={"practice": slug}), done_url(practice, request.id),
            reverse("settings", kwargs={"practice": slug}),
            reverse("settings_save", kwargs={"practice": slug, "section": "stop"})]
    for url in urls:
        for method in ("get", "post"):
            response = getattr(client, method)(url, {"channel": "sms", "request-reason": "x",
                                                     "stop-reason": "x", "stop-confirm": "on"}
                                               if method == "post" else {})
            assert response.status_code == 404, (method, url, response.status_code)
            assert "Forms" not in response.content.decode()
    # On its own slug, naming this practice's request: still not found.
    assert client.post(done_url(other, request.id)).status_code == 404
    assert (list(PatientRequest.objects.values()), Message.objects.count(),
            AuditEvent.objects.filter(practice=practice).count()) == state
