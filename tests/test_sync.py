"""The Patient Sync action against the database: runs, audit, reviews, dry runs, re-runs."""

import datetime as dt

import pytest

from practicesync.audit.models import AuditEvent
from practicesync.patients.models import Patient, ReviewItem, SyncRun
from practicesync.patients.sync import sync_patient_list
from practicesync.practices.access import SyncNotPermitted
from tests.factories import (
    NHS,
    another_sync_of,
    list_row,
    make_account,
    make_practice,
    write_list,
)


def sync(practice, path, **kwargs):
    return sync_patient_list(practice=practice, source=str(path), actor="test", **kwargs)


def snapshot(practice):
    return (list(Patient.objects.filter(practice=practice).order_by("id").values()),
            AuditEvent.objects.count(), SyncRun.objects.count(), ReviewItem.objects.count())


@pytest.fixture
def mixed(practice, tmp_path):
    """Digital accounts and a list that exercises every rule once."""
    make_account(practice, account_id="A1", given_name="Zoë", family_name="O'Brien",
                 date_of_birth=dt.date(1980, 2, 1), email="zoe@example.org")
    make_account(practice, account_id="A2", given_name="Sam", family_name="Hall",
                 date_of_birth=dt.date(1975, 5, 5), mobile_phone="+447900000002")
    make_account(practice, account_id="A3", given_name="Kim", family_name="Ward",
                 date_of_birth=dt.date(1990, 3, 3), nhs_number=NHS[3])
    rows = [
        list_row(pms_id="P1", given_name="Zoe", family_name="O’BRIEN", date_of_birth="1980-02-01",
                 nhs_number=NHS[0], mobile_phone="07912 000001", email="pms@example.org"),
        list_row(pms_id="P2", given_name="Sam", family_name="Hall", date_of_birth="1975-05-05",
                 mobile_phone="07912 000002"),
        list_row(pms_id="P3", given_name="Kim", family_name="Ward", date_of_birth="1990-03-03",
                 nhs_number=NHS[4]),
        list_row(pms_id="P4", given_name="Ola", family_name="Nowak", date_of_birth="1960-06-06",
                 nhs_number="9990000017", mobile_phone="07912 000004"),
        list_row(pms_id="P5", given_name="Bea", family_name="King", date_of_birth="1930-01-01",
                 registration_status="deceased", date_of_death="2026-10-01"),
    ]
    return write_list(tmp_path / "list.csv", rows)


def test_a_full_run_applies_every_rule(practice, mixed):
    report = sync(practice, mixed)
    assert report.summary == {"created": 3, "updated": 2, "unchanged": 0,
                              "non_digital_created": 3, "nhs_numbers_added": 1,
                              "phones_filled": 1, "needs_review": 1, "left_practice": 0,
                              "deceased": 1}
    zoe = Patient.objects.get(account_id="A1")
    assert (zoe.pms_id, zoe.nhs_number, zoe.mobile_phone, zoe.email, zoe.given_name) == (
        "P1", NHS[0], "+447912000001", "zoe@example.org", "Zoë")
    assert zoe.link_reason == "linked_by_name_dob"
    sam = Patient.objects.get(account_id="A2")
    assert sam.mobile_phone == "+447900000002"  # the patient's own number is kept
    kim = Patient.objects.get(account_id="A3")
    assert kim.pms_id is None and kim.nhs_number == NHS[3]
    kim_list = Patient.objects.get(pms_id="P3")
    assert not kim_list.digital and kim_list.nhs_number == NHS[4]
    review = ReviewItem.objects.get()
    assert review.kind == "identifier_conflict" and set(review.pms_ids) == {"P3"}
    assert review.account_ids == ["A3"]
    assert set(review.patients.all()) == {kim, kim_list}
    ola = Patient.objects.get(pms_id="P4")
    assert ola.nhs_number is None and ola.mobile_phone == "+447912000004"
    assert Patient.objects.get(pms_id="P5").status == "deceased"
    assert report.errors == [{"row": 5, "pms_id": "P4", "field": "nhs_number",
                              "message": "NHS number '9990000017' fails the modulus 11 check"}]
    run = SyncRun.objects.get()
    assert run.status == "completed_with_errors" and run.counts == report.summary
    assert run.errors == report.errors and run.duration_seconds >= 0


def test_every_change_is_audited_with_old_new_and_rule(practice, mixed):
    sync(practice, mixed)
    zoe = Patient.objects.get(account_id="A1")
    event = AuditEvent.objects.get(patient=zoe, action="patient.updated")
    assert event.actor == "test" and event.sync_run == SyncRun.objects.get()
    assert {"field": "nhs_number", "old": None, "new": NHS[0],
            "rule": "identifier_added_on_name_dob_match"} in event.detail["changes"]
    assert {"field": "mobile_phone", "old": None, "new": "+447912000001",
            "rule": "digital_phone_if_none"} in event.detail["changes"]
    created = AuditEvent.objects.filter(action="patient.created")
    assert {e.patient.pms_id for e in created} == {"P3", "P4", "P5"}


