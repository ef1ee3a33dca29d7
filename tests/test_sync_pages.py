"""The Sync runs pages, "Sync now" and the review queue, through Django's test client."""

import datetime as dt
import re
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from practicesync.audit.models import AuditEvent
from practicesync.patients.models import NotSamePerson, Patient, ReviewItem, SyncRun
from practicesync.patients.sync import sync_patient_list
from practicesync.patients.tasks import patient_sync_now
from practicesync.practices.actions import add_staff, schedule_nightly_sync
from tests.factories import ACTOR, NHS, list_row, log_in, make_account, make_practice, write_list

ADMIN, RECEPTION, CLINICIAN = ("admin@riverside.example", "desk@riverside.example",
                               "gp@riverside.example")


def sync(practice, path):
    return sync_patient_list(practice=practice, source=str(path), actor="test")


def text(fragment: str) -> str:
    """What a reader sees: tags dropped (inline ones join their words), entities decoded."""
    return " ".join(unescape(re.sub(r"<[^>]+>", "", fragment.replace("<td", " <td"))).split())


def client_as(practice, email, role) -> Client:
    return log_in(Client(), add_staff(actor=ACTOR, practice=practice, email=email,
                                      role=role).user)


@pytest.fixture
def admin(practice):
    return client_as(practice, ADMIN, "admin")


@pytest.fixture
def reception(practice):
    return client_as(practice, RECEPTION, "reception")


def url(name, practice, **kwargs):
    return reverse(name, kwargs={"practice": practice.slug, **kwargs})


def test_a_run_shows_its_counts_row_errors_and_each_field_change(practice, admin, tmp_path):
    first = write_list(tmp_path / "1.csv", [
        list_row(pms_id="P1", given_name="Ann", family_name="Lee", mobile_phone="07912 000001"),
        list_row(pms_id="P2", given_name="Bo", family_name="Tran")])
    sync(practice, first)
    second = write_list(tmp_path / "2.csv", [
        list_row(pms_id="P1", given_name="Ann", family_name="Lee", mobile_phone="07912 000009"),
        list_row(pms_id="P2", given_name="Bo", family_name="Tran"),
        list_row(pms_id="P3", given_name="Cy", family_name="Ward", nhs_number="1234567890")])
    run_id = sync(practice, second).run_id

    runs = admin.get(url("sync_runs", practice))
    assert runs.status_code == 200
    rows = re.findall(r'<tr class="run [^"]*" data-run="(\d+)">(.*?)</tr>', runs.content.decode(),
                      re.S)
    assert [int(r) for r, _ in rows] == [run_id, run_id - 1]  # newest first
    # created, updated, unchanged, non-digital created, needs review, left, deceased, errors
    assert text(rows[0][1]).split()[2:] == ["Practice", "list", "Completed", "With", "Errors",
                                            "1", "1", "1", "1", "0", "0", "0", "1", "test"]

    page = admin.get(url("sync_run", practice, run_id=run_id)).content.decode()
    errors = re.search(r'<table class="sync-errors".*?</table>', page, re.S).group(0)
    assert "P3" in errors and "nhs_number" in errors
    changes = re.search(r'<table class="sync-changes".*?</table>', page, re.S).group(0)
    p1 = Patient.objects.get(practice=practice, pms_id="P1")
    event = AuditEvent.objects.get(sync_run_id=run_id, patient=p1)
    row = re.search(rf'<tr data-event="{event.id}">(.*?)</tr>', changes, re.S).group(1)
    assert "mobile_phone: +447912000001 → +447912000009 (non_digital_follows_pms)" in text(row)
    assert "LEE, Ann" in text(row)


def test_sync_now_queues_the_configured_sync_once_as_the_staff_member(practice, reception,
                                                                      tmp_path):
    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1")])
    schedule_nightly_sync(actor=ACTOR, practice=practice, source=str(path),
                          at=dt.time(3, 30))
    page = reception.get(url("sync_runs", practice)).content.decode()
    assert "03:30" in page and "Sync now" in page

    response = reception.post(url("sync_now", practice), follow=True)
    assert "Sync queued" in response.content.decode()
    assert "waiting for the worker" in response.content.decode()
    reception.post(url("sync_now", practice))  # pressed twice: still one run waiting
    task = DBTaskResult.objects.get()
    assert task.task_path == patient_sync_now.module_path
    assert AuditEvent.objects.filter(practice=practice, action="sync.queued",
                                     actor=RECEPTION).count() == 1

    # What the worker will run: the configured sync, recorded as started by the staff member.
    patient_sync_now.call(**task.args_kwargs["kwargs"])
    run = SyncRun.objects.get(practice=practice)
    assert (run.status, run.triggered_by, run.counts["created"]) == ("completed", RECEPTION, 1)


