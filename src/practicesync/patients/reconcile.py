"""A whole practice list against the stored patients: the plan of one sync run. Pure.

`plan_sync` decides everything (links, creates, changes, left practice, reviews, counts)
without touching the database, so `--dry-run` and the real run report the same thing and
the rules are tested as data in, plan out.
"""

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from . import merge as rules
from .matching import NEW, CandidateIndex, Review, match_row
from .merge import Change
from .models import IDENTIFIER_FIELDS
from .rows import ListRow, PatientRecord, copy_record, fingerprint

COUNTERS = ("created", "updated", "unchanged", "non_digital_created", "nhs_numbers_added",
            "phones_filled", "needs_review", "left_practice", "deceased")


@dataclass
class Update:
    record: PatientRecord
    changes: list[Change]
    fingerprint: str


@dataclass
class Create:
    row: ListRow
    record: PatientRecord
    fingerprint: str


@dataclass
class Plan:
    creates: list[Create] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    # Linked rows that change nothing but whose fingerprint must be stored.
    fingerprints: list[tuple[int, str]] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    refused: Review | None = None

    def summary(self) -> dict:
        return {name: self.counts[name] for name in COUNTERS}


def plan_sync(records: list[PatientRecord], rows: list[ListRow], *, present_pms_ids: set[str],
              not_same: set[tuple[str, int]] = frozenset(), max_drop_share=Decimal("0.05"),
              allow_drop: bool = False, partial: bool = False) -> Plan:
    """`present_pms_ids` holds every PMS id on the list, including rows too broken to apply,
    so a bad row never makes its patient look as if they left. A `partial` list (patients
    sent one by one, as in HL7 ADT) says nothing about who is missing: nobody is marked left."""
    plan = Plan()
    index = CandidateIndex(records, rows, not_same)
    held_by = {(name, value): r.id for r in records for name in IDENTIFIER_FIELDS
               if (value := getattr(r, name))}

    matches = []
    for row in rows:
        if row.unchanged:
            plan.counts["unchanged"] += 1
            if not row.clean:
                plan.fingerprints.append((index.by_pms_id[row.pms_id].id, ""))
            continue
        matches.append((row, match_row(row, index)))

    claims = Counter(m.patient.id for _, m in matches if m.patient is not None)
    linked_ids = set()
    for row, match in matches:
        if match.patient is not None and claims[match.patient.id] > 1:
            # Two rows point at one record: neither is trusted with it.
            rivals = [r.pms_id for r, m in matches if m.patient is match.patient]
            match = type(match)(None, NEW, Review(
                "ambiguous_match",
                f"List rows {', '.join(rivals)} all match {match.patient.given_name} "
                f"{match.patient.family_name} (#{match.patient.id}). Each is kept as its own "
                f"record until someone checks.", row.pms_id, (match.patient,)))
        if match.review:
            plan.reviews.append(match.review)
        if match.patient is None:
            _plan_create(plan, row, held_by)
        else:
            linked_ids.add(match.patient.id)
            _plan_update(plan, row, match, held_by)

    if not partial:
        _plan_left(plan, records, present_pms_ids, linked_ids, max_drop_share, allow_drop)
    plan.counts["needs_review"] = len({r.key for r in plan.reviews})
    return plan


def _plan_create(plan: Plan, row: ListRow, held_by) -> None:
    if row.status is None:
        # A status we cannot read might mean deceased: the row (already reported) waits
        # for the PMS to fix it rather than creating a patient who could be messaged.
        return
    record = copy_record(row.record, digital=False)
    for name in IDENTIFIER_FIELDS:
        value = getattr(record, name)
        if (holder := held_by.get((name, value))) is not None:
            # One number, one patient: the new record goes without it until staff decide.
            setattr(record, name, None)
            plan.reviews.append(Review(
                "duplicate_identifier",
                f"List row {row.line} ({record.given_name} {record.family_name}, {row.pms_id}) "
                f"has {name.replace('_', ' ')} {value}, which belongs to patient #{holder}. "
                f"Created without it.", row.pms_id, patient_ids=(holder,)))
    plan.creates.append(Create(row, record, fingerprint(row, record)))
    plan.counts["created"] += 1
    plan.counts["non_digital_created"] += 1
    if record.status == "deceased":
        plan.counts["deceased"] += 1


def _plan_update(plan: Plan, row: ListRow, match, held_by) -> None:
    record = match.patient
    changes, reviews = rules.merge(record, row, link_reason=match.reason, held_by=held_by)
    plan.reviews += reviews
    after = copy_record(record, **{c.field: c.new for c in changes})
    new_fingerprint = fingerprint(row, after)
    if not changes:
        plan.counts["unchanged"] += 1
        if new_fingerprint != record.list_fingerprint:
            plan.fingerprints.append((record.id, new_fingerprint))
        return
    plan.updates.append(Update(record, changes, new_fingerprint))
    plan.counts["updated"] += 1
    for change in changes:
        if change.field == "nhs_number" and change.rule == rules.IDENTIFIER_ADDED:
            plan.counts["nhs_numbers_added"] += 1
        elif change.rule == rules.DIGITAL_PHONE_IF_NONE:
            plan.counts["phones_filled"] += 1
        elif change.field == "status" and change.new == "deceased":
            plan.counts["deceased"] += 1
        elif change.field == "status" and change.new == "left":
            plan.counts["left_practice"] += 1


def _plan_left(plan, records, present_pms_ids, linked_ids, max_drop_share, allow_drop) -> None:
    # Only patients that came from the list can leave it; unlinked digital accounts never do.
    listed = [r for r in records if r.pms_id and r.status == "active"]
    missing = [r for r in listed if r.pms_id not in present_pms_ids and r.id not in linked_ids]
    if not missing:
        return
    share = Decimal(len(missing)) / Decimal(len(listed))
    if share > Decimal(max_drop_share) and not allow_drop:
        plan.refused = Review(
            "truncated_list",
            f"The list would mark {len(missing)} of {len(listed)} listed patients ({share:.1%}) "
            f"as left practice, more than the {Decimal(max_drop_share):.1%} allowed. Nothing "
            f"from this list was applied. If the drop is real, re-run with --allow-drop and a "
            f"reason.")
        return
    for record in missing:
        # The fingerprint is cleared so the patient is merged afresh if they come back.
        change = Change("status", record.status, "left", rules.MISSING_FROM_LIST)
        plan.updates.append(Update(record, [change], ""))
        plan.counts["updated"] += 1
        plan.counts["left_practice"] += 1
