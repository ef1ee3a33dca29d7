"""`results poll`: actioned results read from a Best Practice or Medical Director database
(the simulators, real SQLite files), incrementally from a cursor that moves only with the
import it belongs to."""

import datetime as dt
import sqlite3

import pytest

from practicesync.connectors.pmsdb import open_database
from practicesync.outreach.models import Sequence
from practicesync.patients.models import ReviewItem
from practicesync.results import polling
from practicesync.results.models import PmsCursor, Result, ResultGroup
from practicesync.simulator import bestpractice as bp
from practicesync.simulator import medicaldirector as md
from tests.cli import run, run_json
from tests.factories import make_patient, make_practice

START = dt.datetime(2026, 11, 20, 8, 0)
DAY = dt.datetime(2026, 11, 19, 9, 30)  # when the blood was taken


@pytest.fixture
def bp_sim(tmp_path):
    with bp.BestPracticeSimulator(tmp_path / "bp.sqlite", clock=bp.SteppingClock(START)) as sim:
        yield sim


@pytest.fixture
def md_sim(tmp_path):
    with md.MedicalDirectorSimulator(tmp_path / "md.sqlite",
                                     clock=bp.SteppingClock(START)) as sim:
        yield sim


@pytest.fixture
def harbour(db):
    return make_practice(pms="bestpractice", slug="harbour")


@pytest.fixture
def banksia(db):
    return make_practice(pms="medicaldirector", slug="banksia")


def bp_patient(sim, practice, name="Ann") -> int:
    """A patient in the PMS and on the practice's list, linked by INTERNALID."""
    internal_id = sim.add_patient(firstname=name, surname="Lee", dob=dt.date(1980, 1, 2))
    make_patient(practice, pms_id=str(internal_id), given_name=name)
    return internal_id


def md_patient(sim, practice, name="Ann") -> int:
    patient_id = sim.add_patient(first_name=name, surname="Lee", dob=dt.date(1980, 1, 2))
    make_patient(practice, pms_id=str(patient_id), given_name=name)
    return patient_id


def poll(practice, sim):
    return run_json("results", "poll", "--practice", practice.slug, "--source", str(sim.path))


def stored(item) -> Result:
    prefix = {bp.INVESTIGATIONS: "INV", bp.CORRESPONDENCEIN: "COR", md.ACTIONED_ITEMS: "ITEM"}
    return Result.objects.get(result_id=f"{prefix[item.table]}-{item.id}")


def test_first_poll_imports_every_kind_of_best_practice_result(harbour, bp_sim):
    by_code = {code: bp_sim.add_investigation(bp_patient(bp_sim, harbour, f"P{code}"), "FBC",
                                              collected=DAY, action=code)
               for code in bp.ACTION_CODES}
    other = bp_patient(bp_sim, harbour, "Bo")
    letter = bp_sim.add_correspondence(other, "Cardiology review", dated=DAY,
                                       action=bp.NON_URGENT_APPOINTMENT)
    photo = bp_sim.add_correspondence(other, "Skin lesion", dated=DAY - dt.timedelta(days=3),
                                      category="Clinical photo", action=bp.NURSE_TO_ADVISE,
                                      clinical_image=True)
    stranger = bp_sim.add_investigation(9999, "LFT", collected=DAY, action=bp.URGENT_APPOINTMENT)

    code, data = poll(harbour, bp_sim)

    assert code == 0 and data["created"] == 11 and data["unmatched"] == 1
    unactioned = stored(by_code[0])
    assert not unactioned.eligible and unactioned.reason == "not actioned by a doctor yet"
    assert unactioned.group is None
    dispositions = {c: (stored(i).group.disposition, stored(i).group.action)
                    for c, i in by_code.items() if c}
    assert dispositions == {
        1: ("ignored", "No action"), 2: ("checklist", "Reception to advise"),
        3: ("checklist", "Nurse to advise"), 4: ("checklist", "Doctor to advise"),
        5: ("checklist", "Send routine reminder"), 6: ("template", "Non-urgent appointment"),
        7: ("checklist", "Return Urgent")}  # code 7, as staff call it
    automatic = stored(by_code[6]).group
    assert automatic.template.name == "Non-urgent results"
    assert automatic.sequence.state == "to_action_paused"
    assert stored(by_code[7]).action_kind == "urgent"
    for checklist in (stored(by_code[c]).group for c in (2, 3, 4, 5, 7)):
        assert not Sequence.objects.filter(group=checklist).exists()

    assert stored(letter).filed_under == "Correspondence In"
    assert stored(letter).group.disposition == "template"
    assert stored(letter).test_name == "Cardiology review"
    image = stored(photo)
    assert not image.eligible and "Clinical Image" in image.reason and image.group is None
    assert stored(stranger).patient is None
    assert ReviewItem.objects.get().kind == "unmatched_result"

    six = stored(by_code[6])
    raw = bp_sim.row(by_code[6])
    assert six.pms_id == str(raw["INTERNALID"]) and six.filed_under == "Investigation Report"
    # BP keeps practice-local times.
    assert six.performed_at.astimezone(harbour.tz).replace(tzinfo=None) == DAY
    assert six.performed_on == DAY.date()
    assert six.actioned_on.isoformat() == raw["CHECKDATE"][:10]
    assert six.notified == ""
    assert set(data["cursor"]) == {"INVESTIGATIONS", "CORRESPONDENCEIN"}
    assert data["cursor"]["INVESTIGATIONS"] == f"{bp_sim.row(stranger)['UPDATED']}|{stranger.id}"