def test_sync_now_is_refused_without_permission_and_for_clinicians(db, tmp_path):
    practice = make_practice(slug="closed", permitted=False)
    practice.list_source = str(tmp_path / "l.csv")
    practice.save()
    reception = client_as(practice, RECEPTION, "reception")
    response = reception.post(url("sync_now", practice), follow=True)
    assert "Not queued: Patient Sync is off" in response.content.decode()
    clinician = client_as(practice, CLINICIAN, "clinician")
    assert clinician.post(url("sync_now", practice)).status_code == 403
    assert "Sync now" not in clinician.get(url("sync_runs", practice)).content.decode()
    assert not DBTaskResult.objects.exists()


@pytest.fixture
def twins(practice, tmp_path):
    """A list row that matches two digital accounts by name and date of birth."""
    one = make_account(practice, account_id="A1", given_name="Kit", family_name="Moss",
                       date_of_birth=dt.date(2001, 4, 4), email="kit@example.org")
    two = make_account(practice, account_id="A2", given_name="Kit", family_name="Moss",
                       date_of_birth=dt.date(2001, 4, 4))
    path = write_list(tmp_path / "l.csv", [list_row(
        pms_id="P7", given_name="Kit", family_name="Moss", date_of_birth="2001-04-04",
        mobile_phone="07912 000007")])
    sync(practice, path)
    listed = Patient.objects.get(practice=practice, pms_id="P7")
    item = ReviewItem.objects.get(practice=practice, kind="ambiguous_match")
    assert set(item.patients.all()) == {one, two, listed}
    return item, listed, one, two, path


def test_linking_makes_the_list_patient_the_account_and_is_recorded(practice, admin, twins):
    item, listed, one, two, path = twins
    page = admin.get(url("review_item", practice, item_id=item.id)).content.decode()
    assert "Link records" in page and "Keep as separate patients" in page
    assert "Review 1 open" in text(page)  # the nav's badge
    records = re.search(r'<table class="review-records".*?</table>', page, re.S).group(0)
    assert "MOSS" in records and "A1" in records and "P7" in records and "04/04/2001" in records

    response = admin.post(url("review_resolve", practice, item_id=item.id, how="linked"),
                          {"pair": f"{listed.id}:{one.id}", "note": "confirmed at the desk"},
                          follow=True)
    assert response.status_code == 200 and "Linked" in response.content.decode()
    listed.refresh_from_db()
    one.refresh_from_db()
    assert (listed.pms_id, listed.account_id, listed.digital, listed.email) == (
        "P7", "A1", True, "kit@example.org")
    assert listed.mobile_phone == "+447912000007"  # the account had none: filled from the list
    assert listed.link_reason == "linked_by_staff_review"
    assert (one.status, one.account_id) == ("merged", None)
    item.refresh_from_db()
    assert (item.status, item.resolution, item.resolved_by, item.resolution_note) == (
        "resolved", "linked", ADMIN, "confirmed at the desk")
    resolved = AuditEvent.objects.get(action="review_item.resolved", patient=listed)
    assert resolved.actor == ADMIN and resolved.detail["merged_patient"] == one.id
    assert AuditEvent.objects.filter(action="patient.merged", patient=one).exists()
    changed = AuditEvent.objects.get(action="patient.updated", patient=listed, actor=ADMIN)
    assert {"field": "account_id", "old": None, "new": "A1",
            "rule": "account_linked_by_staff_review"} in changed.detail["changes"]

    queue = admin.get(url("review_queue", practice)).content.decode()
    done = re.search(r'<table class="review-items done".*?</table>', queue, re.S).group(0)
    assert "Linked" in done and ADMIN in done and "confirmed at the desk" in done
    # The same list again changes nothing and raises nothing.
    again = sync(practice, path)
    assert (again.summary["updated"], again.summary["needs_review"]) == (0, 0)


def test_reception_may_not_link_records(practice, reception, twins):
    """Joining two records decides whose results a person gets: admins and clinicians only."""
    item, listed, one, two, path = twins
    page = reception.get(url("review_item", practice, item_id=item.id)).content.decode()
    assert "Link records" not in page and "Keep as separate patients" in page
    response = reception.post(url("review_resolve", practice, item_id=item.id, how="linked"),
                              {"pair": f"{listed.id}:{one.id}"})
    assert response.status_code == 403
    item.refresh_from_db()
    listed.refresh_from_db()
    assert item.status == "open" and listed.account_id is None


