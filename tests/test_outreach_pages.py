"""The outreach pages through Django's test client: sequence buttons on Results, staff tasks,
messages and the outbox, and the patient page's Message form. Every new URL is walked as a
member of another practice: 404, and nothing changes."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.outreach.messaging import send_message
from practicesync.outreach.models import Message, OutboxEntry, Sequence, StaffTask
from practicesync.patients.models import Patient
from practicesync.practices.actions import add_staff
from practicesync.results.importer import sync_results
from practicesync.results.models import ResultGroup
from tests.factories import ACTOR, log_in, make_patient, make_practice, write_list

EMAIL = "reception@harbour.example"
OTHER_EMAIL = "reception@other.example"


def result(result_id, pms_id="P1", action="Non-Urgent Appointment", performed="2026-11-18",
           test_name="FBC"):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(result_id=result_id, pms_id=pms_id, test_name=test_name, performed_on=performed,
               reported_on="2026-11-20", actioned_on="2026-11-20", action=action,
               filed_under="Investigation Report")
    return row


def text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


def row_of(html: str, marker: str) -> str:
    found = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", html, re.S) if marker in r]
    assert len(found) == 1, f"{marker!r} in {len(found)} rows"
    return found[0]


def buttons(row: str) -> list[str]:
    return re.findall(r"<button[^>]*>([^<]*)</button>", row)


def follow_ups(practice, tmp_path):
    """A Best Practice practice with Ann (a paused template sequence), Bo (a checklist
    group) and Cy (deceased, with no address to write to)."""
    practice.booking_url = "https://book.example.org/harbour"
    practice.save()
    make_patient(practice, pms_id="P1", given_name="Ann", family_name="Lee",
                 mobile_phone="+61412345678", email="ann@example.org")
    make_patient(practice, pms_id="P2", given_name="Bo", family_name="Tran",
                 mobile_phone="+61412345679")
    make_patient(practice, pms_id="P3", given_name="Cy", family_name="Ward",
                 status=Patient.Status.DECEASED, mobile_phone="+61412345670")
    path = write_list(tmp_path / "results.csv",
                      [result("R1"), result("R2", pms_id="P2", action="Nurse to Advise")],
                      RESULT_COLUMNS)
    assert sync_results(practice=practice, source=str(path), actor=ACTOR).errors == []
    return practice


@pytest.fixture
def bp(au_practice, tmp_path):
    return follow_ups(au_practice, tmp_path)


@pytest.fixture
def ann(bp):
    return Patient.objects.get(practice=bp, pms_id="P1")


@pytest.fixture
def group(bp, ann):
    group = ResultGroup.objects.get(practice=bp, patient=ann)
    assert group.sequence.state == Sequence.State.TO_ACTION_PAUSED
    return group


@pytest.fixture
def task(bp, ann, group):
    return StaffTask.objects.create(practice=bp, patient=ann, group=group,
                                    sequence=group.sequence, kind=StaffTask.Kind.CALL,
                                    reason="no channel left: call about results",
                                    idempotency_key="test:call:1")


@pytest.fixture
def client_in(bp):
    client = Client()
    client.force_login(add_staff(actor=ACTOR, practice=bp, email=EMAIL, role="reception").user)
    return client


def results_url(practice):
    return f"/p/{practice.slug}/results/"


def action_url(practice, group, event):
    return f"/p/{practice.slug}/results/{group.id}/sequence/{event}/"


# --- Results: sequence buttons -------------------------------------------------------------

def test_results_rows_offer_the_buttons_their_state_allows(client_in, bp, group):
    html = client_in.get(results_url(bp)).content.decode()
    ann_row = row_of(html, "LEE, Ann")
    # The state machine also lets staff cancel a sequence that was never started.
    assert buttons(ann_row) == ["Start", "Cancel"]
    assert f'action="{action_url(bp, group, "start")}"' in ann_row
    assert 'aria-label="Start follow-up for LEE, Ann, 18/11/2026"' in ann_row
    assert "csrfmiddlewaretoken" in ann_row
    # A checklist group has no sequence and no buttons.
    assert buttons(row_of(html, "TRAN, Bo")) == []

    for state, expected in [("active", ["Pause", "Cancel"]),
                            ("paused_booking", ["Pause", "Cancel"]),
                            ("completed", ["Restart"]), ("cancelled", ["Restart"]),
                            ("opted_out", ["Restart"]), ("failed", ["Restart"])]:
        Sequence.objects.filter(id=group.sequence.id).update(state=state)
        html = client_in.get(results_url(bp)).content.decode()
        assert buttons(row_of(html, "LEE, Ann")) == expected, state


def test_start_changes_the_state_is_audited_and_says_so(client_in, bp, group):
    response = client_in.post(action_url(bp, group, "start"),
                              {"back": "state=open&page=1&evil=x"})
    assert response.status_code == 302
    assert response["Location"] == f"{results_url(bp)}?state=open&page=1#group-{group.id}"
    group.sequence.refresh_from_db()
    assert group.sequence.state == "active" and group.sequence.started_by == EMAIL
    event = AuditEvent.objects.get(action="sequence.active")
    assert (event.actor, event.patient.pms_id, event.detail["event"]) == (EMAIL, "P1", "start")

    html = client_in.get(response["Location"]).content.decode()
    assert '<li class="success" role="status">Started</li>' in html
    assert buttons(row_of(html, "LEE, Ann")) == ["Pause", "Cancel"]

    assert client_in.post(action_url(bp, group, "pause")).status_code == 302
    group.sequence.refresh_from_db()
    assert group.sequence.state == "to_action_paused"
    client_in.post(action_url(bp, group, "cancel"))
    group.sequence.refresh_from_db()
    assert group.sequence.state == "cancelled"
    client_in.post(action_url(bp, group, "restart"))
    group.sequence.refresh_from_db()
    assert (group.sequence.state, group.sequence.round) == ("active", 2)
    assert AuditEvent.objects.filter(actor=EMAIL, action__startswith="sequence.").count() == 4


def test_an_event_the_state_does_not_allow_shows_the_reason(client_in, bp, group):
    response = client_in.post(action_url(bp, group, "pause"), follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Not changed: cannot pause a sequence that is to_action_paused." in html
    assert 'class="error"' in html
    group.sequence.refresh_from_db()
    assert group.sequence.state == "to_action_paused"
    assert not AuditEvent.objects.filter(action__startswith="sequence.", actor=EMAIL).exists()


def test_sequence_actions_are_post_only_and_know_their_events(client_in, bp, group):
    assert client_in.get(action_url(bp, group, "start")).status_code == 405
    assert client_in.post(action_url(bp, group, "booked")).status_code == 404
    assert client_in.post(action_url(bp, group, "notified")).status_code == 404
    checklist = ResultGroup.objects.get(practice=bp, patient__pms_id="P2")
    assert client_in.post(action_url(bp, checklist, "start")).status_code == 404
    group.sequence.refresh_from_db()
    assert group.sequence.state == "to_action_paused"


def test_a_done_group_is_not_restarted(client_in, bp, group):
    ResultGroup.objects.filter(id=group.id).update(state=ResultGroup.State.DONE)
    Sequence.objects.filter(id=group.sequence.id).update(state="completed")
    assert buttons(row_of(client_in.get(results_url(bp)).content.decode(), "LEE, Ann")) == []
    html = client_in.post(action_url(bp, group, "restart"), follow=True).content.decode()
    assert "results are marked done" in html
    group.sequence.refresh_from_db()
    assert group.sequence.state == "completed"


# --- Tasks ---------------------------------------------------------------------------------

def test_tasks_page_lists_open_tasks_with_a_deep_link(client_in, bp, task):
    response = client_in.get(f"/p/{bp.slug}/tasks/")
    assert response.status_code == 200
    html = response.content.decode()
    row = row_of(html, "data-task")
    assert "Call the patient" in row and "LEE, Ann" in row
    assert f'href="/p/{bp.slug}/patients/P1"' in row
    assert "no channel left: call about results" in row
    assert buttons(row) == ["Done"] and 'name="note"' in row
    assert re.search(r"<label>Note <input", row)
    assert f'href="/p/{bp.slug}/tasks/" aria-current="page">Tasks</a>' in html


def test_done_marks_the_task_audits_the_note_and_hides_it(client_in, bp, task):
    response = client_in.post(f"/p/{bp.slug}/tasks/{task.id}/done/",
                              {"note": "  Spoke to Ann,\n booked  "})
    assert response.status_code == 302 and response["Location"] == f"/p/{bp.slug}/tasks/"
    task.refresh_from_db()
    assert (task.status, task.done_by) == ("done", EMAIL)
    event = AuditEvent.objects.get(action="task.done")
    assert (event.actor, event.why, event.detail["task_id"]) == (
        EMAIL, "Spoke to Ann, booked", task.id)

    html = client_in.get(response["Location"]).content.decode()
    assert "Task marked done." in html and "No open tasks." in html
    done = client_in.get(f"/p/{bp.slug}/tasks/?show=done").content.decode()
    row = row_of(done, "data-task")
    assert "LEE, Ann" in row and EMAIL in row and buttons(row) == []

    # Twice is harmless: no second audit event.
    client_in.post(f"/p/{bp.slug}/tasks/{task.id}/done/")
    assert AuditEvent.objects.filter(action="task.done").count() == 1
    assert client_in.get(f"/p/{bp.slug}/tasks/{task.id}/done/").status_code == 405


# --- Messages and the outbox ---------------------------------------------------------------

def test_messages_page_lists_messages_newest_first(client_in, bp, ann):
    send_message(actor=ACTOR, patient=ann, channel="sms", body="First {first_name}")
    second = send_message(actor=ACTOR, patient=ann, channel="email", subject="Form",
                          body="Second")
    Message.objects.filter(id=second.id).update(status="failed", error="mailbox full")
    response = client_in.get(f"/p/{bp.slug}/messages/")
    assert response.status_code == 200
    html = response.content.decode()
    rows = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", html, re.S) if "data-message" in r]
    assert [text(r).split()[3] for r in rows] == ["Email", "SMS"]
    assert "ann@example.org" in rows[0] and "mailbox full" in rows[0] and "Failed" in rows[0]
    assert "+61412345678" in rows[1] and "Queued" in rows[1]
    assert f'href="/p/{bp.slug}/patients/P1"' in rows[1]
    assert "2 in all." in html


def test_messages_page_is_paginated_by_50(client_in, bp, ann):
    for n in range(51):
        send_message(actor=ACTOR, patient=ann, channel="sms", body=f"Note {n}")
    html = client_in.get(f"/p/{bp.slug}/messages/").content.decode()
    assert html.count("data-message=") == 50 and "Page 1 of 2" in html
    html = client_in.get(f"/p/{bp.slug}/messages/?page=2").content.decode()
    assert html.count("data-message=") == 1


def test_outbox_shows_what_would_have_been_sent(client_in, bp):
    OutboxEntry.objects.create(practice=bp, idempotency_key="k1", channel="sms",
                               to="+61412345678", body="Hello Ann, please book.")
    html = client_in.get(f"/p/{bp.slug}/outbox/").content.decode()
    assert "Hello Ann, please book." in html and "+61412345678" in html
    assert f'href="/p/{bp.slug}/outbox/" aria-current="page">Outbox</a>' in html
    assert f'href="/p/{bp.slug}/messages/" aria-current="page">Messages</a>' in html  # nav


# --- the patient page's Message form -------------------------------------------------------

def test_patient_page_has_a_labelled_message_form_and_the_patients_messages(client_in, bp, ann):
    send_message(actor=ACTOR, patient=ann, channel="sms", body="Hi {first_name}")
    html = client_in.get(f"/p/{bp.slug}/patients/P1").content.decode()
    assert f'action="/p/{bp.slug}/patients/P1/message/"' in html
    assert '<legend>Channel</legend>' in html
    assert 'value="sms" checked' in html and 'value="email"' in html
    assert "<label>Message <textarea" in html and "<label>Subject (email only) <input" in html
    assert "Hi Ann" in html and "Queued" in html


def test_sending_from_the_patient_page_queues_and_audits(client_in, bp, ann):
    response = client_in.post(f"/p/{bp.slug}/patients/P1/message/",
                              {"channel": "email", "subject": "Your form",
                               "body": "Dear {first_name}, your form is ready."})
    assert response.status_code == 302
    assert response["Location"] == f"/p/{bp.slug}/patients/P1#messages"
    message = Message.objects.get()
    assert (message.kind, message.channel, message.to, message.subject, message.body,
            message.created_by) == ("adhoc", "email", "ann@example.org", "Your form",
                                    "Dear Ann, your form is ready.", EMAIL)
    assert AuditEvent.objects.get(action="message.queued").actor == EMAIL
    html = client_in.get(response["Location"]).content.decode()
    assert "Message queued." in html and "Dear Ann, your form is ready." in html


def test_a_refused_message_shows_the_reason_and_keeps_the_text(client_in, bp):
    response = client_in.post(f"/p/{bp.slug}/patients/P3/message/",
                              {"channel": "sms", "body": "Please call us."})
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(r'<p class="error" role="alert" id="message-error">Not sent: [^<]*deceased',
                     html)
    assert ">Please call us.</textarea>" in html
    assert not Message.objects.exists()
    assert AuditEvent.objects.get(action="message.refused").actor == EMAIL

    # Result details in an SMS: refused by the text check, the reason names it.
    html = client_in.post(f"/p/{bp.slug}/patients/P1/message/",
                          {"channel": "sms", "body": "Your cholesterol result is 7.2"}
                          ).content.decode()
    assert "Not sent: the text was refused" in html and not Message.objects.exists()
    html = client_in.post(f"/p/{bp.slug}/patients/P1/message/",
                          {"channel": "push", "body": "Hi"}).content.decode()
    assert "Not sent: choose SMS or email." in html and not Message.objects.exists()
    assert client_in.get(f"/p/{bp.slug}/patients/P1/message/").status_code == 405


# --- another practice's member -------------------------------------------------------------

@pytest.fixture
def other_client(db):
    other = make_practice(slug="other", pms="bestpractice")
    client = Client()
    log_in(client, add_staff(actor=ACTOR, practice=other, email=OTHER_EMAIL,
                             role="admin").user)
    return client


def state_of(practice):
    return (list(Sequence.objects.filter(practice=practice).values_list("id", "state", "round")),
            list(StaffTask.objects.filter(practice=practice).values_list("id", "status")),
            Message.objects.filter(practice=practice).count(),
            AuditEvent.objects.filter(practice=practice).count())


def test_a_member_of_another_practice_gets_404_for_every_new_url(other_client, bp, group,
                                                                 task):
    send_message(actor=ACTOR, patient=group.patient, channel="sms", body="Secret Lee note")
    OutboxEntry.objects.create(practice=bp, idempotency_key="k1", channel="sms",
                               to="+61412345678", body="Secret outbox note")
    before = state_of(bp)
    slug = bp.slug
    pages = [reverse("tasks", kwargs={"practice": slug}),
             reverse("messages", kwargs={"practice": slug}),
             reverse("outbox", kwargs={"practice": slug}),
             reverse("patient", kwargs={"practice": slug, "pms_id": "P1"}),
             reverse("results", kwargs={"practice": slug})]
    actions = [reverse("sequence_action", kwargs={"practice": slug, "group_id": group.id,
                                                  "event": event})
               for event in ("start", "pause", "cancel", "restart")]
    actions += [reverse("task_done", kwargs={"practice": slug, "task_id": task.id}),
                reverse("patient_message", kwargs={"practice": slug, "pms_id": "P1"})]
    for url in pages + actions:
        for method in ("get", "post"):
            response = getattr(other_client, method)(
                url, {"channel": "sms", "body": "x", "note": "x"} if method == "post" else {})
            assert response.status_code == 404, (method, url, response.status_code)
            body = response.content.decode()
            assert "LEE" not in body and "Secret" not in body and "+61412345678" not in body
    assert state_of(bp) == before


def test_own_practice_urls_with_another_practices_ids_are_404(other_client, bp, group, task):
    """The other practice's member, on its own slug, naming harbour's group and task ids."""
    before = state_of(bp)
    assert other_client.post(f"/p/other/results/{group.id}/sequence/start/").status_code == 404
    assert other_client.post(f"/p/other/tasks/{task.id}/done/").status_code == 404
    assert other_client.post("/p/other/patients/P1/message/",
                             {"channel": "sms", "body": "x"}).status_code == 404
    assert state_of(bp) == before


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/p/harbour/tasks/", "/p/harbour/messages/",
                                  "/p/harbour/outbox/"])
def test_anonymous_users_are_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"] == f"/login/?next={path}"
