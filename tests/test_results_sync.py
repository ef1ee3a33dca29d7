"""`results sync`: stored, judged, grouped per patient per day, sequences driven, audited."""

import json

import pytest

from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.outreach.models import Sequence
from practicesync.patients.models import Patient, ReviewItem
from practicesync.results.models import Result, ResultGroup, ResultsTemplate
from tests.cli import run, run_json
from tests.factories import make_patient, make_practice, write_list


def result(result_id, pms_id="P1", action="Non-Urgent Appointment", performed="2026-11-20",
           **fields):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(result_id=result_id, pms_id=pms_id, test_name="FBC", performed_on=performed,
               reported_on="2026-11-21", actioned_on="2026-11-22", action=action,
               filed_under="Investigation Report")
    row.update(fields)
    return row


@pytest.fixture
def bp(au_practice):
    make_patient(au_practice, pms_id="P1", mobile_phone="+61412345678")
    make_patient(au_practice, pms_id="P2", given_name="Bo")
    return au_practice


def sync(practice, tmp_path, *rows, name="results.csv"):
    return run_json("results", "sync", "--practice", practice.slug, "--source",
                    write_list(tmp_path / name, rows, RESULT_COLUMNS))


def group_of(result_id):
    return Result.objects.get(result_id=result_id).group


def test_each_practice_starts_with_its_paused_results_templates(db):
    bp = make_practice(pms="bestpractice")
    md = make_practice(pms="medicaldirector")
    gb = make_practice(pms="docman10")
    assert list(bp.results_templates.values_list("action_key", "auto_start")) == [
        ("non_urgent_appointment", False)]
    assert list(md.results_templates.values_list("action_key", "auto_start")) == [
        ("discuss", False)]
    assert not gb.results_templates.exists()


def test_an_automatic_group_waits_paused_on_its_template(bp, tmp_path):
    code, data = sync(bp, tmp_path, result("R1"), result("R2", test_name="UEC"))
    assert code == 0 and data["created"] == 2 and data["groups_created"] == 1
    group = group_of("R1")
    assert group == group_of("R2") and group.disposition == "template"
    assert group.template.name == "Non-urgent results"
    assert group.sequence.state == "to_action_paused" and data["sequences_paused"] == 1


def test_auto_start_templates_start_at_once(bp, tmp_path):
    ResultsTemplate.objects.filter(practice=bp).update(auto_start=True)
    sync(bp, tmp_path, result("R1"))
    assert group_of("R1").sequence.state == "active"


def test_a_checklist_group_never_has_a_sequence(bp, tmp_path):
    code, data = sync(bp, tmp_path, result("R1"), result("R2", action="Return Urgent"),
                      result("R3", pms_id="P2", action="Nurse to Advise"))
    assert data["checklist"] == 2
    for group in ResultGroup.objects.all():
        assert group.disposition == "checklist"
        assert not Sequence.objects.filter(group=group).exists()
    assert group_of("R1").action == "Return Urgent"  # the PMS wording staff know


def test_a_late_result_raises_the_group_and_cancels_its_sequence(bp, tmp_path):
    sync(bp, tmp_path, result("R1"))
    sequence = group_of("R1").sequence
    code, data = sync(bp, tmp_path, result("R1"), result("R2", action="Nurse to Advise"),
                      name="later.csv")
    assert data["unchanged"] == 1 and data["created"] == 1
    assert group_of("R2") == group_of("R1") and group_of("R1").disposition == "checklist"
    sequence.refresh_from_db()
    assert sequence.state == "cancelled" and "checklist" in sequence.state_reason
    assert AuditEvent.objects.filter(action="sequence.cancelled").exists()


def test_a_changed_action_re_decides_but_never_restarts_a_cancelled_sequence(bp, tmp_path):
    sync(bp, tmp_path, result("R1"))
    sync(bp, tmp_path, result("R1", action="Urgent appointment"), name="b.csv")
    group = group_of("R1")
    assert group.disposition == "checklist" and group.sequence.state == "cancelled"
    sync(bp, tmp_path, result("R1"), name="c.csv")
    group.refresh_from_db()
    # Back to an automatic action, but the cancelled sequence needs a person: checklist.
    assert group.disposition == "checklist" and group.sequence.state == "cancelled"
    assert group.action == "Non-Urgent Appointment"
    assert Result.objects.count() == 1


def test_re_importing_the_same_results_changes_nothing(bp, tmp_path):
    rows = [result("R1"), result("R2", action="No action"), result("R3", pms_id="P2")]
    sync(bp, tmp_path, *rows)
    events = AuditEvent.objects.count()
    code, data = sync(bp, tmp_path, *rows, name="again.csv")
    assert data["unchanged"] == 3 and data["created"] == data["updated"] == 0
    assert Result.objects.count() == 3 and ResultGroup.objects.count() == 2
    assert AuditEvent.objects.count() == events


