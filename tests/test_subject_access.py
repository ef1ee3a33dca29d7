"""Subject access (one patient's export) and erasure of a non-digital patient (docs/adr/0017)."""

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.test import Client
from django.urls import reverse

from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.outreach.dispatch import tick
from practicesync.outreach.messaging import send_message
from practicesync.outreach.models import Message, OutboxEntry, Sequence
from practicesync.patients.actions import add_patient_request
from practicesync.patients.erasure import ERASED
from practicesync.patients.models import Patient, ReviewItem
from practicesync.patients.sync import sync_patient_list
from practicesync.practices.actions import add_staff
from practicesync.practices.export import WITHHELD
from practicesync.results.importer import sync_results
from tests.cli import run, run_json
from tests.factories import ACTOR, list_row, log_in, make_account, make_practice, write_list

pytestmark = pytest.mark.django_db

SYDNEY = ZoneInfo("Australia/Sydney")
IN_WINDOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=SYDNEY)  # a Tuesday morning
# (given, family, mobile as stored, email, street, date of birth): synthetic people.
PEOPLE = {
    "P1": ("Zelda", "Quarrington", "+61412300001", "zelda.q@example.org", "12 Wattle Street",
           "1971-03-14"),
    "P2": ("Oswin", "Featherstone", "+61412300002", "oswin.f@example.org", "3 Banksia Road",
           "1964-08-30"),
}
OTHER_PRACTICE = ("Philippa", "Underwood", "+61412300003", "pip.u@example.net",
                  "9 Acacia Lane", "1988-12-02")
# Enough people that dropping one from the list stays under the 5% truncation guard.
CROWD = [list_row(pms_id=f"C{n}", given_name="Crowd", family_name=f"Member{n}",
                  date_of_birth="1990-01-01") for n in range(30)]


def row(pms_id, person, **fields):
    given, family, mobile, email, street, dob = person
    return list_row(pms_id=pms_id, given_name=given, family_name=family, mobile_phone=mobile,
                    email=email, address_line1=street, date_of_birth=dob, **fields)


def secrets_of(person) -> tuple[str, ...]:
    given, family, mobile, email, street, dob = person
    return given, family, mobile, mobile.removeprefix("+61"), email, street, dob


def result_row(result_id, pms_id, comment=""):
    values = dict.fromkeys(RESULT_COLUMNS, "")
    values.update(result_id=result_id, pms_id=pms_id, test_name="FBC", performed_on="2026-11-18",
                  reported_on="2026-11-20", actioned_on="2026-11-20",
                  action="Non-Urgent Appointment", comment=comment,
                  filed_under="Investigation Report")
    return values


def sync_list(practice, tmp_path, rows, **kwargs):
    report = sync_patient_list(practice=practice, actor=ACTOR, **kwargs,
                               source=str(write_list(tmp_path / "list.csv", rows)))
    assert report.status == "completed", report.as_json()
    return report


@pytest.fixture
def harbour(tmp_path):
    """Two patients of one practice with results, follow-ups, messages (one sent to the
    outbox), requests and review items; a third person at another practice with P1 too."""
    practice = make_practice(slug="harbour", pms="bestpractice")
    sync_list(practice, tmp_path, [row(p, person) for p, person in PEOPLE.items()] + CROWD)
    sync_results(practice=practice, actor=ACTOR, source=str(write_list(
        tmp_path / "results.csv", [result_row("R1", "P1", comment="Ring Zelda on +61412300001"),
                                   result_row("R2", "P2")], RESULT_COLUMNS)))
    patients = {p: Patient.objects.get(practice=practice, pms_id=p) for p in PEOPLE}
    for pms_id, patient in patients.items():
        send_message(actor=ACTOR, patient=patient, channel="sms", now=IN_WINDOW,
                     body="Hello {first_name}, please call the surgery.")
        add_patient_request(actor=ACTOR, patient=patient, reason="repeat prescription",
                            notes=f"Call back on {PEOPLE[pms_id][2]}")
    tick(now=IN_WINDOW)  # the messages go to the outbox
    send_message(actor=ACTOR, patient=patients["P1"], channel="email", now=IN_WINDOW,
                 body="A second one, {first_name}.")  # still queued
    own = ReviewItem.objects.create(practice=practice, kind="possible_match", key="k1",
                                    pms_ids=["P1"], detail="Zelda Quarrington may be A9")
    own.patients.add(patients["P1"])
    both = ReviewItem.objects.create(
        practice=practice, kind="ambiguous_match", key="k2", pms_ids=["P1", "P2"],
        detail="Zelda Quarrington and Oswin Featherstone both match")
    both.patients.add(*patients.values())

    other = make_practice(slug="other", pms="bestpractice")
    sync_list(other, tmp_path, [row("P1", OTHER_PRACTICE)])
    return practice, patients


