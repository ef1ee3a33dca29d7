"""Rule 2, 3 and 6: which stored patient a list row is. Table-driven over pure functions."""

import datetime as dt

import pytest

from practicesync.patients.matching import CandidateIndex, match_row
from tests.factories import IHI, MEDICARE, NHS
from tests.rules import account, record, row

D = dt.date(1980, 1, 2)

# (case, stored records, the row's fields, expected: index of linked record or None,
#  expected reason, expected review kind or None)
CASES = [
    ("pms id links first", [record(pms_id="P1", given_name="Other")], {"pms_id": "P1"}, 0,
     "pms_id", None),
    ("nhs number links an unlinked account", [account(nhs_number=NHS[0])],
     {"nhs_number": NHS[0]}, 0, "nhs_number", None),
    ("nhs links even when the given name differs",
     [account(nhs_number=NHS[0], given_name="Annie")], {"nhs_number": NHS[0]}, 0,
     "nhs_number", None),
    ("nhs match with a different DOB goes to review",
     [account(nhs_number=NHS[0], date_of_birth=dt.date(1981, 1, 2))], {"nhs_number": NHS[0]},
     None, "new", "dob_conflict"),
    ("two records with one NHS number is ambiguous",
     [account(nhs_number=NHS[0]), account(nhs_number=NHS[0])], {"nhs_number": NHS[0]}, None,
     "new", "ambiguous_match"),
    ("exact normalised name and DOB links",
     [account(family_name="O’Brien", given_name="Zoë")],
     {"family_name": "O'BRIEN", "given_name": "zoe"}, 0, "name_dob", None),
    ("hyphen and space are the same name", [account(family_name="Smith Jones")],
     {"family_name": "Smith-Jones"}, 0, "name_dob", None),
    ("same name, different DOB is a new patient", [account(date_of_birth=dt.date(1980, 1, 3))],
     {}, None, "new", None),
    ("twins with one name and DOB: two candidates, no link", [account(), account()], {},
     None, "new", "ambiguous_match"),
    ("same name and DOB but different NHS numbers: no link",
     [account(nhs_number=NHS[1])], {"nhs_number": NHS[0]}, None, "new",
     "identifier_conflict"),
    ("a similar name is proposed, never linked", [account(given_name="Anne")], {}, None, "new",
     "possible_match"),
    ("a record already linked to another listed row is not a candidate",
     [record(pms_id="P9")], {"pms_id": "P2"}, None, "new", None),
    ("IHI links when name, sex and DOB agree",
     [record(ihi=IHI, sex="F", family_name="Xu")],
     {"ihi": IHI, "sex": "F", "family_name": "Xu"}, 0, "ihi", None),
    ("IHI with a different name is not trusted",
     [record(ihi=IHI, sex="F", family_name="Xu")],
     {"ihi": IHI, "sex": "F", "family_name": "Wu"}, None, "new", "ihi_unverified"),
    # With sex missing the IHI is not trusted; only the exact name and DOB rule can link.
    ("IHI with sex missing on one side does not link by IHI",
     [record(ihi=IHI, sex="", family_name="Xu")],
     {"ihi": IHI, "sex": "F", "family_name": "Xu"}, 0, "name_dob", None),
    ("Medicare card and IRN link", [record(medicare_number=MEDICARE + "2", family_name="Xu")],
     {"medicare_number": MEDICARE + "2", "family_name": "Wu", "given_name": "Bo"}, 0,
     "medicare", None),
    ("one Medicare card, another IRN: a family member, not a link",
     [record(medicare_number=MEDICARE + "3", family_name="Xu", given_name="Bo")],
     {"medicare_number": MEDICARE + "2", "family_name": "Xu", "given_name": "Jo"}, None, "new",
     None),
    ("a Medicare card without IRN never links alone",
     [record(medicare_number=MEDICARE, family_name="Xu", given_name="Bo")],
     {"medicare_number": MEDICARE, "family_name": "Xu", "given_name": "Jo"}, None, "new", None),
]


@pytest.mark.parametrize("case, records, fields, linked, reason, review",
                         CASES, ids=[c[0] for c in CASES])
def test_match_row(case, records, fields, linked, reason, review):
    country = "AU" if any(k in fields for k in ("ihi", "medicare_number")) else "GB"
    listed = row(country=country, **fields)
    other_rows = [row(pms_id=r.pms_id) for r in records if r.pms_id and r.pms_id != listed.pms_id]
    match = match_row(listed, CandidateIndex(records, [listed, *other_rows]))
    assert match.reason == reason
    assert match.patient is (records[linked] if linked is not None else None)
    assert (match.review.kind if match.review else None) == review


def test_two_list_rows_with_one_name_and_dob_never_link_either():
    stored = [account()]
    rows = [row(pms_id="P1"), row(pms_id="P2")]
    index = CandidateIndex(stored, rows)
    for listed in rows:
        match = match_row(listed, index)
        assert match.patient is None and match.review.kind == "ambiguous_match"


def test_not_the_same_person_is_never_proposed_or_linked_again():
    stored = [account()]
    listed = row(pms_id="P1")
    assert match_row(listed, CandidateIndex(stored, [listed])).patient is stored[0]
    index = CandidateIndex(stored, [listed], not_same={("P1", stored[0].id)})
    match = match_row(listed, index)
    assert match.patient is None and match.review is None


@pytest.mark.parametrize("placeholder", ["0000000000", "unknown", ""])
def test_placeholder_identifiers_never_match(placeholder):
    stored = [account(given_name="Someone", family_name="Else", nhs_number=None)]
    listed = row(nhs_number=placeholder)
    match = match_row(listed, CandidateIndex(stored, [listed]))
    assert match.patient is None
