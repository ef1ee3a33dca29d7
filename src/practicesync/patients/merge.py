"""What a linked list row changes on a stored patient (DESIGN.md section 2, rules 3-5, 7). Pure.

Digital patients own their details: the list may only fill a phone they lack and add a
missing identifier. Non-digital patients are the PMS's record: demographics and every
contact detail follow the list. Identifiers are never overwritten; a difference is a review.
"""

from dataclasses import dataclass

from .matching import Review
from .models import CONTACT_FIELDS, DEMOGRAPHIC_FIELDS, IDENTIFIER_FIELDS
from .rows import ListRow, PatientRecord

# Rule codes, recorded with every change and counted in the run summary.
LINKED = "linked_by_"
IDENTIFIER_ADDED = "identifier_added_on_name_dob_match"
NON_DIGITAL_FOLLOWS_PMS = "non_digital_follows_pms"
DIGITAL_PHONE_IF_NONE = "digital_phone_if_none"
PMS_DECEASED = "pms_deceased"
PMS_LEFT = "pms_left"
RE_REGISTERED = "re_registered"
MISSING_FROM_LIST = "missing_from_list"


@dataclass(frozen=True)
class Change:
    field: str
    old: object
    new: object
    rule: str

    def as_dict(self) -> dict:
        def text(v):
            return v.isoformat() if hasattr(v, "isoformat") else v
        return {"field": self.field, "old": text(self.old), "new": text(self.new), "rule": self.rule}


def merge(record: PatientRecord, row: ListRow, *, link_reason: str,
          held_by: dict[tuple[str, str], int]) -> tuple[list[Change], list[Review]]:
    """Changes to apply to `record` and findings for staff. `held_by` maps (field, value) to
    the patient that already has that identifier, so one number never lands on two people."""
    incoming = row.record
    changes: list[Change] = []
    reviews: list[Review] = []

    def review(kind: str, detail: str) -> None:
        reviews.append(Review(kind, f"List row {row.line} ({incoming.given_name} "
                                    f"{incoming.family_name}, {row.pms_id}): {detail}",
                              row.pms_id, (record,)))

    if record.pms_id != incoming.pms_id:
        changes.append(Change("pms_id", record.pms_id, incoming.pms_id, LINKED + link_reason))

    if record.digital:
        if record.date_of_birth != incoming.date_of_birth:
            review("dob_conflict", f"date of birth {incoming.date_of_birth} on the list, "
                                   f"{record.date_of_birth} on the patient's own account. Kept.")
        # Same family name, given name and DOB: the condition for adding an identifier.
        names_match = record.name_key == incoming.name_key
    else:
        for name in DEMOGRAPHIC_FIELDS:
            if getattr(record, name) != getattr(incoming, name):
                changes.append(Change(name, getattr(record, name), getattr(incoming, name),
                                      NON_DIGITAL_FOLLOWS_PMS))
        names_match = True  # the record takes the list's names and DOB

    for name in IDENTIFIER_FIELDS:
        new, old = getattr(incoming, name), getattr(record, name)
        if new is None or new == old:
            continue
        label = name.replace("_", " ")
        holder = held_by.get((name, new))
        if old is not None:
            review(f"{name}_conflict", f"the list has {label} {new}, the record has {old}. "
                                       f"The record's number is kept.")
        elif holder is not None and holder != record.id:
            review("duplicate_identifier", f"{label} {new} already belongs to another patient "
                                           f"(#{holder}). Not added.")
        elif not names_match:
            review("identifier_not_added", f"{label} {new} not added: name and date of birth "
                                           f"differ from the patient's account.")
        else:
            changes.append(Change(name, None, new, IDENTIFIER_ADDED))

    if record.digital:
        if record.mobile_phone is None and record.home_phone is None:
            for name in ("mobile_phone", "home_phone"):
                if (phone := getattr(incoming, name)) is not None:
                    changes.append(Change(name, None, phone, DIGITAL_PHONE_IF_NONE))
                    break
    else:
        for name in CONTACT_FIELDS:
            if getattr(record, name) != getattr(incoming, name):
                changes.append(Change(name, getattr(record, name), getattr(incoming, name),
                                      NON_DIGITAL_FOLLOWS_PMS))

    changes += _status_changes(record, row, review)
    return changes, reviews


def _status_changes(record: PatientRecord, row: ListRow, review) -> list[Change]:
    incoming = row.record
    if row.status is None:
        return []
    if row.status == "deceased":
        changes = []
        if record.status != "deceased":
            changes.append(Change("status", record.status, "deceased", PMS_DECEASED))
        if incoming.date_of_death and incoming.date_of_death != record.date_of_death:
            changes.append(Change("date_of_death", record.date_of_death, incoming.date_of_death,
                                  PMS_DECEASED))
        return changes
    if record.status == "deceased":
        # Never brought back to life by a list: messages stay off until staff check.
        review("deceased_reported_alive", f"the list says {row.status}, practicesync has the "
                                          f"patient as deceased. Still treated as deceased.")
        return []
    if row.status == "left" and record.status != "left":
        return [Change("status", record.status, "left", PMS_LEFT)]
    if row.status == "active" and record.status == "left":
        return [Change("status", "left", "active", RE_REGISTERED)]
    return []
