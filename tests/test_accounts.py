"""Digital accounts: patients who signed up themselves."""

import datetime as dt

from practicesync.audit.models import AuditEvent
from practicesync.patients.models import Patient, ReviewItem
from tests.cli import run_json
from tests.factories import NHS, make_patient, write_list

COLUMNS = ("account_id", "given_name", "family_name", "date_of_birth", "email", "mobile_phone",
           "nhs_number")


def account_row(**fields):
    row = dict.fromkeys(COLUMNS, "")
    row.update(account_id="A1", given_name="Ann", family_name="Lee", date_of_birth="1980-01-02")
    row.update(fields)
    return row


def import_(practice, tmp_path, *rows):
    return run_json("accounts", "import", "--practice", practice.slug, "--source",
                    write_list(tmp_path / "accounts.csv", rows, COLUMNS))


def test_accounts_create_digital_patients_and_are_audited(practice, tmp_path):
    code, data = import_(practice, tmp_path, account_row(mobile_phone="07912 345678"),
                         account_row(account_id="A2", given_name="Bo", nhs_number=NHS[0]))
    assert code == 0 and data["created"] == 2 and data["errors"] == []
    ann = Patient.objects.get(account_id="A1")
    assert ann.digital and ann.pms_id is None and ann.mobile_phone == "+447912345678"
    assert AuditEvent.objects.filter(action="patient.created", patient=ann).exists()
    assert import_(practice, tmp_path, account_row(mobile_phone="07912 345678"))[1][
        "unchanged"] == 1


def test_an_account_for_a_non_digital_patient_makes_that_record_digital(practice, tmp_path):
    listed = make_patient(practice, pms_id="P1", mobile_phone="+447900000001")
    code, data = import_(practice, tmp_path, account_row(mobile_phone="07912 345678",
                                                         email="ann@example.org"))
    assert code == 0 and data["linked"] == 1 and data["created"] == 0
    listed.refresh_from_db()
    assert listed.digital and listed.account_id == "A1" and listed.pms_id == "P1"
    assert listed.mobile_phone == "+447912345678" and listed.email == "ann@example.org"
    event = AuditEvent.objects.get(patient=listed, action="patient.updated")
    assert event.why == "account_linked_by_name_dob"


def test_an_ambiguous_account_is_created_alone_and_reviewed(practice, tmp_path):
    make_patient(practice, pms_id="P1")
    make_patient(practice, pms_id="P2")
    code, data = import_(practice, tmp_path, account_row())
    assert data["created"] == 1 and data["needs_review"] == 1
    assert Patient.objects.filter(digital=True).count() == 1
    item = ReviewItem.objects.get()
    assert item.kind == "ambiguous_match" and item.account_ids == ["A1"]
    assert sorted(item.pms_ids) == ["P1", "P2"]


def test_bad_account_rows_are_reported_and_the_rest_imported(practice, tmp_path):
    code, data = import_(practice, tmp_path, account_row(date_of_birth="1980-13-01"),
                         account_row(account_id="A2", nhs_number="123"),
                         account_row(account_id="A3", given_name="Cy"))
    assert code == 1
    assert [(e["row"], e["field"]) for e in data["errors"]] == [(2, "date_of_birth"),
                                                                 (3, "nhs_number")]
    assert sorted(Patient.objects.values_list("account_id", flat=True)) == ["A2", "A3"]
    assert Patient.objects.get(account_id="A2").nhs_number is None


def test_accounts_import_needs_no_sync_permission(db, tmp_path):
    from tests.factories import make_practice

    practice = make_practice(permitted=False)
    assert import_(practice, tmp_path, account_row())[0] == 0
    assert Patient.objects.get().date_of_birth == dt.date(1980, 1, 2)


def test_an_account_never_takes_an_nhs_number_another_patient_holds(practice, tmp_path):
    holder = make_patient(practice, pms_id="P1", given_name="Cy", nhs_number=NHS[0],
                          date_of_birth=dt.date(1990, 5, 5))  # so not the same person
    code, data = import_(practice, tmp_path, account_row(nhs_number=NHS[0]))
    account = Patient.objects.get(account_id="A1")
    assert account.nhs_number is None and holder.nhs_number == NHS[0]
    assert set(ReviewItem.objects.values_list("kind", flat=True)) == {"duplicate_identifier",
                                                                       "dob_conflict"}
    item = ReviewItem.objects.get(kind="duplicate_identifier")
    assert set(item.patients.all()) == {holder} and item.account_ids == ["A1"]


def test_two_accounts_matching_one_record_link_neither(practice, tmp_path):
    listed = make_patient(practice, pms_id="P1", nhs_number=NHS[0])
    code, data = import_(practice, tmp_path, account_row(account_id="A1", nhs_number=NHS[0],
                                                         given_name="Annie"),
                         account_row(account_id="A2"))
    listed.refresh_from_db()
    assert not listed.digital and listed.account_id is None
    assert data["created"] == 2 and data["linked"] == 0
    assert ReviewItem.objects.filter(kind="ambiguous_match").count() == 2
    assert Patient.objects.get(account_id="A1").nhs_number is None  # held by P1
