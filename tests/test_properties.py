"""Properties of Patient Sync over generated practices: idempotent, never merges two people."""

import datetime as dt
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from practicesync.patients.reconcile import plan_sync
from practicesync.patients.rows import PatientRecord, check_rows, copy_record
from tests.factories import NHS, list_row

NAMES = st.sampled_from(["Ann", "Anne", "Bo", "Zoë", "Zoe"])
FAMILIES = st.sampled_from(["Lee", "O'Brien", "OBrien", "Hall"])
DOBS = st.sampled_from([dt.date(1980, 1, 2), dt.date(1980, 1, 3), dt.date(2001, 5, 5)])
NHS_OR_NONE = st.sampled_from([None, *NHS[:3]])
PHONES = st.sampled_from(["", "07912 345678", "07912 000001"])


@st.composite
def stored_records(draw):
    records = []
    ids = itertools.count(1)
    for n in range(draw(st.integers(0, 6))):
        digital = draw(st.booleans())
        records.append(PatientRecord(
            id=next(ids), digital=digital, account_id=f"A{n}" if digital else None,
            pms_id=None if digital and draw(st.booleans()) else f"S{n}",
            given_name=draw(NAMES), family_name=draw(FAMILIES), date_of_birth=draw(DOBS),
            nhs_number=draw(NHS_OR_NONE),
            mobile_phone=draw(st.sampled_from([None, "+447912345678"])),
            status=draw(st.sampled_from(["active", "active", "deceased", "left"]))))
    return records


@st.composite
def practice_lists(draw):
    pms_ids = draw(st.lists(st.sampled_from([f"P{i}" for i in range(6)] + ["S0", "S1"]),
                            unique=True, max_size=6))
    raw_rows = []
    for line, pms_id in enumerate(pms_ids, start=2):
        raw_rows.append((line, list_row(pms_id=pms_id, given_name=draw(NAMES), family_name=draw(FAMILIES),
                       date_of_birth=draw(DOBS).isoformat(), nhs_number=draw(NHS_OR_NONE) or "",
                       mobile_phone=draw(PHONES),
                       registration_status=draw(st.sampled_from(["active", "left", "deceased"])))))
    return raw_rows


def apply_in_memory(records, plan):
    """What sync._apply writes, on plain records."""
    by_id = {r.id: r for r in records}
    for update in plan.updates:
        by_id[update.record.id] = copy_record(by_id[update.record.id],
                                              **{c.field: c.new for c in update.changes},
                                              list_fingerprint=update.fingerprint)
    for patient_id, fingerprint in plan.fingerprints:
        by_id[patient_id] = copy_record(by_id[patient_id], list_fingerprint=fingerprint)
    next_id = max(by_id, default=0) + 1
    for n, create in enumerate(plan.creates):
        by_id[next_id + n] = copy_record(create.record, id=next_id + n,
                                         list_fingerprint=create.fingerprint)
    return list(by_id.values())


def plan(records, raw_rows, **kwargs):
    """As sync_patient_list does it: rows checked against the stored records, then planned."""
    rows, _, present = check_rows(raw_rows, "GB", known={r.pms_id: r for r in records if r.pms_id})
    return plan_sync(records, rows, present_pms_ids=present, allow_drop=True, **kwargs)


@settings(max_examples=300, deadline=None)
@given(stored_records(), practice_lists())
def test_the_same_list_twice_changes_nothing_the_second_time(records, rows):
    after = apply_in_memory(records, plan(records, rows))
    second = plan(after, rows)
    assert not second.creates and not second.updates and not second.fingerprints
    assert second.counts["unchanged"] == len(rows)


@settings(max_examples=300, deadline=None)
@given(stored_records(), practice_lists())
def test_never_merges_two_records_whose_nhs_numbers_differ(records, rows):
    result = plan(records, rows)
    by_pms_id = {r.pms_id: r for r in check_rows(rows, "GB")[0]}
    for update in result.updates:
        for change in update.changes:
            # A stored NHS number is never replaced or removed.
            assert not (change.field == "nhs_number" and update.record.nhs_number is not None)
            if change.field == "pms_id":
                # A new link never joins a row to a record with another NHS number.
                row_nhs = by_pms_id[change.new].record.nhs_number
                assert not (row_nhs and update.record.nhs_number
                            and row_nhs != update.record.nhs_number)
    after = apply_in_memory(records, result)
    numbers = [r.nhs_number for r in after if r.nhs_number]
    held_before = [r.nhs_number for r in records if r.nhs_number]
    # A sync never gives one NHS number to more patients than already shared it.
    for number in set(numbers):
        assert numbers.count(number) <= max(1, held_before.count(number))