def test_the_same_list_twice_changes_nothing(practice, mixed):
    sync(practice, mixed)
    patients, events, _, reviews = snapshot(practice)
    again = sync(practice, mixed)
    assert again.summary["unchanged"] == 5
    assert again.summary["created"] == again.summary["updated"] == 0
    after = snapshot(practice)
    assert after[0] == patients and after[1] == events and after[3] == reviews


def test_dry_run_writes_nothing_and_reports_the_same(practice, mixed):
    before = snapshot(practice)
    dry = sync(practice, mixed, dry_run=True)
    assert snapshot(practice) == before
    assert dry.run_id is None
    real = sync(practice, mixed)
    assert dry.summary == real.summary and dry.errors == real.errors


def test_without_permission_nothing_is_read_or_written(db, tmp_path):
    practice = make_practice(permitted=False)
    path = write_list(tmp_path / "list.csv", [list_row()])
    for dry_run in (False, True):
        with pytest.raises(SyncNotPermitted, match="DPIA"):
            sync(practice, path, dry_run=dry_run)
    assert not Patient.objects.exists() and not SyncRun.objects.exists()


@pytest.mark.parametrize("content", [None, b"\xff\xfe\x00bad", b"name,dob\nx,y\n"])
def test_an_unreadable_list_is_a_failed_run_that_changes_nothing(practice, tmp_path, content):
    path = tmp_path / "list.csv"
    if content is not None:
        path.write_bytes(content)
    make_account(practice)
    before = snapshot(practice)[0]
    report = sync(practice, path)
    assert report.status == "failed" and report.exit_code == 1 and report.failure
    assert snapshot(practice)[0] == before
    assert SyncRun.objects.get().status == "failed"


def test_a_truncated_list_is_refused_whole(practice, tmp_path):
    rows = [list_row(pms_id=f"P{i}", given_name=f"N{i}") for i in range(40)]
    sync(practice, write_list(tmp_path / "full.csv", rows))
    changed = [dict(r, mobile_phone="07912 111111") for r in rows[:30]]
    before = snapshot(practice)[0]
    report = sync(practice, write_list(tmp_path / "short.csv", changed))
    assert report.status == "refused_truncated" and report.exit_code == 1
    assert snapshot(practice)[0] == before
    item = ReviewItem.objects.get(kind="truncated_list")
    assert "10 of 40" in item.detail and item.sync_run_id == report.run_id

    allowed = sync(practice, write_list(tmp_path / "short.csv", changed),
                   allow_drop_reason="ten patients moved to the new branch practice")
    assert allowed.status == "completed" and allowed.summary["left_practice"] == 10
    assert Patient.objects.filter(status="left").count() == 10
    assert SyncRun.objects.get(id=allowed.run_id).allow_drop_reason.startswith("ten")
    assert Patient.objects.filter(status="left").first().list_fingerprint == ""


def test_a_patient_back_on_the_list_is_active_again(practice, tmp_path):
    rows = [list_row(pms_id=f"P{i}", given_name=f"N{i}") for i in range(10)]
    sync(practice, write_list(tmp_path / "a.csv", rows))
    sync(practice, write_list(tmp_path / "b.csv", rows[1:]), allow_drop_reason="moved")
    assert Patient.objects.get(pms_id="P0").status == "left"
    report = sync(practice, write_list(tmp_path / "c.csv", rows))
    assert Patient.objects.get(pms_id="P0").status == "active"
    assert report.summary["updated"] == 1


def test_a_review_item_is_raised_once_across_runs(practice, tmp_path):
    make_account(practice, given_name="Ann", family_name="Lee")
    make_account(practice, given_name="Ann", family_name="Lee")
    path = write_list(tmp_path / "list.csv", [list_row(pms_id="P1")])
    sync(practice, path)
    Patient.objects.filter(pms_id="P1").update(list_fingerprint="")  # force a full re-merge
    sync(practice, path)
    assert ReviewItem.objects.filter(kind="ambiguous_match").count() == 1


def test_rows_with_unusable_identity_are_reported_and_skipped(practice, tmp_path):
    rows = [list_row(pms_id="P1"), list_row(pms_id="", given_name="NoId"),
            list_row(pms_id="P3", date_of_birth="02/01/1980"),
            list_row(pms_id="P1", given_name="Dup")]
    report = sync(practice, write_list(tmp_path / "list.csv", rows))
    assert {(e["row"], e["field"]) for e in report.errors} == {
        (3, "pms_id"), (4, "date_of_birth"), (5, "pms_id")}
    assert list(Patient.objects.values_list("pms_id", flat=True)) == ["P1"]
    assert report.summary["created"] == 1


