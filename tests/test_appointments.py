"""`appointments sync` / `appointments poll`: CSV, HL7 SIU and FHIR Appointment mapped to one
canonical row, stored per appointment id, audited, and Pause on Booking run for the patients
whose appointments changed (booked pauses, cancelled/DNA resumes, attended completes). Also a
SIU over a real MLLP socket, and the BP/MD simulator databases polled from a cursor."""

import csv
import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from practicesync.appointments.importer import sync_appointments
from practicesync.appointments.models import Appointment
from practicesync.appointments.polling import cursor_key
from practicesync.appointments.rows import check_appointment_row
from practicesync.audit.models import AuditEvent
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.connectors.fhir.feeds import read_appointment_feed as fhir_feed
from practicesync.connectors.hl7v2.feeds import read_appointment_feed as hl7_feed
from practicesync.outreach.models import Sequence
from practicesync.results.actions import set_template_auto_start
from practicesync.results.models import PmsCursor, ResultsTemplate
from practicesync.simulator import bestpractice as bp
from practicesync.simulator import medicaldirector as md
from tests.cli import run, run_json
from tests.factories import make_patient, make_practice, write_list

SYDNEY = ZoneInfo("Australia/Sydney")
COLUMNS = ("appointment_id", "pms_id", "starts_at", "status")


def soon(days: float = 3) -> dt.datetime:
    """A whole minute `days` from now, UTC: bookings must be in the future to count."""
    return (timezone.now() + dt.timedelta(days=days)).replace(second=0, microsecond=0)


def appt(appointment_id="A1", pms_id="P1", starts_at=None, status="booked") -> dict:
    return {"appointment_id": appointment_id, "pms_id": pms_id,
            "starts_at": starts_at or soon().isoformat(), "status": status}


# --- the row check (pure) --------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    (appt(starts_at="2026-12-01T10:00:00+11:00"),
     ("booked", dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC))),
    # no offset: practice-local (Sydney is +11:00 in summer)
    (appt(starts_at="2026-12-01T10:00", status="Cancelled"),
     ("cancelled", dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC))),
    (appt(starts_at="2026-12-01 10:00:00Z", status="DNA"),
     ("dna", dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC))),
    (appt(starts_at="2026-07-01T09:30", status="attended"),   # winter: +10:00
     ("attended", dt.datetime(2026, 6, 30, 23, 30, tzinfo=dt.UTC))),
])
def test_a_good_row_is_read_with_its_time_in_the_practice_zone(raw, expected):
    row, errors = check_appointment_row(7, raw, SYDNEY)
    assert errors == [] and (row.status, row.starts_at) == expected and row.line == 7


@pytest.mark.parametrize("raw, fields", [
    (appt(status="arrived"), ["status"]),
    (appt(starts_at="2026-12-01"), ["starts_at"]),          # a day is not a time
    (appt(starts_at="next tuesday"), ["starts_at"]),
    (appt(appointment_id=""), ["appointment_id"]),
    (appt(pms_id=""), ["pms_id"]),
    (appt(appointment_id="x" * 101, status=""), ["appointment_id", "status"]),
])
def test_a_bad_row_is_refused_naming_each_field(raw, fields):
    row, errors = check_appointment_row(3, raw, SYDNEY)
    assert row is None
    assert sorted(e.field for e in errors) == sorted(fields)
    assert all(e.row == 3 for e in errors)


# --- HL7 SIU mapping -------------------------------------------------------------------------

def msh(kind: str, control: str) -> str:
    return rf"MSH|^~\&|BPPREMIER|HARBOUR|PRACTICESYNC|SURGERY|20261123120000||{kind}|{control}|P|2.4"


def sch(placer="", filler="", start="", status="") -> str:
    fields = [""] * 26
    fields[1], fields[2], fields[25] = placer, filler, status
    fields[11] = f"^^^{start}" if start else ""
    return "SCH|" + "|".join(fields[1:])


