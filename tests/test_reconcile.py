"""The whole-list plan: left practice, the truncated-list guard, double claims, re-runs."""

from decimal import Decimal

import pytest

from practicesync.patients.reconcile import plan_sync
from practicesync.patients.rows import check_rows, copy_record, fingerprint
from tests.factories import list_row
from tests.rules import account, record, row


def listed(n):
    return [record(pms_id=f"P{i}", given_name=f"G{i}") for i in range(n)]


def rows_for(records):
    return [row(pms_id=r.pms_id, given_name=r.given_name) for r in records]


@pytest.mark.parametrize("dropped, allow, refused, left", [
    (0, False, False, 0),
    (5, False, False, 5),      # 5 of 100 is exactly the 5% limit: applied
    (6, False, True, 0),       # over the limit: refused whole
    (6, True, False, 6),       # --allow-drop with a reason
    (100, False, True, 0),     # an empty list never empties the practice
])
def test_left_practice_and_truncated_list_guard(dropped, allow, refused, left):
    records = listed(100)
    rows = rows_for(records[dropped:])
    plan = plan_sync(records, rows, present_pms_ids={r.pms_id for r in rows},
                     max_drop_share=Decimal("0.05"), allow_drop=allow)
    assert (plan.refused is not None) == refused
    assert plan.counts["left_practice"] == left
    if refused:
        assert plan.refused.kind == "truncated_list" and "Nothing" in plan.refused.detail


def test_unlinked_digital_accounts_never_count_as_missing():
    records = listed(10) + [account() for _ in range(50)]
    rows = rows_for(records[:10])
    plan = plan_sync(records, rows, present_pms_ids={r.pms_id for r in rows})
    assert plan.refused is None and plan.counts["left_practice"] == 0


def test_a_row_too_broken_to_apply_does_not_make_its_patient_leave():
    records = listed(3)
    rows = rows_for(records[:2])
    plan = plan_sync(records, rows, present_pms_ids={"P0", "P1", "P2"},
                     max_drop_share=Decimal("0.5"))
    assert plan.counts["left_practice"] == 0


def test_deceased_and_left_patients_are_not_counted_again_as_leaving():
    records = [record(pms_id="P0", status="deceased"), record(pms_id="P1", status="left"),
               *listed(2)[1:]]
    plan = plan_sync(records, [], present_pms_ids=set(), max_drop_share=Decimal("1"))
    assert plan.counts["left_practice"] == 1


def test_two_rows_claiming_one_record_link_neither():
    stored = account(nhs_number="9990000018")
    # P1 by NHS number (its given name differs), P2 by exact name and DOB.
    rows = [row(pms_id="P1", nhs_number="9990000018", given_name="Annie"),
            row(pms_id="P2", given_name="Ann")]
    plan = plan_sync([stored], rows, present_pms_ids={"P1", "P2"})
    assert plan.counts["created"] == 2 and not plan.updates
    # ... and the number already held by the stored record is not copied onto P1's new record.
    assert {r.kind for r in plan.reviews} == {"ambiguous_match", "duplicate_identifier"}
    assert [c.record.nhs_number for c in plan.creates] == [None, None]


def _synced_once(raw):
    """A stored record as the sync leaves it after applying `raw` (a clean row)."""
    (checked,), errors, _ = check_rows([(2, raw)], "GB")
    assert not errors
    stored = copy_record(checked.record, id=1)
    stored.list_fingerprint = fingerprint(checked, stored)
    return stored


def test_an_unchanged_row_is_not_checked_or_merged_again():
    raw = list_row(pms_id="P1", mobile_phone="07912 345678")
    stored = _synced_once(raw)
    rows, errors, present = check_rows([(2, raw)], "GB", known={"P1": stored})
    assert rows[0].unchanged and rows[0].record.mobile_phone is None  # keys only
    plan = plan_sync([stored], rows, present_pms_ids=present)
    assert plan.summary()["unchanged"] == 1 and not plan.updates and not plan.fingerprints


def test_a_record_edited_since_the_last_run_is_checked_and_merged_again():
    raw = list_row(pms_id="P1", mobile_phone="07912 345678")
    stored = _synced_once(raw)
    stored.mobile_phone = "+447900000009"  # changed by staff after the last sync
    rows, _, present = check_rows([(2, raw)], "GB", known={"P1": stored})
    assert not rows[0].unchanged
    plan = plan_sync([stored], rows, present_pms_ids=present)
    assert [c.field for c in plan.updates[0].changes] == ["mobile_phone"]


def test_a_row_with_errors_never_gets_a_fingerprint():
    (checked,), errors, _ = check_rows([(2, list_row(pms_id="P1", mobile_phone="12"))], "GB")
    assert errors and not checked.clean
    assert fingerprint(checked, copy_record(checked.record, id=1)) == ""


def test_an_unchanged_row_sharing_a_new_rows_nhs_number_is_reported_too():
    raw = list_row(pms_id="P1", nhs_number="9990000018")
    stored = _synced_once(raw)
    newcomer = list_row(pms_id="P2", given_name="Bo", nhs_number="9990000018")
    rows, errors, present = check_rows([(2, raw), (3, newcomer)], "GB", known={"P1": stored})
    assert [(e.row, e.field) for e in errors] == [(2, "nhs_number"), (3, "nhs_number")]
    plan = plan_sync([stored], rows, present_pms_ids=present)
    assert plan.creates[0].record.nhs_number is None
    assert plan.fingerprints == [(1, "")]  # P1 is checked in full next time
