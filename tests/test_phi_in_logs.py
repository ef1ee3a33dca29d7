"""PHI never reaches logs (hazard H-017): everything a demo run, the worker and an outreach
tick print — stdout and stderr — is searched for the synthetic patients' names, identifiers
and contact details."""

import datetime as dt
import json
import re
import sqlite3
import traceback

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from practicesync.bulk import insert_rows
from practicesync.patients.models import Patient
from practicesync.patients.rows import PatientRecord
from practicesync.patients.sync import NEW_PATIENT_COLUMNS, _new_patient
from tests.cli import process
from tests.factories import make_patient, make_practice


def patients_of(home) -> list[tuple]:
    with sqlite3.connect(home / "practicesync.sqlite3") as db:
        return db.execute("SELECT given_name, family_name, nhs_number, medicare_number, ihi, "
                          "mobile_phone, email FROM patients_patient").fetchall()


@pytest.mark.slow
def test_a_demo_run_worker_and_tick_log_no_patient_data(tmp_path):
    runs = [process(tmp_path, "demo", "--no-serve", "--patients", "300"),
            process(tmp_path, "worker", "--once")]
    notes = [line for line in runs[0].stdout.splitlines() if "outreach tick --now" in line]
    when = re.search(r"--now (\S+)", notes[0]).group(1)
    runs.append(process(tmp_path, "outreach", "tick", "--now", when, "--json"))
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    assert json.loads(runs[-1].stdout)["sent"] > 0  # the tick really sent messages
    printed = "\n".join(r.stdout + r.stderr for r in runs)
    patients = patients_of(tmp_path)
    assert len(patients) > 1000
    leaks = {value for row in patients for value in row[2:] if value and value in printed}
    leaks |= {f"{given} {family}" for given, family, *_ in patients
              if f"{given} {family}" in printed or f"{family}, {given}" in printed}
    assert not leaks, sorted(leaks)[:10]


# The row's values as a database error could quote them (DETAIL "Failing row contains",
# "Key (...)=(...)", COPY's CONTEXT line, a refused value).
GIVEN, PMS_ID, NUMBER = "Zebedee", "Q7781234", "77812349999"


def new_patient_row(practice, **fields) -> dict:
    """A row as a sync run writes it for a new patient."""
    record = PatientRecord(pms_id=PMS_ID, given_name=GIVEN, family_name="Quill",
                           date_of_birth=dt.date(1950, 3, 4))
    return _new_patient(practice, record, "f", dt.datetime.now(dt.UTC)) | fields


def duplicate_pms_id(practice):
    make_patient(practice, pms_id=PMS_ID, given_name=GIVEN)
    make_patient(practice, pms_id=PMS_ID, given_name=GIVEN)


def missing_family_name(practice):
    make_patient(practice, pms_id=PMS_ID, given_name=GIVEN, family_name=None)


def duplicate_in_a_large_write(practice):
    make_patient(practice, pms_id=PMS_ID, given_name=GIVEN)
    insert_rows(Patient, [new_patient_row(practice)], NEW_PATIENT_COLUMNS)


def missing_value_in_a_large_write(practice):
    insert_rows(Patient, [new_patient_row(practice, family_name=None)], NEW_PATIENT_COLUMNS)


def refused_value(practice):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite converts any text to a date without an error")
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::date", [f"{GIVEN} {PMS_ID}"])


def out_of_range_value(practice):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite stores any integer without an error")
    with connection.cursor() as cursor:  # 'value "..." is out of range': the value first
        cursor.execute("SELECT %s::text::integer", [NUMBER])


@pytest.mark.django_db
@pytest.mark.parametrize("fail", [duplicate_pms_id, missing_family_name,
                                  duplicate_in_a_large_write, missing_value_in_a_large_write,
                                  refused_value, out_of_range_value])
def test_a_database_error_never_quotes_the_row(fail):
    """Exception text reaches tracebacks, logs, task results and a run's failure (H-017)."""
    practice = make_practice()
    with pytest.raises(DatabaseError) as raised, transaction.atomic():
        fail(practice)
    text = "".join(traceback.format_exception(raised.value))  # with the driver's own error
    assert GIVEN not in text and PMS_ID not in text and NUMBER not in text, text
    if fail not in (refused_value, out_of_range_value):
        assert isinstance(raised.value, IntegrityError)  # still Django's error for callers
    if connection.vendor == "postgresql":
        diag = raised.value.__cause__.diag  # the fields stay there for code that needs them
        kept = f"{diag.message_primary} {diag.message_detail} {diag.context}"
        assert GIVEN in kept or PMS_ID in kept or NUMBER in kept