def siu(trigger="S12", control="M1", *, filler="APPT-1", placer="", start="202612011000",
        status="", pms_id="P1", ais_start="", pid=True) -> str:
    segments = [msh(f"SIU^{trigger}", control), sch(placer, filler, start, status)]
    if pid:
        segments.append(f"PID|1||{pms_id}^^^^PI||Lee^Ann||19800102|F")
    if ais_start:
        segments.append(f"AIS|1||CONSULT^Standard consult|{ais_start}")
    return "\r".join(segments) + "\r"


def read_hl7(tmp_path, *messages):
    path = tmp_path / "siu.hl7"
    path.write_text("\n".join(messages))
    return hl7_feed(path, pms="bestpractice")


@pytest.mark.parametrize("message, row", [
    (siu("S12"), ("APPT-1", "P1", "2026-12-01T10:00:00", "booked")),
    (siu("S14"), ("APPT-1", "P1", "2026-12-01T10:00:00", "booked")),
    (siu("S14", status="Cancelled"), ("APPT-1", "P1", "2026-12-01T10:00:00", "cancelled")),
    (siu("S14", status="Noshow"), ("APPT-1", "P1", "2026-12-01T10:00:00", "dna")),
    (siu("S14", status="Complete"), ("APPT-1", "P1", "2026-12-01T10:00:00", "attended")),
    (siu("S13", status="booked"), ("APPT-1", "P1", "2026-12-01T10:00:00", "booked")),
    (siu("S15", status="Booked"), ("APPT-1", "P1", "2026-12-01T10:00:00", "cancelled")),
    (siu("S26"), ("APPT-1", "P1", "2026-12-01T10:00:00", "dna")),
    (siu(filler="", placer="PL-9"), ("PL-9", "P1", "2026-12-01T10:00:00", "booked")),
    (siu(start="", ais_start="202612010930+1100"),
     ("APPT-1", "P1", "2026-12-01T09:30:00+11:00", "booked")),
])
def test_siu_messages_map_to_one_appointment_row(tmp_path, message, row):
    feed = read_hl7(tmp_path, message)
    assert feed.errors == []
    assert [tuple(r.values()) for _, r in feed.rows] == [row]


@pytest.mark.parametrize("message, field, code_words", [
    (siu(start=""), "SCH-11", "no start time"),
    (siu(start="20261201"), "SCH-11", "no time of day"),
    (siu(start="", ais_start="2026xx"), "AIS-4", "not an HL7 date/time"),
    (siu("S14", status="Waitlist"), "SCH-25", "not one of"),
    (siu(filler=""), "SCH-2", "SCH-1 are empty"),
    (siu(pid=False), "PID", "no PID segment"),
    (siu(pms_id=""), "PID-3", "no PMS patient id"),
    (siu("S17"), "MSH-9", "not handled here"),
])
def test_a_bad_siu_is_reported_by_message_and_field(tmp_path, message, field, code_words):
    feed = read_hl7(tmp_path, siu(control="OK", filler="GOOD"), message)
    assert [r["appointment_id"] for _, r in feed.rows] == ["GOOD"]
    [error] = feed.errors
    assert error["row"] == 2 and error["field"] == field
    assert error["message"].startswith("siu.hl7:message 2: ") and code_words in error["message"]


# --- FHIR Appointment mapping ----------------------------------------------------------------

def fhir_appointment(id_="a1", status="booked", actor="Patient/pat-1", start="2026-12-01T10:00:00+11:00",
                     identifier=None):
    resource = {"resourceType": "Appointment", "id": id_, "status": status,
                "participant": [{"actor": {"reference": "Practitioner/dr-1"}, "status": "accepted"},
                                {"actor": {"reference": actor}, "status": "accepted"}]}
    if start:
        resource |= {"start": start, "end": start.replace("10:00", "10:15")}
    if identifier:
        resource["identifier"] = [identifier]
    return resource


def bundle(*resources) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{r['resourceType']}-{r['id']}", "resource": r}
                      for r in resources]}


def fhir_patient(id_="pat-1", pms_id="P1") -> dict:
    return {"resourceType": "Patient", "id": id_,
            "identifier": [{"type": {"coding": [{"code": "PI"}]}, "value": pms_id}],
            "name": [{"family": "Lee", "given": ["Ann"]}], "birthDate": "1980-01-02"}