def test_first_poll_imports_every_kind_of_medical_director_item(banksia, md_sim):
    def item(name, test="FBC", **kwargs):
        return md_sim.add_result(md_patient(md_sim, banksia, name), test, collected=DAY,
                                 **kwargs)

    discuss = item("A", action=md.DISCUSS)
    discuss_note = item("B", action=md.DISCUSS, comment="see me about the dose")
    urgent = item("C", action=md.RETURN_URGENTLY)
    nothing = item("D", action=md.NO_ACTION)
    custom = item("E", action="Recall 3 months")
    holding = item("F")  # still in the Holding File
    letter = item("G", test="Letter", action=md.DISCUSS)
    document = item("H", action=md.DISCUSS, tab=md.DOCUMENTS)
    odd_location = item("I", action=md.DISCUSS)
    md_sim.move_location(odd_location, md.RESULTS, location="Letter")

    code, data = poll(banksia, md_sim)

    assert code == 0 and data["created"] == 9
    group = stored(discuss).group
    assert (group.disposition, group.template.name) == ("template", "Discuss results")
    assert group.sequence.state == "to_action_paused"
    assert stored(discuss_note).group.disposition == "checklist"
    assert stored(urgent).group.disposition == "checklist"
    assert stored(urgent).action_kind == "urgent"
    assert stored(nothing).group.disposition == "ignored"
    assert (stored(custom).group.disposition, stored(custom).group.action) == (
        "checklist", "Recall 3 months")
    assert stored(holding).reason == "not actioned by a doctor yet"
    assert stored(letter).tab == "Letters" and "Letters" in stored(letter).reason
    assert "Documents" in stored(document).reason
    assert "Location 'Letter'" in stored(odd_location).reason
    assert not any(stored(i).eligible for i in (holding, letter, document, odd_location))
    assert data["cursor"] == {"ACTIONED_ITEMS": f"{md_sim.row(odd_location)['UPDATED']}|"
                                                f"{odd_location.id}"}


def test_a_second_poll_without_changes_reads_nothing(harbour, bp_sim, tmp_path):
    patient = bp_patient(bp_sim, harbour)
    bp_sim.add_investigation(patient, "FBC", collected=DAY, action=bp.NON_URGENT_APPOINTMENT)
    bp_sim.add_correspondence(patient, "Letter", dated=DAY, action=bp.NO_ACTION)
    _, first = poll(harbour, bp_sim)
    assert first["created"] == 2

    # The same file named another way is the same source, with the same cursor.
    same_file = tmp_path / "sub" / ".." / "bp.sqlite"
    (tmp_path / "sub").mkdir()
    code, again = run_json("results", "poll", "--practice", harbour.slug, "--source",
                           str(same_file))

    assert code == 0
    assert again["created"] == again["updated"] == again["unchanged"] == 0
    assert again["cursor"] == first["cursor"]
    assert PmsCursor.objects.get(practice=harbour).source == str(bp_sim.path.resolve())


def test_a_result_actioned_after_the_last_poll_is_picked_up(harbour, bp_sim):
    waiting = bp_sim.add_investigation(bp_patient(bp_sim, harbour), "HbA1c", collected=DAY)
    _, first = poll(harbour, bp_sim)
    assert first["created"] == 1 and stored(waiting).group is None

    bp_sim.action(waiting, bp.NON_URGENT_APPOINTMENT, notation=bp.ABNORMAL,
                  comment="Please book to discuss.")
    code, data = poll(harbour, bp_sim)

    assert code == 0 and data["updated"] == 1 and data["created"] == 0
    result = stored(waiting)
    assert result.eligible and result.comment == "Please book to discuss."
    assert result.group.disposition == "template" and data["sequences_paused"] == 1
    assert data["cursor"]["INVESTIGATIONS"] != first["cursor"]["INVESTIGATIONS"]