def test_practices_never_see_each_others_patients(practice, tmp_path):
    other = make_practice(slug="elsewhere")
    theirs = make_account(other, given_name="Ann", family_name="Lee", pms_id=None)
    sync(practice, write_list(tmp_path / "list.csv", [list_row(pms_id="P1")]))
    theirs.refresh_from_db()
    assert theirs.pms_id is None
    assert Patient.objects.get(pms_id="P1").practice == practice


def test_docman10_list_export_is_read_through_its_profile(practice, tmp_path):
    from practicesync.simulator.patients import generate_practice_list, write_docman_export

    rows = generate_practice_list(50, seed=7)
    report = sync(practice, write_docman_export(tmp_path / "docman.csv", rows))
    assert report.summary["created"] == 50 and report.errors == []
    first = Patient.objects.get(pms_id=rows[0]["pms_id"])
    assert first.date_of_birth.isoformat() == rows[0]["date_of_birth"]
    assert first.nhs_number == rows[0]["nhs_number"]
    deceased = [r["pms_id"] for r in rows if r["registration_status"] == "deceased"]
    assert set(Patient.objects.filter(status="deceased").values_list("pms_id", flat=True)) == \
        set(deceased)


def test_an_nhs_number_on_two_rows_is_kept_by_neither(practice, tmp_path):
    rows = [list_row(pms_id="P1", nhs_number=NHS[0]),
            list_row(pms_id="P2", given_name="Bo", nhs_number=NHS[0])]
    report = sync(practice, write_list(tmp_path / "list.csv", rows))
    assert [(e["row"], e["field"]) for e in report.errors] == [(2, "nhs_number"),
                                                              (3, "nhs_number")]
    assert "rows 2, 3" in report.errors[0]["message"]
    assert not Patient.objects.exclude(nhs_number=None).exists()


def test_a_new_row_never_takes_an_nhs_number_another_patient_holds(practice, tmp_path):
    holder = make_account(practice, nhs_number=NHS[0], date_of_birth=dt.date(1990, 1, 1))
    report = sync(practice, write_list(tmp_path / "list.csv",
                                       [list_row(pms_id="P1", nhs_number=NHS[0])]))
    created = Patient.objects.get(pms_id="P1")
    assert created.nhs_number is None
    kinds = set(ReviewItem.objects.values_list("kind", flat=True))
    assert kinds == {"dob_conflict", "duplicate_identifier"}
    assert holder in ReviewItem.objects.get(kind="duplicate_identifier").patients.all()
    assert report.summary["needs_review"] == 2


def test_not_the_same_person_stops_the_proposal_and_closes_its_review(practice, tmp_path):
    from tests.cli import run

    account = make_account(practice, given_name="Anne", family_name="Lee")
    path = write_list(tmp_path / "list.csv", [list_row(pms_id="P1", given_name="Ann")])
    sync(practice, path)
    item = ReviewItem.objects.get(kind="possible_match")
    assert set(item.patients.all()) == {account, Patient.objects.get(pms_id="P1")}
    code, _ = run("patients", "not-same", "--practice", practice.slug, "--pms-id", "P1",
                  "--patient-id", str(account.id))
    assert code == 0
    item.refresh_from_db()
    assert item.status == "dismissed"
    assert AuditEvent.objects.filter(action="patient.not_same_person", patient=account).exists()
    Patient.objects.filter(pms_id="P1").update(list_fingerprint="")
    assert sync(practice, path).summary["needs_review"] == 0
    other = make_practice(slug="other")
    theirs = make_account(other)
    assert run("patients", "not-same", "--practice", practice.slug, "--pms-id", "P1",
               "--patient-id", str(theirs.id))[0] == 2


def test_a_date_of_death_we_cannot_read_still_stops_messages(practice, tmp_path):
    report = sync(practice, write_list(tmp_path / "l.csv", [
        list_row(pms_id="P1", date_of_death="01/10/2026")]))
    assert Patient.objects.get(pms_id="P1").status == "deceased"
    assert [e["field"] for e in report.errors] == ["date_of_death"]


def test_a_new_row_with_a_status_we_cannot_read_is_not_created(practice, tmp_path):
    make_account(practice, pms_id="P2", given_name="Bo", status="left")
    report = sync(practice, write_list(tmp_path / "l.csv", [
        list_row(pms_id="P1", registration_status="dead"),
        list_row(pms_id="P2", given_name="Bo", registration_status="gone")]))
    assert not Patient.objects.filter(pms_id="P1").exists()
    assert Patient.objects.get(pms_id="P2").status == "left"  # unchanged, not revived
    assert [e["field"] for e in report.errors] == ["registration_status"] * 2