@pytest.mark.parametrize("status, expected", [
    ("booked", "booked"), ("pending", "booked"), ("proposed", "booked"),
    ("cancelled", "cancelled"), ("noshow", "dna"), ("fulfilled", "attended"),
    ("arrived", "attended"), ("checked-in", "attended"),
])
def test_fhir_appointment_statuses(tmp_path, status, expected):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(fhir_appointment(status=status)))
    feed = fhir_feed(path, country="AU")
    assert feed.errors == []
    # No Patient in the source: a Patient/<id> reference gives the id, as for results.
    assert [r for _, r in feed.rows] == [{"appointment_id": "Appointment/a1", "pms_id": "pat-1",
                                          "starts_at": "2026-12-01T10:00:00+11:00",
                                          "status": expected}]


def test_fhir_bundle_patients_give_the_pms_id_and_bad_resources_are_named(tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle(
        fhir_patient(),
        fhir_appointment("a1", actor="urn:uuid:Patient-pat-1",
                         identifier={"system": "https://pms.example/appt", "value": "991"}),
        fhir_appointment("a2", status="waitlist"),
        fhir_appointment("a3", start=""),
        fhir_appointment("a4", actor="urn:uuid:Patient-nobody"))))
    feed = fhir_feed(path, country="AU")
    assert [r for _, r in feed.rows] == [{"appointment_id": "pms.example/appt|991", "pms_id": "P1",
                                          "starts_at": "2026-12-01T10:00:00+11:00",
                                          "status": "booked"}]
    assert [(e["field"], e["message"].split(": ", 1)[0]) for e in feed.errors] == [
        ("Appointment.status", "bundle.json:entry[2] Appointment/a2"),
        ("Appointment.start", "bundle.json:entry[3] Appointment/a3"),
        ("Appointment.participant.actor", "bundle.json:entry[4] Appointment/a4")]


# --- importing -------------------------------------------------------------------------------

@pytest.fixture
def harbour(db):
    practice = make_practice(pms="bestpractice", slug="harbour")
    make_patient(practice, pms_id="P1", mobile_phone="+61412345678")
    make_patient(practice, pms_id="P2", given_name="Bo", mobile_phone="+61412345679")
    return practice


def sync_csv(practice, tmp_path, *rows, name="appointments.csv"):
    return run_json("appointments", "sync", "--practice", practice.slug, "--source",
                    write_list(tmp_path / name, rows, COLUMNS))


def running_sequence(practice, tmp_path, pms_id="P1", started_days_ago=5) -> Sequence:
    """A Results sequence of the patient, started automatically by `results sync` and dated
    back so that an appointment in the past few days counts as since it started."""
    template = ResultsTemplate.objects.get(practice=practice, action_key="non_urgent_appointment")
    set_template_auto_start(actor="test", template=template, auto_start=True)
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(result_id=f"R-{pms_id}", pms_id=pms_id, test_name="FBC", performed_on="2026-11-20",
               action="Non-Urgent Appointment", filed_under="Investigation Report")
    code, _ = run_json("results", "sync", "--practice", practice.slug, "--source",
                       write_list(tmp_path / f"results-{pms_id}.csv", [row], RESULT_COLUMNS))
    assert code == 0
    sequence = Sequence.objects.get(practice=practice, group__patient__pms_id=pms_id)
    assert sequence.state == "active"
    Sequence.objects.filter(id=sequence.id).update(
        started_at=timezone.now() - dt.timedelta(days=started_days_ago))
    return sequence


def state_of(sequence) -> str:
    sequence.refresh_from_db()
    return sequence.state