def test_marking_results_notified_completes_the_group(harbour, bp_sim):
    patient = bp_patient(bp_sim, harbour)
    fbc = bp_sim.add_investigation(patient, "FBC", collected=DAY,
                                   action=bp.NON_URGENT_APPOINTMENT)
    lipids = bp_sim.add_investigation(patient, "Lipids", collected=DAY,
                                      action=bp.NON_URGENT_APPOINTMENT)
    poll(harbour, bp_sim)
    group = stored(fbc).group
    assert group == stored(lipids).group and group.sequence.state == "to_action_paused"

    bp_sim.mark_notified(fbc)
    poll(harbour, bp_sim)
    group.refresh_from_db()
    assert stored(fbc).notified == "notified" and group.state == "open"

    bp_sim.mark_notified(lipids)
    code, data = poll(harbour, bp_sim)
    group.refresh_from_db()
    assert code == 0 and data["updated"] == 1 and data["unchanged"] == 0
    assert group.state == "done" and group.sequence.state == "completed"


def test_medical_director_given_and_discussed_complete_the_group(banksia, md_sim):
    patient = md_patient(md_sim, banksia)
    first = md_sim.add_result(patient, "FBC", collected=DAY, action=md.DISCUSS)
    second = md_sim.add_result(patient, "TSH", collected=DAY)
    poll(banksia, md_sim)
    md_sim.check(second, md.DISCUSS)
    md_sim.mark_notified(first, md.DISCUSSED)
    _, data = poll(banksia, md_sim)
    assert data["updated"] == 2
    group = stored(first).group
    assert stored(second).group == group and group.state == "open"

    md_sim.mark_notified(second, md.GIVEN_)
    poll(banksia, md_sim)
    group.refresh_from_db()
    assert stored(second).notified == "given" and stored(first).notified == "discussed"
    assert group.state == "done" and group.sequence.state == "completed"


def five_results(sim, practice):
    patient = bp_patient(sim, practice)
    return [sim.add_investigation(patient, f"Test {n}", collected=DAY,
                                  action=bp.NON_URGENT_APPOINTMENT) for n in range(5)]


def crash_on_import_call(monkeypatch, call: int):
    """Make the `call`-th import read all its rows, then fail as a crash would."""
    real = polling.import_result_rows
    calls = []

    def import_then_crash(**kwargs):
        calls.append(1)
        if len(calls) == call:
            list(kwargs["raw_rows"])
            raise RuntimeError("worker killed")
        return real(**kwargs)

    monkeypatch.setattr(polling, "import_result_rows", import_then_crash)


def test_a_crash_leaves_the_cursor_where_it_was_and_a_re_poll_gets_everything_once(
        harbour, bp_sim, monkeypatch):
    five_results(bp_sim, harbour)
    crash_on_import_call(monkeypatch, 1)
    with pytest.raises(RuntimeError):
        polling.poll_pms_results(practice=harbour, source=str(bp_sim.path), actor="test")
    assert not Result.objects.exists()
    assert PmsCursor.objects.filter(practice=harbour).first() is None

    monkeypatch.undo()
    code, data = poll(harbour, bp_sim)
    assert code == 0 and data["created"] == 5 and data["unchanged"] == 0
    assert Result.objects.count() == 5 and ResultGroup.objects.count() == 1


def test_a_crash_in_a_later_batch_keeps_the_batches_before_it(harbour, bp_sim, monkeypatch):
    items = five_results(bp_sim, harbour)
    crash_on_import_call(monkeypatch, 2)
    with pytest.raises(RuntimeError):
        polling.poll_pms_results(practice=harbour, source=str(bp_sim.path), actor="test",
                                 batch_size=2)
    assert sorted(Result.objects.values_list("result_id", flat=True)) == ["INV-1", "INV-2"]
    second = bp_sim.row(items[1])
    assert PmsCursor.objects.get().position == {
        "INVESTIGATIONS": f"{second['UPDATED']}|{second['REPORTID']}"}

    monkeypatch.undo()
    report = polling.poll_pms_results(practice=harbour, source=str(bp_sim.path), actor="test",
                                      batch_size=2)
    assert report.report.counts["created"] == 3 and report.report.counts["unchanged"] == 0
    assert Result.objects.count() == 5