def staff(practice, role):
    membership = add_staff(actor=ACTOR, practice=practice, email=f"{role}@{practice.slug}.test",
                           role=role)
    return log_in(Client(), membership.user)


def leaked(text: str, person) -> list[str]:
    return [s for s in secrets_of(person) if s.casefold() in text.casefold()]


# --- subject access --------------------------------------------------------------------------

def export_of(slug, pms_id) -> tuple[int, str]:
    return run("export", "--practice", slug, "--patient", pms_id)


def test_a_patient_export_holds_that_patient_and_nobody_else(harbour):
    practice, patients = harbour
    code, out = export_of("harbour", "P1")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == "practicesync.export/1"
    assert [(p["pms_id"], p["family_name"], p["mobile_phone"]) for p in data["patients"]] == [
        ("P1", "Quarrington", "+61412300001")]
    for key in ("results", "result_groups", "patient_requests", "messages", "staff_tasks"):
        assert {item["pms_id"] for item in data[key]} <= {"P1"}, key
    assert len(data["messages"]) == 2 and len(data["results"]) == 1
    assert data["results"][0]["comment"] == "Ring Zelda on +61412300001"
    assert len(data["result_groups"]) == 1 and len(data["patient_requests"]) == 1
    assert data["sync_runs"] == []
    # Review items naming them; one that also names P2 keeps its text back.
    items = {item["kind"]: item for item in data["review_items"]}
    assert items["possible_match"]["detail"] == "Zelda Quarrington may be A9"
    assert (items["ambiguous_match"]["detail"], items["ambiguous_match"]["pms_ids"]) == (
        WITHHELD, ["P1"])
    # Their audit events, and only theirs.
    own_events = set(AuditEvent.objects.filter(patient=patients["P1"]).values_list("id", flat=True))
    assert data["audit_events"] and {e["id"] for e in data["audit_events"]} <= own_events
    assert {"patient.created", "message.queued", "patient.request_added"} <= {
        e["action"] for e in data["audit_events"]}
    # Nothing of the other patient of the practice, nor of the other practice's P1.
    assert leaked(out, PEOPLE["P2"]) == [] and leaked(out, OTHER_PRACTICE) == []
    assert leaked(out, PEOPLE["P1"])  # the check can see a leak


def test_a_practice_export_is_unchanged_by_the_patient_option(harbour):
    code, out = run("export", "--practice", "harbour")
    data = json.loads(out)
    assert code == 0 and "audit_events" not in data and len(data["patients"]) == 32
    items = {item["kind"]: item for item in data["review_items"]}
    assert items["ambiguous_match"]["pms_ids"] == ["P1", "P2"]
    assert "Oswin" in items["ambiguous_match"]["detail"]


def test_a_patient_export_is_audited_as_a_subject_access(harbour):
    practice, patients = harbour
    export_of("harbour", "P1")
    [event] = AuditEvent.objects.filter(practice=practice, action="practice.exported")
    assert (event.why, event.patient_id, event.detail["pms_id"], event.detail["via"]) == (
        "subject access", patients["P1"].id, "P1", "cli")
    assert event.actor.startswith("cli:")


@pytest.mark.parametrize("slug, pms_id", [("harbour", "NOPE"), ("nowhere", "P1")])
def test_an_unknown_patient_or_practice_exports_nothing(harbour, slug, pms_id):
    code, out = export_of(slug, pms_id)
    assert code == 2 and "{" not in out
    assert not AuditEvent.objects.filter(action="practice.exported").exists()


def test_the_patient_page_download_is_for_admins_only(harbour):
    practice, patients = harbour
    url = reverse("patient_export", kwargs={"practice": "harbour", "pms_id": "P1"})
    page = reverse("patient", kwargs={"practice": "harbour", "pms_id": "P1"})
    admin = staff(practice, "admin")
    assert url in admin.get(page).content.decode()
    response = admin.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "Quarrington" not in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    data = json.loads(body)
    assert [p["pms_id"] for p in data["patients"]] == ["P1"] and not leaked(body, PEOPLE["P2"])
    event = AuditEvent.objects.get(action="practice.exported")
    assert (event.why, event.patient_id, event.detail["via"]) == (
        "subject access", patients["P1"].id, "web")

    for role in ("reception", "clinician"):
        client = staff(practice, role)
        assert client.get(url).status_code == 403
        assert url not in client.get(page).content.decode()
    other_admin = staff(make_practice(slug="elsewhere"), "admin")
    assert other_admin.get(url).status_code == 404
    assert AuditEvent.objects.filter(action="practice.exported").count() == 1