def test_csv_sync_stores_audits_and_re_imports_idempotently(harbour, tmp_path):
    rows = [appt("A1"), appt("A2", pms_id="P2", status="cancelled")]
    code, data = sync_csv(harbour, tmp_path, *rows)
    assert code == 0 and set(data) == {"created", "updated", "unchanged", "unmatched",
                                       "sequences_paused", "sequences_resumed",
                                       "sequences_completed", "errors"}
    assert (data["created"], data["updated"], data["errors"]) == (2, 0, [])
    stored = Appointment.objects.get(appointment_id="A2")
    assert (stored.patient.pms_id, stored.status, stored.source) == ("P2", "cancelled", "csv")
    created = AuditEvent.objects.get(action="appointment.created", detail__appointment_id="A1")
    assert created.patient.pms_id == "P1" and created.detail["new_status"] == "booked"
    assert created.detail["old_status"] is None

    code, data = sync_csv(harbour, tmp_path, *rows, name="again.csv")
    assert (code, data["unchanged"], data["created"], data["updated"]) == (0, 2, 0, 0)

    code, data = sync_csv(harbour, tmp_path, rows[0], appt("A2", pms_id="P2", status="booked"),
                          name="changed.csv")
    assert (data["unchanged"], data["updated"]) == (1, 1)
    updated = AuditEvent.objects.get(action="appointment.updated")
    assert (updated.detail["old_status"], updated.detail["new_status"]) == ("cancelled", "booked")
    assert updated.patient.pms_id == "P2"


def test_row_errors_and_an_unknown_patient_fail_the_run_but_the_rest_is_imported(harbour,
                                                                               tmp_path):
    code, data = sync_csv(harbour, tmp_path, appt("A1"), appt("A2", status="maybe"),
                          appt("A3", pms_id="P404"))
    assert code == 1 and data["created"] == 2 and data["unmatched"] == 1
    assert data["errors"] == [
        {"row": 3, "pms_id": "P1", "field": "status",
         "message": "'maybe' is not booked, cancelled, dna or attended"},
        {"row": 4, "pms_id": "P404", "field": "pms_id",
         "message": "no patient with PMS id P404; appointment A3 stored unmatched"}]
    unmatched = Appointment.objects.get(appointment_id="A3")
    assert unmatched.patient is None and unmatched.pms_id == "P404"
    # Once the patient is on the list, the appointment is theirs the next time it is heard of.
    make_patient(harbour, pms_id="P404")
    code, data = sync_csv(harbour, tmp_path, appt("A3", pms_id="P404"), name="later.csv")
    assert code == 0 and data["updated"] == 1
    assert Appointment.objects.get(appointment_id="A3").patient.pms_id == "P404"


def test_pause_on_booking_end_to_end_from_csv(harbour, tmp_path):
    sequence = running_sequence(harbour, tmp_path)
    other = running_sequence(harbour, tmp_path, "P2")

    code, data = sync_csv(harbour, tmp_path, appt("A1"), name="1.csv")
    assert code == 0 and data["sequences_paused"] == 1
    assert state_of(sequence) == "paused_booking" and state_of(other) == "active"
    assert AuditEvent.objects.filter(action="sequence.paused_booking").count() == 1

    code, data = sync_csv(harbour, tmp_path, appt("A1", status="cancelled"), name="2.csv")
    assert data["sequences_resumed"] == 1 and state_of(sequence) == "active"

    sync_csv(harbour, tmp_path, appt("A2", starts_at=soon(1).isoformat()), name="3.csv")
    assert state_of(sequence) == "paused_booking"
    code, data = sync_csv(harbour, tmp_path, appt("A2", starts_at=soon(1).isoformat(),
                                                  status="dna"), name="4.csv")
    assert data["sequences_resumed"] == 1 and state_of(sequence) == "active"

    yesterday = (timezone.now() - dt.timedelta(days=1)).isoformat()
    code, data = sync_csv(harbour, tmp_path, appt("A3", starts_at=yesterday, status="attended"),
                          name="5.csv")
    assert data["sequences_completed"] == 1 and state_of(sequence) == "completed"
    assert state_of(other) == "active"
    # A re-import of what is already known changes no sequence.
    code, data = sync_csv(harbour, tmp_path, appt("A3", starts_at=yesterday, status="attended"),
                          name="6.csv")
    assert data["unchanged"] == 1 and data["sequences_completed"] == 0