def test_notified_in_the_pms_completes_the_group_and_stops_its_sequence(bp, tmp_path):
    sync(bp, tmp_path, result("R1"), result("R2"))
    sync(bp, tmp_path, result("R1", notified="notified"), result("R2"), name="b.csv")
    assert group_of("R1").state == "open"  # one of two results is still to be given
    code, data = sync(bp, tmp_path, result("R1", notified="notified"),
                      result("R2", notified="Given"), name="c.csv")
    group = group_of("R1")
    assert group.state == "done" and group.sequence.state == "completed"
    assert data["sequences_completed"] == 1


def test_results_on_different_days_are_different_groups(bp, tmp_path):
    # 23:30 and 00:30 Sydney time on either side of midnight.
    sync(bp, tmp_path, result("R1", performed="2026-11-20T12:30:00+00:00"),
         result("R2", performed="2026-11-20T13:30:00+00:00"),
         result("R3", performed="2026-11-21T09:00:00"))
    assert group_of("R1") != group_of("R2") == group_of("R3")
    assert group_of("R2").performed_on.isoformat() == "2026-11-21"


def test_unactioned_and_wrongly_filed_results_are_stored_but_start_nothing(bp, tmp_path):
    sync(bp, tmp_path, result("R1", action=""), result("R2", filed_under="Clinical Photo"))
    r1, r2 = Result.objects.order_by("result_id")
    assert not r1.eligible and r1.reason == "not actioned by a doctor yet" and r1.group is None
    assert not r2.eligible and "Clinical Photo" in r2.reason
    assert not ResultGroup.objects.exists() and not Sequence.objects.exists()
    sync(bp, tmp_path, result("R1"), result("R2", filed_under="Clinical Photo"), name="b.csv")
    assert group_of("R1").disposition == "template"


def test_a_result_for_an_unknown_patient_is_kept_and_reviewed(bp, tmp_path):
    code, data = sync(bp, tmp_path, result("R9", pms_id="P404"))
    stored = Result.objects.get()
    assert stored.patient is None and not stored.eligible and "P404" in stored.reason
    assert ReviewItem.objects.get().kind == "unmatched_result" and data["needs_review"] == 1
    assert not ResultGroup.objects.exists()


def test_no_sequence_for_a_deceased_patient(bp, tmp_path):
    Patient.objects.filter(pms_id="P1").update(status="deceased")
    sync(bp, tmp_path, result("R1"))
    assert group_of("R1").disposition == "template"
    assert not Sequence.objects.exists()


def test_bad_rows_are_reported_and_the_rest_applied(bp, tmp_path):
    code, data = sync(bp, tmp_path, result("R1", performed="20/11/2026"),
                      result("R2", notified="maybe"), result("R3"))
    assert code == 1
    assert [(e["row"], e["field"]) for e in data["errors"]] == [(2, "performed_on"),
                                                                (3, "notified")]
    assert list(Result.objects.values_list("result_id", flat=True)) == ["R3"]


def test_medical_director_discuss_with_and_without_comment(db, tmp_path):
    md = make_practice(pms="medicaldirector", slug="md")
    make_patient(md, pms_id="P1")
    make_patient(md, pms_id="P2", given_name="Bo")
    where = {"filed_under": "", "tab": "Results", "location": "Result"}
    sync(md, tmp_path, result("M1", action="Discuss", **where),
         result("M2", pms_id="P2", action="Discuss", comment="see me about the dose", **where),
         result("M3", action="Discuss", tab="Documents", location="Result"))
    assert group_of("M1").disposition == "template" and group_of("M1").template.name == \
        "Discuss results"
    assert group_of("M2").disposition == "checklist"
    assert not Result.objects.get(result_id="M3").eligible


def test_results_sync_needs_permission(db, tmp_path):
    practice = make_practice(pms="bestpractice", permitted=False)
    code, _ = run("results", "sync", "--practice", practice.slug, "--source",
                  write_list(tmp_path / "r.csv", [result("R1")], RESULT_COLUMNS))
    assert code == 2 and not Result.objects.exists()


def test_export_reports_every_decision_with_its_reason(bp, tmp_path):
    sync(bp, tmp_path, result("R1"), result("R2", action=""), result("R3", pms_id="P2",
                                                                      action="Return Urgent"))
    data = json.loads(run("export", "--practice", bp.slug)[1])
    by_id = {r["result_id"]: r for r in data["results"]}
    assert by_id["R1"]["eligible"] and by_id["R1"]["reason"] is None
    assert by_id["R1"]["group_id"] == group_of("R1").id
    assert by_id["R2"] | {"eligible": False, "reason": "not actioned by a doctor yet",
                          "group_id": None} == by_id["R2"]
    groups = {g["pms_id"]: g for g in data["result_groups"]}
    assert groups["P1"] | {"disposition": "template", "template": "Non-urgent results",
                           "state": "open", "sequence_state": "to_action_paused",
                           "performed_on": "2026-11-20"} == groups["P1"]
    assert groups["P2"]["disposition"] == "checklist" and groups["P2"]["sequence_state"] is None