@pytest.mark.parametrize("content", [
    'pms_id,given_name,family_name,date_of_birth\nP1,Ann,"Lee,1980-01-02\nP2,Bo,Hall,1980-01-02\n',
])
def test_an_unterminated_quote_refuses_the_list_instead_of_losing_rows(practice, tmp_path,
                                                                       content):
    rows = [list_row(pms_id=f"P{i}", given_name=f"N{i}") for i in range(1, 4)]
    sync(practice, write_list(tmp_path / "good.csv", rows))
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    report = sync(practice, bad)
    assert report.status == "failed" and "unterminated quote" in report.failure
    assert not Patient.objects.filter(status="left").exists()


def test_a_refused_run_counts_nothing(practice, tmp_path):
    rows = [list_row(pms_id=f"P{i}", given_name=f"N{i}") for i in range(10)]
    sync(practice, write_list(tmp_path / "a.csv", rows))
    report = sync(practice, write_list(tmp_path / "b.csv", rows[:5]))
    assert report.status == "refused_truncated" and set(report.summary.values()) == {0}
    assert SyncRun.objects.get(id=report.run_id).counts["updated"] == 0


def test_a_sync_waits_for_another_sync_of_the_practice_then_says_so(practice, tmp_path,
                                                                      monkeypatch):
    """Two syncs of one practice never overlap: one that finds another holding the
    practice's sync lock waits SYNC_WAIT, then records why it did not start and changes
    nothing. Another practice's sync does not hold it up. Once it holds the lock, a run
    still marked running was left so by a holder that died, and is closed."""
    from practicesync.patients import sync as sync_module
    from practicesync.runtime import locks
    from practicesync.runtime.processes import this_process

    monkeypatch.setattr(sync_module, "SYNC_WAIT", dt.timedelta(seconds=0.3))
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.05)
    source = write_list(tmp_path / "list.csv", [list_row(pms_id="P1")])
    # Alive by its owner (this process), but no sync holds the lock for it.
    left = SyncRun.objects.create(practice=practice, source="nightly.csv",
                                  triggered_by="system:nightly", owner=this_process(),
                                  started_at=dt.datetime(2026, 12, 6, tzinfo=dt.UTC))

    with another_sync_of(practice):
        report = sync(practice, source)
    assert report.status == "failed" and report.exit_code == 1
    assert report.failure.startswith("another sync of this practice was still running after")
    assert SyncRun.objects.get(id=report.run_id).status == "failed"
    assert not Patient.objects.filter(practice=practice).exists()
    assert SyncRun.objects.get(id=left.id).status == "running"  # not ours to close

    with another_sync_of(make_practice()):
        assert sync(practice, source).status == "completed"
    assert Patient.objects.filter(practice=practice).count() == 1
    left.refresh_from_db()
    assert left.status == "failed" and "let go of the practice's sync lock" in left.failure


def test_a_run_whose_process_is_gone_is_closed_as_interrupted(practice):
    import subprocess
    import sys

    from django.utils import timezone

    from practicesync.patients.sync import FOREIGN_RUN_LIMIT, close_interrupted_runs
    from practicesync.runtime.processes import this_process

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = timezone.now()
    host = this_process().rsplit(":", 2)[0]  # this machine: host name, boot, pid namespace

    def running(owner, started_at=now):
        return SyncRun.objects.create(practice=practice, source="list.csv", triggered_by="t",
                                      owner=owner, started_at=started_at).id

    killed = running(f"{host}:{gone.pid}:1")
    reused_pid = running(f"{host}:{this_process().rsplit(':', 2)[1]}:1")  # same pid, other start
    alive = running(this_process())
    elsewhere = running("other-host:42:7")
    elsewhere_long = running("other-host:43:7", now - FOREIGN_RUN_LIMIT - dt.timedelta(minutes=1))
    other_practice = SyncRun.objects.create(
        practice=make_practice(), source="x", triggered_by="t",
        owner=f"{host}:{gone.pid}:1", started_at=now).id

    assert close_interrupted_runs(practice=practice, now=now) == 3
    status = dict(SyncRun.objects.values_list("id", "status"))
    assert {k: status[k] for k in (killed, reused_pid, alive, elsewhere, elsewhere_long,
                                   other_practice)} == {
        killed: "failed", reused_pid: "failed", alive: "running", elsewhere: "running",
        elsewhere_long: "failed", other_practice: "running"}
    assert "its process is gone" in SyncRun.objects.get(id=killed).failure
    assert "no word from other-host:43:7" in SyncRun.objects.get(id=elsewhere_long).failure
    assert close_interrupted_runs(now=now) == 1  # every practice: the worker's pass