def test_hl7_and_fhir_files_pause_and_resume_and_name_their_fields(harbour, tmp_path):
    sequence = running_sequence(harbour, tmp_path)
    start = soon().strftime("%Y%m%d%H%M+0000")
    source = tmp_path / "feed"
    source.mkdir()
    (source / "1.hl7").write_text(siu("S12", "C1", start=start) + siu(
        "S12", "C2", filler="APPT-9", start=start, pms_id="P404") + siu("S12", "C3", start=""))
    report = sync_appointments(practice=harbour, source=str(source), actor="test", fmt="hl7")
    assert report.counts["created"] == 2 and report.counts["sequences_paused"] == 1
    assert state_of(sequence) == "paused_booking"
    assert [(e["row"], e["field"], e["pms_id"]) for e in report.errors] == [
        (2, "PID-3", "P404"), (3, "SCH-11", "P1")]
    assert report.errors[0]["message"].startswith("1.hl7:message 2: no patient with PMS id P404")
    assert Appointment.objects.get(appointment_id="APPT-1").source == "hl7"

    path = tmp_path / "cancel.json"
    path.write_text(json.dumps(bundle(fhir_patient(), {
        **fhir_appointment("x", status="cancelled", actor="urn:uuid:Patient-pat-1",
                           start=soon().isoformat(), identifier={"value": "APPT-1"})})))
    report = sync_appointments(practice=harbour, source=str(path), actor="test", fmt="fhir")
    assert report.errors == [] and report.counts["updated"] == 1
    assert report.counts["sequences_resumed"] == 1 and state_of(sequence) == "active"


def test_fhir_server_pull_moves_its_own_cursor(harbour, tmp_path, monkeypatch):
    from practicesync.connectors.fhir import server

    sequence = running_sequence(harbour, tmp_path)
    seen = []

    def fake_get(opener, url, timeout):
        seen.append(url)
        page = bundle(fhir_patient(), fhir_appointment(
            "a1", actor="urn:uuid:Patient-pat-1", start=soon().isoformat()))
        page["entry"][1]["resource"]["meta"] = {"lastUpdated": "2026-11-23T01:02:03Z"}
        return page

    monkeypatch.setattr(server, "_get", fake_get)
    report = sync_appointments(practice=harbour, source="https://fhir.example/r4/", actor="t",
                               fmt="fhir")
    assert report.errors == [] and report.counts["created"] == 1
    assert "/Appointment?" in seen[0] and "_include=Appointment%3Apatient" in seen[0]
    assert state_of(sequence) == "paused_booking"
    assert PmsCursor.objects.get(source="https://fhir.example/r4").position == {
        "Appointment": "2026-11-23T01:02:03Z"}
    sync_appointments(practice=harbour, source="https://fhir.example/r4", actor="t", fmt="fhir")
    assert "_lastUpdated=gt2026-11-23T01%3A02%3A03Z" in seen[1]


def test_cli_gate_and_unreadable_sources(harbour, tmp_path, db):
    closed = make_practice(pms="bestpractice", slug="closed", permitted=False)
    path = write_list(tmp_path / "a.csv", [appt()], COLUMNS)
    code, out = run("appointments", "sync", "--practice", closed.slug, "--source", str(path))
    assert code == 2 and "permission" in out.lower()
    code, out = run("appointments", "sync", "--practice", "nowhere", "--source", str(path))
    assert code == 2
    code, out = run("appointments", "sync", "--practice", harbour.slug, "--source",
                    str(tmp_path / "missing.csv"))
    assert code == 1 and "no such file" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("appointment_id,pms_id\nA1,P1\n")
    code, out = run("appointments", "sync", "--practice", harbour.slug, "--source", str(bad))
    assert code == 1 and "missing column(s) starts_at, status" in out
    code, out = run("appointments", "sync", "--practice", harbour.slug, "--source", str(path))
    assert code == 0 and out.strip() == "created 1"
    assert not Appointment.objects.filter(practice=closed).exists()


# --- polling the PMS simulators --------------------------------------------------------------

START = dt.datetime(2026, 11, 20, 8, 0)