# --- erasure ---------------------------------------------------------------------------------

def database_text() -> str:
    """Every stored value of every table, as text: what erasure must leave no trace in."""
    parts = []
    for model in apps.get_models(include_auto_created=True):
        names = [f.attname for f in model._meta.concrete_fields]
        for values in model.objects.values_list(*names):
            for value in values:
                if isinstance(value, bytes | memoryview):
                    value = bytes(value).decode("utf-8", "replace")
                parts.append(json.dumps(value, default=str) if isinstance(value, dict | list)
                             else str(value))
    return "\n".join(parts)


def leave(practice, tmp_path):
    """The next list no longer has P1: they left the practice."""
    sync_list(practice, tmp_path, [row("P2", PEOPLE["P2"])] + CROWD)
    assert Patient.objects.get(practice=practice, pms_id="P1").status == "left"


def erase(pms_id, slug="harbour"):
    return run_json("patients", "erase", "--practice", slug, "--pms-id", pms_id, "--reason",
                    "written request of 2026-11-20")


def test_erasure_removes_the_patients_data_from_every_table(harbour, tmp_path):
    practice, patients = harbour
    leave(practice, tmp_path)
    assert leaked(database_text(), PEOPLE["P1"]) == list(secrets_of(PEOPLE["P1"]))
    assert OutboxEntry.objects.filter(practice=practice, body__contains="Zelda").exists()

    code, data = erase("P1")
    assert code == 0 and data["erased"] is True and data["outbox_entries_deleted"] == 1

    assert leaked(database_text(), PEOPLE["P1"]) == []
    # The other patients are as they were.
    assert leaked(database_text(), PEOPLE["P2"]) == list(secrets_of(PEOPLE["P2"]))
    assert leaked(database_text(), OTHER_PRACTICE) == list(secrets_of(OTHER_PRACTICE))
    erased = Patient.objects.get(id=patients["P1"].id)
    assert (erased.pms_id, erased.status, erased.family_name, erased.digital) == (
        "P1", "left", ERASED, False)
    # The contact ledger stays: each message's channel, outcome and times, without its text.
    ledger = list(Message.objects.filter(patient=erased).order_by("id")
                  .values_list("channel", "status", "to", "body"))
    assert ledger == [("sms", "sent", "", ERASED), ("email", "skipped", "", ERASED)]
    # The review item naming both keeps what it says of the other patient.
    both = ReviewItem.objects.get(practice=practice, key="k2")
    assert both.detail == f"{ERASED} {ERASED} and Oswin Featherstone both match"


def test_erasure_leaves_an_audit_event_without_the_data(harbour, tmp_path):
    practice, patients = harbour
    leave(practice, tmp_path)
    before = list(AuditEvent.objects.order_by("id").values())
    erase("P1")
    after = list(AuditEvent.objects.order_by("id").values())
    assert after[:len(before)] == before  # the audit log was not rewritten
    event = AuditEvent.objects.get(action="patient.erased")
    assert (event.patient_id, event.why, event.detail["pms_id"], event.detail["reason"]) == (
        patients["P1"].id, "written request of 2026-11-20", "P1", "written request of 2026-11-20")
    assert leaked(json.dumps(event.detail) + event.why, PEOPLE["P1"]) == []


def test_erasure_cancels_live_follow_ups_first(harbour):
    practice, patients = harbour
    # Left without a sync run (which would have stopped them): the follow-up is still live.
    Patient.objects.filter(id=patients["P1"].id).update(status="left")
    sequence = Sequence.objects.get(group__patient=patients["P1"])
    assert sequence.state in Sequence.LIVE
    code, data = erase("P1")
    assert code == 0 and data["follow_ups_cancelled"] == 1
    sequence.refresh_from_db()
    assert sequence.state == "cancelled"
    assert AuditEvent.objects.filter(action="sequence.cancelled", patient=patients["P1"]).exists()
    assert Sequence.objects.get(group__patient=patients["P2"]).state in Sequence.LIVE