def test_staff_tick_a_checklist_group_done_with_who_and_when(bp, tmp_path):
    sync(bp, tmp_path, result("R1", action="Nurse to Advise"), result("R2", pms_id="P2"))
    checklist, template = group_of("R1"), group_of("R2")
    code, data = run_json("results", "checklist-done", "--practice", bp.slug, "--group",
                          str(checklist.id))
    checklist.refresh_from_db()
    assert code == 0 and checklist.checklist_done_by.startswith("cli:")
    assert checklist.checklist_done_at is not None
    assert AuditEvent.objects.filter(action="group.checklist_done").count() == 1
    assert run("results", "checklist-done", "--practice", bp.slug, "--group",
               str(template.id))[0] == 2
    other = make_practice(pms="bestpractice", slug="other")
    assert run("results", "checklist-done", "--practice", other.slug, "--group",
               str(checklist.id))[0] == 2


def test_a_result_moved_to_another_day_leaves_nothing_behind(bp, tmp_path):
    sync(bp, tmp_path, result("R1"))
    first = group_of("R1")
    sync(bp, tmp_path, result("R1", performed="2026-11-19"), name="b.csv")
    first.refresh_from_db()
    assert group_of("R1") != first and group_of("R1").performed_on.isoformat() == "2026-11-19"
    # (the emptied group asks nothing of anyone, so it is not put on the checklist)
    assert first.disposition == "ignored" and first.sequence.state == "cancelled"
    assert group_of("R1").sequence.state == "to_action_paused"


def test_an_unreadable_results_file_is_refused_whole(bp, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("result_id,pms_id,performed_on,action\nR1,P1,2026-11-20,\"Return Urgent\n"
                    "R2,P1,2026-11-20,Return Urgent\n")
    code, out = run("results", "sync", "--practice", bp.slug, "--source", str(path))
    assert code == 1 and "unterminated quote" in out
    assert not Result.objects.exists()


def test_a_result_that_stops_counting_leaves_its_group(bp, tmp_path):
    sync(bp, tmp_path, result("R1"), result("R2", action="Nurse to Advise"))
    group = group_of("R1")
    assert group.disposition == "checklist"
    sync(bp, tmp_path, result("R1"), result("R2", filed_under="Clinical Image"), name="b.csv")
    group.refresh_from_db()
    assert Result.objects.get(result_id="R2").group is None
    assert list(group.results.values_list("result_id", flat=True)) == ["R1"]
    assert group.disposition == "template" and group.action == "Non-Urgent Appointment"


def test_a_ticked_checklist_item_comes_back_when_a_result_joins_it(bp, tmp_path):
    sync(bp, tmp_path, result("R1", action="Nurse to Advise"))
    run("results", "checklist-done", "--practice", bp.slug, "--group", str(group_of("R1").id))
    assert group_of("R1").checklist_done_at is not None
    sync(bp, tmp_path, result("R1", action="Nurse to Advise"),
         result("R2", action="Return Urgent"), name="b.csv")
    group = group_of("R1")
    assert group.action == "Return Urgent"
    assert group.checklist_done_at is None and group.checklist_done_by == ""


def test_an_admin_turns_auto_start_on_and_new_groups_start_at_once(bp, tmp_path):
    sync(bp, tmp_path, result("R1"))
    code, data = run_json("results", "template", "--practice", bp.slug, "--action-key",
                          "non_urgent_appointment", "--auto-start", "on")
    assert code == 0 and data["auto_start"] is True
    assert AuditEvent.objects.filter(action="template.auto_start").count() == 1
    sync(bp, tmp_path, result("R1"), result("R2", pms_id="P2"), name="b.csv")
    assert group_of("R1").sequence.state == "to_action_paused"  # waiting ones still need Start
    assert group_of("R2").sequence.state == "active"
    assert run("results", "template", "--practice", bp.slug, "--action-key", "discuss",
               "--auto-start", "on")[0] == 2


@pytest.mark.parametrize("status, date_of_death", [("deceased", "2026-11-22"), ("left", "")])
def test_a_patient_who_dies_or_leaves_has_their_sequences_stopped_at_once(bp, tmp_path, status,
                                                                          date_of_death):
    from practicesync.patients.sync import sync_patient_list
    from tests.factories import list_row

    sync(bp, tmp_path, result("R1"))
    rows = [list_row(pms_id="P1", given_name="Ann", registration_status=status,
                     date_of_death=date_of_death),
            list_row(pms_id="P2", given_name="Bo")]
    report = sync_patient_list(practice=bp, actor="test", source=str(
        write_list(tmp_path / "list.csv", rows)))
    sequence = group_of("R1").sequence
    assert sequence.state == "cancelled" and "Patient Sync" in sequence.state_reason
    event = AuditEvent.objects.get(action="sequence.cancelled")
    assert event.sync_run_id == report.run_id