def test_poll_best_practice_appointments_from_a_cursor(harbour, tmp_path):
    with bp.BestPracticeSimulator(tmp_path / "bp.sqlite", clock=bp.SteppingClock(START)) as sim:
        p1 = sim.add_patient(firstname="Ann", surname="Lee", dob=dt.date(1980, 1, 2))
        make_patient(harbour, pms_id=str(p1), given_name="Cy")  # INTERNALID is the pms_id
        local = soon().astimezone(harbour.tz).replace(tzinfo=None)
        booked = sim.add_appointment(p1, local)
        stranger = sim.add_appointment(999, local)
        source = str(sim.path)

        code, data = run_json("appointments", "poll", "--practice", "harbour", "--source", source)
        assert code == 1 and data["created"] == 2 and data["unmatched"] == 1
        assert data["errors"][0]["appointment_id"] == str(stranger.id)
        stored = Appointment.objects.get(appointment_id=str(booked.id))
        assert (stored.status, stored.source, stored.starts_at) == (
            "booked", "pms", local.replace(tzinfo=harbour.tz))
        assert set(data["cursor"]) == {"APPOINTMENTS"}
        assert PmsCursor.objects.filter(source=cursor_key(source)).exists()

        code, data = run_json("appointments", "poll", "--practice", "harbour", "--source", source)
        assert code == 0 and data["created"] == data["updated"] == 0

        sim.set_appointment_code(booked, bp.COMPLETED)
        sim.cancel_appointment(stranger)
        code, data = run_json("appointments", "poll", "--practice", "harbour", "--source", source)
        assert data["updated"] == 2
        assert Appointment.objects.get(appointment_id=str(booked.id)).status == "attended"
        assert Appointment.objects.get(appointment_id=str(stranger.id)).status == "cancelled"
    # The results cursor of the same database is another row, untouched.
    code, data = run_json("results", "poll", "--practice", "harbour", "--source", source)
    assert code == 0 and set(data["cursor"]) <= {"INVESTIGATIONS", "CORRESPONDENCEIN"}
    assert PmsCursor.objects.filter(practice=harbour).count() == 2


def test_poll_medical_director_appointments_pauses_and_completes(db, tmp_path):
    banksia = make_practice(pms="medicaldirector", slug="banksia")
    with md.MedicalDirectorSimulator(tmp_path / "md.sqlite",
                                     clock=bp.SteppingClock(START)) as sim:
        patient_id = sim.add_patient(first_name="Ann", surname="Lee", dob=dt.date(1980, 1, 2))
        make_patient(banksia, pms_id=str(patient_id), mobile_phone="+61412345678")
        template = ResultsTemplate.objects.get(practice=banksia, action_key="discuss")
        set_template_auto_start(actor="test", template=template, auto_start=True)
        sim.add_result(patient_id, "FBC", collected=START, action=md.DISCUSS)
        code, _ = run_json("results", "poll", "--practice", "banksia", "--source", str(sim.path))
        sequence = Sequence.objects.get(practice=banksia)
        assert code == 0 and sequence.state == "active"
        Sequence.objects.filter(id=sequence.id).update(
            started_at=timezone.now() - dt.timedelta(days=5))

        local = soon().astimezone(banksia.tz).replace(tzinfo=None)
        item = sim.add_appointment(patient_id, local)
        code, data = run_json("appointments", "poll", "--practice", "banksia", "--source",
                              str(sim.path))
        assert code == 0 and data["sequences_paused"] == 1
        assert state_of(sequence) == "paused_booking"

        sim.set_appointment_status(item, md.DID_NOT_ATTEND)
        code, data = run_json("appointments", "poll", "--practice", "banksia", "--source",
                              str(sim.path))
        assert data["updated"] == 1 and data["sequences_resumed"] == 1
        assert state_of(sequence) == "active"

        yesterday = (timezone.now() - dt.timedelta(days=1)).astimezone(banksia.tz)
        sim.add_appointment(patient_id, yesterday.replace(tzinfo=None), status=md.COMPLETED)
        code, data = run_json("appointments", "poll", "--practice", "banksia", "--source",
                              str(sim.path))
        assert data["created"] == 1 and data["sequences_completed"] == 1
        assert state_of(sequence) == "completed"


