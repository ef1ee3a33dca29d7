"""The nightly sync: scheduled at the practice's local time, queued once, run by the worker.

Worker tests use a real transaction: the worker closes connections between tasks as it
would in production, which a test wrapped in one transaction cannot survive on PostgreSQL.
"""

import datetime as dt

import pytest
from django_tasks_db.models import DBTaskResult

from practicesync.patients.models import Patient, SyncRun
from practicesync.patients.tasks import enqueue_due_syncs
from practicesync.practices import actions
from practicesync.practices.models import Practice
from tests.cli import run, run_json
from tests.factories import list_row, make_practice, write_list

UTC = dt.UTC


@pytest.mark.parametrize("timezone, now, expected", [
    # 02:00 Sydney is 15:00 UTC the day before (AEDT, UTC+11, in November).
    ("Australia/Sydney", dt.datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
     dt.datetime(2026, 11, 23, 15, 0, tzinfo=UTC)),
    ("Australia/Sydney", dt.datetime(2026, 11, 23, 15, 0, tzinfo=UTC),
     dt.datetime(2026, 11, 24, 15, 0, tzinfo=UTC)),
    ("Europe/London", dt.datetime(2026, 11, 23, 1, 59, tzinfo=UTC),
     dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)),
    # Summer time in London: 02:00 BST is 01:00 UTC.
    ("Europe/London", dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC),
     dt.datetime(2026, 7, 2, 1, 0, tzinfo=UTC)),
])
def test_next_nightly_run_is_at_the_practice_local_time(timezone, now, expected):
    practice = Practice(timezone=timezone, nightly_sync_at=dt.time(2, 0))
    assert actions.next_nightly_run(practice, now) == expected


def test_a_due_practice_is_queued_once_and_rescheduled(practice, tmp_path):
    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1")])
    now = dt.datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    actions.schedule_nightly_sync(actor="t", practice=practice, source=str(path), now=now)
    practice.refresh_from_db()
    assert practice.next_sync_due == dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    assert enqueue_due_syncs(now) == []
    later = dt.datetime(2026, 11, 23, 2, 5, tzinfo=UTC)
    assert enqueue_due_syncs(later) == [practice.id]
    assert enqueue_due_syncs(later) == []  # the slot is claimed; a second worker queues nothing
    practice.refresh_from_db()
    assert practice.next_sync_due == dt.datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert DBTaskResult.objects.count() == 1


def test_the_worker_runs_the_queued_nightly_sync(transactional_db, practice, tmp_path):
    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1"), list_row(pms_id="P2")])
    actions.schedule_nightly_sync(actor="t", practice=practice, source=str(path),
                                  now=dt.datetime(2020, 1, 1, tzinfo=UTC))
    assert run("worker", "--once")[0] == 0
    run_ = SyncRun.objects.get()
    assert (run_.status, run_.triggered_by, run_.counts["created"]) == (
        "completed", "system:nightly", 2)
    assert Patient.objects.count() == 2
    # The nightly sync and the outreach tick the worker queued on the same pass both ran.
    assert dict(DBTaskResult.objects.values_list("task_path", "status")) == {
        "practicesync.patients.tasks.nightly_patient_sync": "SUCCESSFUL",
        "practicesync.outreach.tasks.outreach_tick": "SUCCESSFUL"}


def test_a_missing_source_is_a_failed_run_that_changes_nothing(transactional_db, practice, tmp_path):
    actions.schedule_nightly_sync(actor="t", practice=practice, source=str(tmp_path / "gone.csv"),
                                  now=dt.datetime(2020, 1, 1, tzinfo=UTC))
    run("worker", "--once")
    assert SyncRun.objects.get().status == "failed"
    assert not Patient.objects.exists()


def test_a_practice_without_permission_gets_a_failed_run_at_night(transactional_db, tmp_path):
    practice = make_practice(permitted=False)
    path = write_list(tmp_path / "l.csv", [list_row()])
    actions.schedule_nightly_sync(actor="t", practice=practice, source=str(path),
                                  now=dt.datetime(2020, 1, 1, tzinfo=UTC))
    run("worker", "--once")
    assert "DPIA" in SyncRun.objects.get().failure and not Patient.objects.exists()