def test_the_cursor_moves_in_the_same_transaction_as_the_import(harbour, bp_sim, monkeypatch):
    five_results(bp_sim, harbour)
    real_save = PmsCursor.save

    def fail_moving(self, *args, **kwargs):
        if self.position:
            raise RuntimeError("database went away")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(PmsCursor, "save", fail_moving)
    with pytest.raises(RuntimeError):
        polling.poll_pms_results(practice=harbour, source=str(bp_sim.path), actor="test")
    assert not Result.objects.exists()


def test_rows_sharing_one_updated_time_are_all_read_across_batches(harbour, tmp_path):
    same_time = dt.datetime(2026, 11, 20, 9, 0)
    with bp.BestPracticeSimulator(tmp_path / "bp.sqlite", clock=lambda: same_time) as sim:
        five_results(sim, harbour)
        updated = {sim.row(bp.Item(bp.INVESTIGATIONS, n))["UPDATED"] for n in range(1, 6)}
        assert len(updated) == 1
        report = polling.poll_pms_results(practice=harbour, source=str(sim.path), actor="test",
                                          batch_size=2)
    assert report.report.counts["created"] == 5 and Result.objects.count() == 5
    assert report.cursor == {"INVESTIGATIONS": f"{updated.pop()}|5"}


def test_polling_needs_permission_and_a_pms_with_a_connector(db, bp_sim):
    unpermitted = make_practice(pms="bestpractice", permitted=False)
    bp_sim.add_investigation(bp_sim.add_patient(firstname="Ann", surname="Lee",
                                                dob=dt.date(1980, 1, 2)),
                             "FBC", collected=DAY, action=bp.NON_URGENT_APPOINTMENT)
    code, out = run("results", "poll", "--practice", unpermitted.slug, "--source",
                    str(bp_sim.path))
    assert code == 2 and "permission" in out
    gb = make_practice(pms="docman10")
    code, out = run("results", "poll", "--practice", gb.slug, "--source", str(bp_sim.path))
    assert code == 2 and "no PMS database connector" in out
    assert not Result.objects.exists() and not PmsCursor.objects.exists()


def test_an_unreadable_source_fails_with_nothing_applied(harbour, tmp_path, md_sim):
    not_a_database = tmp_path / "list.csv"
    not_a_database.write_text("pms_id,given_name\n1,Ann\n" * 200)
    md_sim.add_result(md_sim.add_patient(first_name="Ann", surname="Lee",
                                         dob=dt.date(1980, 1, 2)), "FBC", collected=DAY)
    for source in (tmp_path / "missing.sqlite", not_a_database, md_sim.path):
        code, out = run("results", "poll", "--practice", harbour.slug, "--source", str(source))
        assert code == 1, (source, out)
    assert not (tmp_path / "missing.sqlite").exists()  # opening never creates a database
    assert "no such table: INVESTIGATIONS" in out
    assert not Result.objects.exists() and not PmsCursor.objects.exists()


def test_padded_char_values_are_stripped(harbour, banksia, bp_sim, md_sim):
    result = bp_sim.add_investigation(bp_patient(bp_sim, harbour), "Full blood count",
                                      collected=DAY, action=bp.NON_URGENT_APPOINTMENT)
    raw = bp_sim.row(result)
    assert len(raw["TESTNAME"]) == 80 and raw["TESTNAME"].startswith("Full blood count ")
    item = md_sim.add_result(md_patient(md_sim, banksia), "Lipids", collected=DAY,
                             action=md.DISCUSS)
    md_sim.mark_notified(item, md.GIVEN_)
    raw = md_sim.row(item)
    assert raw["ACTION"] == "Discuss".ljust(40) and raw["NOTIFIED"] == "Given".ljust(12)

    assert poll(harbour, bp_sim)[0] == 0
    code, data = poll(banksia, md_sim)

    assert code == 0 and data["errors"] == []
    assert stored(result).test_name == "Full blood count"
    md_result = stored(item)
    assert (md_result.test_name, md_result.action, md_result.tab, md_result.location,
            md_result.notified) == ("Lipids", "Discuss", "Results", "Result", "given")
    assert md_result.group.state == "done"