def test_poll_refuses_an_unpermitted_practice_and_a_missing_database(db, tmp_path):
    closed = make_practice(pms="bestpractice", slug="closed", permitted=False)
    code, _ = run("appointments", "poll", "--practice", closed.slug, "--source",
                  str(tmp_path / "x.sqlite"))
    assert code == 2
    open_ = make_practice(pms="bestpractice", slug="open")
    code, out = run("appointments", "poll", "--practice", open_.slug, "--source",
                    str(tmp_path / "x.sqlite"))
    assert code == 1 and "no such file" in out
    gb = make_practice(pms="docman10", slug="gb")
    code, _ = run("appointments", "poll", "--practice", gb.slug, "--source",
                  str(tmp_path / "x.sqlite"))
    assert code == 2


# --- SIU over a real MLLP socket -------------------------------------------------------------

@pytest.mark.slow
def test_a_siu_over_mllp_pauses_the_sequence(tmp_path):
    from tests.test_mllp import Client, Running, cli, segments

    home = tmp_path
    cli(home, "migrate", "--no-input", "-v", "0")
    slug = json.loads(cli(home, "practice", "create", "--name", "Harbour", "--pms",
                          "bestpractice", "--json"))["slug"]
    cli(home, "practice", "permit", "--practice", slug, "--granted-by", "Dr Data",
        "--dpia-ref", "DPIA-1")
    patients = home / "list.csv"
    from tests.factories import list_row
    write_list(patients, [list_row(pms_id="P1", given_name="Nora", family_name="Greyling",
                                   mobile_phone="+61412345678", date_of_birth="1950-03-04")])
    cli(home, "patients", "sync", "--practice", slug, "--source", str(patients))
    cli(home, "results", "template", "--practice", slug, "--action-key",
        "non_urgent_appointment", "--auto-start", "on")
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(result_id="R1", pms_id="P1", test_name="FBC", performed_on="2026-11-20",
               action="Non-Urgent Appointment", filed_under="Investigation Report")
    cli(home, "results", "sync", "--practice", slug, "--source",
        str(write_list(home / "results.csv", [row], RESULT_COLUMNS)))

    def sequence_state() -> str:
        data = json.loads(cli(home, "export", "--practice", slug))
        return data["result_groups"][0]["sequence_state"]

    assert sequence_state() == "active"
    running = Running(home, slug, "--mode", "original")
    try:
        client = Client(running.port)
        try:
            start = soon().strftime("%Y%m%d%H%M+0000")
            ack = segments(client.send(siu("S12", "SIU-BOOK", start=start)))
            assert ack["MSA"][1:3] == ["AA", "SIU-BOOK"]
            assert sequence_state() == "paused_booking"
            ack = segments(client.send(siu("S15", "SIU-CANCEL", start=start)))
            assert ack["MSA"][1:3] == ["AA", "SIU-CANCEL"]
            assert sequence_state() == "active"
        finally:
            client.close()
    finally:
        running.kill()


# --- the demo's appointments -----------------------------------------------------------------

def test_the_demo_loader_pauses_a_few_running_sequences_and_is_idempotent(db, tmp_path,
                                                                          settings):
    from practicesync.simulator.demo import _load_appointments

    practice = make_practice(pms="bestpractice", slug="harbour")
    for n in range(5):
        make_patient(practice, pms_id=f"P{n}", mobile_phone=f"+6141234567{n}")
    sequences = [running_sequence(practice, tmp_path, f"P{n}") for n in range(5)]
    path = tmp_path / "demo" / "appointments.csv"
    first = _load_appointments(practice, path)
    assert first.counts["created"] == 3 and first.counts["sequences_paused"] == 3
    assert [state_of(s) for s in sequences].count("paused_booking") == 3
    again = _load_appointments(practice, path)
    assert again.counts["unchanged"] == 3 and again.as_json()["created"] == 0
    with Path(path).open() as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["booked"] * 3