def test_sync_now_runs_the_configured_source(practice, tmp_path):
    code, _ = run("sync", "now", "--practice", practice.slug)
    assert code == 1 and SyncRun.objects.get().failure.startswith("no practice list source")
    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1")])
    run("practice", "schedule", "--practice", practice.slug, "--source", str(path),
        "--at", "03:30")
    code, data = run_json("sync", "now", "--practice", practice.slug)
    assert code == 0 and data["created"] == 1
    practice.refresh_from_db()
    assert practice.nightly_sync_at == dt.time(3, 30)


def test_the_configured_sync_reads_the_scheduled_format(au_practice, tmp_path):
    from tests.test_fhir import bundle, patient, write

    path = write(tmp_path, "list.json", bundle(patient("p1", identifiers=[
        {"system": "urn:pms", "value": "P1"}], family="Nguyen")))
    run("practice", "schedule", "--practice", au_practice.slug, "--source", str(path),
        "--format", "fhir", "--at", "03:30")
    code, data = run_json("sync", "now", "--practice", au_practice.slug)
    assert code == 0 and data["created"] == 1
    assert Patient.objects.get(practice=au_practice).family_name == "Nguyen"


def test_a_crash_while_queueing_keeps_the_night_due(practice, tmp_path, monkeypatch):
    from practicesync.patients import tasks

    path = write_list(tmp_path / "l.csv", [list_row()])
    actions.schedule_nightly_sync(actor="t", practice=practice, source=str(path),
                                  now=dt.datetime(2026, 11, 23, 1, 0, tzinfo=UTC))

    class Crashing:
        def enqueue(self, *args):
            raise RuntimeError("worker killed")

    monkeypatch.setattr(tasks, "nightly_patient_sync", Crashing())
    with pytest.raises(RuntimeError):
        enqueue_due_syncs(dt.datetime(2026, 11, 23, 2, 5, tzinfo=UTC))
    practice.refresh_from_db()
    assert practice.next_sync_due == dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize("failures, wait", [
    (0, None), (1, dt.timedelta(minutes=15)), (2, dt.timedelta(hours=1)),
    (3, dt.timedelta(hours=4)), (4, None), (9, None)])
def test_a_failed_night_is_retried_three_times(failures, wait):
    from practicesync.patients.tasks import retry_after

    assert retry_after(failures) == wait


def test_a_failed_nightly_run_is_tried_again_the_same_night(transactional_db, practice, tmp_path):
    from django.utils import timezone

    from practicesync.patients.tasks import NIGHTLY, retry_failed_night

    path = tmp_path / "late.csv"  # the PMS export is not there yet
    actions.schedule_nightly_sync(actor="t", practice=practice, source=str(path),
                                  now=dt.datetime(2020, 1, 1, tzinfo=UTC))
    before = timezone.now()
    run("worker", "--once")
    practice.refresh_from_db()
    assert SyncRun.objects.get().status == "failed"
    # Fifteen minutes on, not tomorrow night.
    assert (before + dt.timedelta(minutes=15) <= practice.next_sync_due
            <= timezone.now() + dt.timedelta(minutes=15))

    # Due again: the worker takes the retry, and this time the export is there.
    write_list(path, [list_row(pms_id="P1")])
    Practice.objects.filter(id=practice.id).update(next_sync_due=before)
    run("worker", "--once")
    assert list(SyncRun.objects.order_by("id").values_list("status", flat=True)) == [
        "failed", "completed"]
    assert Patient.objects.filter(practice=practice).count() == 1
    practice.refresh_from_db()
    assert practice.next_sync_due > timezone.now() + dt.timedelta(hours=1)  # tomorrow's slot

    # Four failures in a night: no fifth try until the next night.
    now = timezone.now()
    for minutes in (4, 3, 2, 1):
        SyncRun.objects.create(practice=practice, source="x", triggered_by=NIGHTLY,
                               status="failed", started_at=now - dt.timedelta(minutes=minutes))
    assert retry_failed_night(practice, now=now) is None
    # Last night's failures do not use up tonight's first retry.
    tomorrow = now + dt.timedelta(hours=24)
    Practice.objects.filter(id=practice.id).update(next_sync_due=tomorrow + dt.timedelta(hours=23))
    SyncRun.objects.create(practice=practice, source="x", triggered_by=NIGHTLY, status="failed",
                           started_at=tomorrow - dt.timedelta(minutes=1))
    assert retry_failed_night(practice, now=tomorrow) == tomorrow + dt.timedelta(minutes=15)
    # A retry is never put after the next night's own slot.
    Practice.objects.filter(id=practice.id).update(next_sync_due=tomorrow + dt.timedelta(minutes=5))
    assert retry_failed_night(practice, now=tomorrow) is None