def test_erasure_refuses_a_patient_still_on_the_list(harbour):
    practice, _ = harbour
    before = database_text()
    code, data = erase("P1")
    assert code == 1 and data["erased"] is False and "still registered" in data["error"]
    assert database_text() == before


def test_erasure_refuses_a_digital_patient(harbour):
    practice, _ = harbour
    make_account(practice, pms_id="D1", given_name="Dora", family_name="Digitalis",
                 status="left")
    before = database_text()
    code, data = erase("D1")
    assert code == 1 and "digital patient's account is their own" in data["error"]
    assert database_text() == before
    code, out = run("patients", "erase", "--practice", "harbour", "--pms-id", "D1", "--reason",
                    "asked")
    assert code == 1 and "digital" in out


@pytest.mark.parametrize("argv", [
    ("--practice", "harbour", "--pms-id", "NOPE", "--reason", "asked"),
    ("--practice", "other", "--pms-id", "P9", "--reason", "asked"),
    ("--practice", "nowhere", "--pms-id", "P1", "--reason", "asked"),
])
def test_erasure_of_an_unknown_patient_is_a_usage_error(harbour, argv):
    assert run("patients", "erase", *argv)[0] == 2
    assert not AuditEvent.objects.filter(action="patient.erased").exists()


def test_the_next_list_sync_leaves_an_erased_patient_erased(harbour, tmp_path):
    practice, patients = harbour
    leave(practice, tmp_path)
    erase("P1")
    count = Patient.objects.filter(practice=practice).count()
    # The same list again (P1 still gone): nothing is re-created or filled in.
    report = sync_list(practice, tmp_path, [row("P2", PEOPLE["P2"])] + CROWD)
    assert report.summary["created"] == 0
    assert Patient.objects.filter(practice=practice).count() == count
    assert leaked(database_text(), PEOPLE["P1"]) == []
    # Registered again in the PMS: the PMS id links the same record, which takes the PMS's
    # details again as any non-digital patient's do (a new registration, not a restore).
    sync_list(practice, tmp_path, [row(p, person) for p, person in PEOPLE.items()] + CROWD)
    back = Patient.objects.get(practice=practice, pms_id="P1")
    assert (back.id, back.status, back.family_name) == (patients["P1"].id, "active",
                                                        "Quarrington")
    assert Patient.objects.filter(practice=practice).count() == count


def test_erasure_from_the_patient_page(harbour, tmp_path):
    practice, patients = harbour
    leave(practice, tmp_path)
    url = reverse("patient_erase", kwargs={"practice": "harbour", "pms_id": "P1"})
    page = reverse("patient", kwargs={"practice": "harbour", "pms_id": "P1"})
    reception = staff(practice, "reception")
    assert reception.get(url).status_code == 403
    assert reception.post(url, {"family_name": "Quarrington", "reason": "asked"}).status_code == 403
    assert staff(make_practice(slug="elsewhere"), "admin").post(
        url, {"family_name": "Quarrington", "reason": "asked"}).status_code == 404

    admin = staff(practice, "admin")
    assert url in admin.get(page).content.decode()
    form = admin.get(url)
    assert form.status_code == 200 and 'name="family_name"' in form.content.decode()
    wrong = admin.post(url, {"family_name": "Featherstone", "reason": "asked"})
    assert wrong.status_code == 400 and "not this patient&#x27;s family name" in wrong.content.decode()
    assert Patient.objects.get(id=patients["P1"].id).family_name == "Quarrington"

    done = admin.post(url, {"family_name": " quarrington ", "reason": "letter of 20 Nov"})
    assert done.status_code == 302 and done["Location"].startswith(page)
    assert Patient.objects.get(id=patients["P1"].id).family_name == ERASED
    event = AuditEvent.objects.get(action="patient.erased")
    assert (event.actor, event.why) == ("admin@harbour.test", "letter of 20 Nov")
    # The confirmation travels in the messages cookie: it names nobody.
    assert not leaked(" ".join(c.value for c in done.cookies.values()), PEOPLE["P1"])


def test_the_erase_page_refuses_a_patient_still_on_the_list(harbour):
    practice, patients = harbour
    admin = staff(practice, "admin")
    url = reverse("patient_erase", kwargs={"practice": "harbour", "pms_id": "P2"})
    assert "still registered" in admin.get(url).content.decode()
    response = admin.post(url, {"family_name": "Featherstone", "reason": "asked"})
    assert response.status_code == 400
    assert Patient.objects.get(id=patients["P2"].id).family_name == "Featherstone"
    assert not AuditEvent.objects.filter(action="patient.erased").exists()
