"""Rules 3, 4, 5 and 7: what a linked row changes. Table-driven over the pure merge."""

import datetime as dt

import pytest

from practicesync.patients.merge import merge
from tests.factories import NHS
from tests.rules import account, record, row


def changes_of(stored, listed, reason="pms_id", held_by=None):
    changes, reviews = merge(stored, listed, link_reason=reason, held_by=held_by or {})
    return {c.field: (c.old, c.new, c.rule) for c in changes}, [r.kind for r in reviews]


CASES = [
    # (case, stored, row fields, expected changes {field: (old, new, rule)}, expected reviews)
    ("NHS number added to a digital patient on exact name + DOB",
     account(pms_id="P1"), {"pms_id": "P1", "nhs_number": NHS[0]},
     {"nhs_number": (None, NHS[0], "identifier_added_on_name_dob_match")}, []),
    ("NHS number not added when the names differ",
     account(pms_id="P1", given_name="Annie"), {"pms_id": "P1", "nhs_number": NHS[0]},
     {}, ["identifier_not_added"]),
    ("a different NHS number is never overwritten",
     account(pms_id="P1", nhs_number=NHS[1]), {"pms_id": "P1", "nhs_number": NHS[0]},
     {}, ["nhs_number_conflict"]),
    ("a non-digital record's NHS number is not overwritten either",
     record(pms_id="P1", nhs_number=NHS[1]), {"pms_id": "P1", "nhs_number": NHS[0]},
     {}, ["nhs_number_conflict"]),
    ("digital patient with no phone gets the list's mobile",
     account(pms_id="P1"), {"pms_id": "P1", "mobile_phone": "07912 345678"},
     {"mobile_phone": (None, "+447912345678", "digital_phone_if_none")}, []),
    ("digital patient's own phone is kept",
     account(pms_id="P1", mobile_phone="+447900000001"),
     {"pms_id": "P1", "mobile_phone": "07912 345678"}, {}, []),
    ("digital patient's email, address and names are their own",
     account(pms_id="P1", email="me@example.org", address_line1="1 Own Road"),
     {"pms_id": "P1", "email": "pms@example.org", "address_line1": "2 PMS Street",
      "given_name": "ANN", "title": "Dr"}, {}, []),
    ("digital patient with only a home phone on the list gets it",
     account(pms_id="P1"), {"pms_id": "P1", "home_phone": "0113 496 0000"},
     {"home_phone": (None, "+441134960000", "digital_phone_if_none")}, []),
    ("non-digital patient takes every contact detail",
     record(pms_id="P1", mobile_phone="+447900000001", email="old@example.org",
            postcode="LS1 1AA"),
     {"pms_id": "P1", "mobile_phone": "07912 345678", "email": "", "postcode": "LS2 2BB"},
     {"mobile_phone": ("+447900000001", "+447912345678", "non_digital_follows_pms"),
      "email": ("old@example.org", None, "non_digital_follows_pms"),
      "postcode": ("LS1 1AA", "LS2 2BB", "non_digital_follows_pms")}, []),
    ("non-digital patient's name follows the PMS",
     record(pms_id="P1"), {"pms_id": "P1", "family_name": "Lee-Smith"},
     {"family_name": ("Lee", "Lee-Smith", "non_digital_follows_pms")}, []),
    ("linking records the rule that linked",
     account(), {"pms_id": "P7"}, {"pms_id": (None, "P7", "linked_by_name_dob")}, []),
    ("deceased on the list marks the patient deceased",
     record(pms_id="P1"), {"pms_id": "P1", "date_of_death": "2026-10-01"},
     {"status": ("active", "deceased", "pms_deceased"),
      "date_of_death": (None, dt.date(2026, 10, 1), "pms_deceased")}, []),
    ("a digital patient is marked deceased too",
     account(pms_id="P1"), {"pms_id": "P1", "registration_status": "deceased"},
     {"status": ("active", "deceased", "pms_deceased")}, []),
    ("a deceased patient is never revived by a list",
     record(pms_id="P1", status="deceased"), {"pms_id": "P1"}, {}, ["deceased_reported_alive"]),
    ("left on the list", record(pms_id="P1"), {"pms_id": "P1", "registration_status": "left"},
     {"status": ("active", "left", "pms_left")}, []),
    ("back on the list after leaving", record(pms_id="P1", status="left"), {"pms_id": "P1"},
     {"status": ("left", "active", "re_registered")}, []),
    ("a digital account with another DOB is kept and reviewed",
     account(pms_id="P1", date_of_birth=dt.date(1981, 1, 2)), {"pms_id": "P1"}, {},
     ["dob_conflict"]),
]


@pytest.mark.parametrize("case, stored, fields, expected, reviews", CASES,
                         ids=[c[0] for c in CASES])
def test_merge(case, stored, fields, expected, reviews):
    reason = "pms_id" if stored.pms_id else "name_dob"
    assert changes_of(stored, row(**fields), reason) == (expected, reviews)


def test_identifier_already_held_by_another_patient_is_not_added():
    stored = account(pms_id="P1")
    got = changes_of(stored, row(pms_id="P1", nhs_number=NHS[0]),
                     held_by={("nhs_number", NHS[0]): stored.id + 1})
    assert got == ({}, ["duplicate_identifier"])


def test_unusable_status_changes_nothing():
    stored = record(pms_id="P1", status="left")
    assert changes_of(stored, row(pms_id="P1", registration_status="moved"))[0] == {}