def test_a_deleted_result_stops_counting(harbour, bp_sim):
    wrong_patient = bp_sim.add_investigation(bp_patient(bp_sim, harbour), "FBC", collected=DAY,
                                             action=bp.NON_URGENT_APPOINTMENT)
    poll(harbour, bp_sim)
    sequence = stored(wrong_patient).group.sequence
    assert sequence.state == "to_action_paused"

    bp_sim.delete(wrong_patient)
    code, data = poll(harbour, bp_sim)

    result = stored(wrong_patient)
    assert code == 0 and data["updated"] == 1
    assert not result.eligible and "Deleted in Best Practice" in result.reason
    sequence.refresh_from_db()
    assert sequence.state == "cancelled" and sequence.group.disposition == "ignored"


def test_a_bad_row_is_reported_by_its_result_id_and_the_rest_applied(harbour, bp_sim):
    patient = bp_patient(bp_sim, harbour)
    good = bp_sim.add_investigation(patient, "FBC", collected=DAY, action=bp.NO_ACTION)
    undated = bp_sim.add_investigation(patient, "ECG", collected=None, action=bp.NO_ACTION)

    code, data = poll(harbour, bp_sim)

    assert code == 1 and data["created"] == 1 and stored(good).eligible
    assert [(e["result_id"], e["field"]) for e in data["errors"]] == [
        (f"INV-{undated.id}", "performed_on")]
    # The cursor moves past it all the same: a row that cannot be read must not hold up
    # every result after it. It is read again once the PMS changes it.
    assert data["cursor"]["INVESTIGATIONS"].endswith(f"|{undated.id}")
    code, out = run("results", "poll", "--practice", harbour.slug, "--source", str(bp_sim.path))
    assert code == 0 and "no results" in out and "cursor: INVESTIGATIONS" in out


def test_the_connector_opens_the_pms_database_read_only(bp_sim):
    bp_sim.add_patient(firstname="Ann", surname="Lee", dob=dt.date(1980, 1, 2))
    connection = open_database(str(bp_sim.path))
    try:
        assert connection.execute("SELECT count(*) FROM PATIENTS").fetchone() == (1,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection.execute("DELETE FROM PATIENTS")
    finally:
        connection.close()


def dump(path):
    with sqlite3.connect(path) as connection:
        return {table: connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("PATIENTS", "INVESTIGATIONS", "CORRESPONDENCEIN")}


def test_the_generated_practice_is_the_same_for_a_seed_and_has_every_action(harbour, tmp_path):
    bp.generate(tmp_path / "b.sqlite", seed=7).close()
    bp.generate(tmp_path / "c.sqlite", seed=8).close()
    with bp.generate(tmp_path / "a.sqlite", seed=7) as sim:
        for row in sim.patient_list_rows():
            make_patient(harbour, pms_id=row["pms_id"], given_name=row["given_name"],
                         family_name=row["family_name"])
        code, data = poll(harbour, sim)
    assert dump(tmp_path / "a.sqlite") == dump(tmp_path / "b.sqlite")
    assert dump(tmp_path / "a.sqlite") != dump(tmp_path / "c.sqlite")
    with sqlite3.connect(tmp_path / "a.sqlite") as connection:
        codes = {c for (c,) in connection.execute("SELECT ACTION FROM INVESTIGATIONS")}
    assert codes == set(bp.ACTION_CODES)

    assert code == 0 and data["errors"] == [] and data["unmatched"] == 0
    assert {"template", "checklist", "ignored"} <= set(
        ResultGroup.objects.values_list("disposition", flat=True))
    assert ResultGroup.objects.filter(state="done").exists()
    assert Result.objects.filter(result_id__startswith="COR-", eligible=True).exists()
    reasons = set(Result.objects.filter(eligible=False).values_list("reason", flat=True))
    assert "not actioned by a doctor yet" in reasons
    assert any("Deleted in Best Practice" in r for r in reasons)


def test_the_generated_medical_director_practice_polls_into_every_disposition(banksia, tmp_path):
    with md.generate(tmp_path / "md.sqlite", seed=3, patients=30) as sim:
        for row in sim.patient_list_rows():
            make_patient(banksia, pms_id=row["pms_id"], given_name=row["given_name"],
                         family_name=row["family_name"])
        code, data = poll(banksia, sim)
    assert code == 0 and data["errors"] == [] and data["unmatched"] == 0
    assert {"template", "checklist", "ignored"} <= set(
        ResultGroup.objects.values_list("disposition", flat=True))
    reasons = set(Result.objects.filter(eligible=False).values_list("reason", flat=True))
    assert "not actioned by a doctor yet" in reasons
    assert any("Letters" in r for r in reasons) and any("Deleted" in r for r in reasons)
    assert ResultGroup.objects.filter(state="done").exists()