def test_keeping_them_separate_records_not_the_same_person(practice, reception, twins):
    item, listed, one, two, _ = twins
    response = reception.post(url("review_resolve", practice, item_id=item.id, how="not_same"),
                              {"note": "different middle names"})
    assert response.status_code == 302
    assert set(NotSamePerson.objects.filter(practice=practice, pms_id="P7")
               .values_list("patient_id", flat=True)) == {one.id, two.id}
    item.refresh_from_db()
    assert (item.status, item.resolution, item.resolved_by) == ("resolved", "not_same",
                                                                RECEPTION)
    assert AuditEvent.objects.filter(action="review_item.resolved", actor=RECEPTION,
                                     detail__resolution="not_same").exists()
    assert Patient.objects.get(id=one.id).status == "active"  # nothing linked


def test_ignoring_needs_a_reason(practice, reception, twins):
    item = twins[0]
    ignore = url("review_resolve", practice, item_id=item.id, how="ignored")
    response = reception.post(ignore, {"reason": "   "})
    assert response.status_code == 400
    assert 'id="ignore-error"' in response.content.decode()
    item.refresh_from_db()
    assert item.status == "open"
    reception.post(ignore, {"reason": "duplicate of a paper record, handled by phone"})
    item.refresh_from_db()
    assert (item.status, item.resolution, item.resolution_note) == (
        "dismissed", "ignored", "duplicate of a paper record, handled by phone")
    assert AuditEvent.objects.get(action="review_item.resolved").why == "ignored"
    page = reception.get(url("review_item", practice, item_id=item.id)).content.decode()
    resolution = re.search(r'<dl class="details resolution">.*?</dl>', page, re.S).group(0)
    assert "<dd>Ignored</dd>" in resolution and f"<dd>{RECEPTION}</dd>" in resolution
    assert "Reason (required)" not in page
    # A settled item cannot be settled again.
    assert reception.post(url("review_resolve", practice, item_id=item.id, how="not_same")
                          ).status_code == 400


def test_linking_across_different_dates_of_birth_needs_the_check(practice, admin, tmp_path):
    account = make_account(practice, account_id="A9", given_name="Lou", family_name="Park",
                           date_of_birth=dt.date(1970, 1, 1), nhs_number=NHS[1])
    sync(practice, write_list(tmp_path / "l.csv", [list_row(
        pms_id="P9", given_name="Lou", family_name="Park", date_of_birth="1971-01-01",
        nhs_number=NHS[1])]))
    item = ReviewItem.objects.get(practice=practice, kind="dob_conflict")
    listed = Patient.objects.get(practice=practice, pms_id="P9")
    page = admin.get(url("review_item", practice, item_id=item.id)).content.decode()
    assert "I have checked with the patient" in page
    link = url("review_resolve", practice, item_id=item.id, how="linked")
    pair = {"pair": f"{listed.id}:{account.id}"}

    refused = admin.post(link, pair)
    assert refused.status_code == 400
    assert "dates of birth differ" in refused.content.decode().lower()
    account.refresh_from_db()
    assert account.status == "active" and not AuditEvent.objects.filter(
        action="review_item.resolved").exists()

    admin.post(link, {**pair, "dob_checked": "yes"})
    item.refresh_from_db()
    listed.refresh_from_db()
    assert (item.status, item.dob_checked) == ("resolved", True)
    assert (listed.account_id, listed.date_of_birth) == ("A9", dt.date(1970, 1, 1))
    assert AuditEvent.objects.get(action="review_item.resolved").detail["dob_checked"] is True


def test_only_resolutions_an_item_allows_are_offered(practice, admin, tmp_path):
    make_account(practice, given_name="Al", family_name="Hay", nhs_number=NHS[2])
    sync(practice, write_list(tmp_path / "l.csv", [list_row(
        pms_id="P4", given_name="Di", family_name="Fox", date_of_birth="1990-09-09",
        nhs_number=NHS[2])]))
    item = ReviewItem.objects.get(practice=practice, kind="duplicate_identifier")
    page = admin.get(url("review_item", practice, item_id=item.id)).content.decode()
    assert "Ignore" in page
    assert "Link records" not in page and "Keep as separate patients" not in page
    assert admin.post(url("review_resolve", practice, item_id=item.id, how="linked"),
                      {"pair": "1:2"}).status_code == 400
    item.refresh_from_db()
    assert item.status == "open"
