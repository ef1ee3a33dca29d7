"""Digital accounts: patients who signed up themselves (accounts CSV, DESIGN.md section 5).

An account for someone already on record as non-digital turns that record digital, but
only on a unique identifier or exact name + DOB match; anything less creates the account
on its own and asks staff.
"""

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from practicesync.audit import events
from practicesync.connectors.csvfile.source import CsvSource
from practicesync.practices.models import Practice

from .identifiers import clean_email, clean_nhs_number, clean_phone
from .matching import CandidateIndex, Review, match_row
from .models import Patient, ReviewItem
from .rows import ListRow, PatientRecord, RowError, drop_shared_identifiers
from .sync import load_records

ACCOUNT_COLUMNS = ("account_id", "given_name", "family_name", "date_of_birth", "email",
                   "mobile_phone", "nhs_number")
OWN_FIELDS = ("given_name", "family_name", "date_of_birth", "email", "mobile_phone")


@dataclass
class AccountsReport:
    counts: dict = field(default_factory=lambda: dict.fromkeys(
        ("created", "updated", "unchanged", "linked", "needs_review"), 0))
    errors: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


def check_account_row(line: int, raw: dict, country: str):
    get = lambda c: (raw.get(c) or "").strip()  # noqa: E731
    account_id = get("account_id") or None
    errors = []
    for col in ("account_id", "given_name", "family_name"):
        if not get(col):
            errors.append(RowError(line, None, col, "missing"))
    try:
        dob = dt.date.fromisoformat(get("date_of_birth"))
    except ValueError:
        dob = None
        errors.append(RowError(line, None, "date_of_birth",
                               f"{get('date_of_birth')!r} is not a date (YYYY-MM-DD)"))
    if errors:
        return None, errors
    values = {"account_id": account_id, "given_name": get("given_name"),
              "family_name": get("family_name"), "date_of_birth": dob, "digital": True}
    for col, clean in (("nhs_number", clean_nhs_number), ("email", clean_email),
                       ("mobile_phone", lambda v: clean_phone(v, country))):
        values[col], message = clean(get(col))
        if message:
            errors.append(RowError(line, None, col, message))
    return PatientRecord(**values), errors


@transaction.atomic
def import_accounts(*, practice: Practice, source: str, actor: str) -> AccountsReport:
    report = AccountsReport()
    csv_source = CsvSource(source)
    csv_source.require(ACCOUNT_COLUMNS)
    accounts = []
    for line, raw in csv_source:
        account, errors = check_account_row(line, raw, practice.country)
        report.errors += [{**e.as_dict(), "account_id": raw.get("account_id")} for e in errors]
        if account:
            accounts.append((line, account))

    records = load_records(practice)
    by_account = {r.account_id: r for r in records if r.account_id}
    fresh = [ListRow(line, a, "active") for line, a in accounts if a.account_id not in by_account]
    report.errors += [{**e.as_dict(), "account_id": None} for e in drop_shared_identifiers(fresh)]
    held_by = {r.nhs_number: r.id for r in records if r.nhs_number}
    index = CandidateIndex([r for r in records if r.account_id is None], fresh)
    matches = [(row, match_row(row, index)) for row in fresh]
    claims = Counter(m.patient.id for _, m in matches if m.patient is not None)

    for _, account in accounts:
        if existing := by_account.get(account.account_id):
            _update_own_details(practice, existing, account, actor, report)
    for row, match in matches:
        account = row.record
        linked = match.patient if match.patient and claims[match.patient.id] == 1 else None
        if account.nhs_number and held_by.get(account.nhs_number) not in (
                None, linked and linked.id):
            # One number, one patient: the account goes without it until staff decide.
            _review(practice, None, account, Review(
                "duplicate_identifier", f"Account row {row.line} ({account.given_name} "
                f"{account.family_name}) has NHS number {account.nhs_number}, which belongs "
                f"to patient #{held_by[account.nhs_number]}. Not stored on the account.",
                patient_ids=(held_by[account.nhs_number],)), report)
            account.nhs_number = None
        if linked is not None:
            _become_digital(practice, linked, account, match.reason, actor, report)
            continue
        patient = _create_account(practice, account, actor, report)
        review = match.review
        if match.patient is not None:
            review = Review("ambiguous_match", f"Account row {row.line} ({account.given_name} "
                            f"{account.family_name}) and another new account both match "
                            f"patient #{match.patient.id}. Neither was linked.",
                            candidates=(match.patient,))
        if review:
            _review(practice, patient, account, review, report)
    return report


def _create_account(practice, account: PatientRecord, actor, report) -> Patient:
    patient = Patient.objects.create(
        practice=practice, **{f: getattr(account, f) for f in
                              ("account_id", "digital", "nhs_number", *OWN_FIELDS)})
    events.record(practice=practice, actor=actor, action="patient.created", patient=patient,
                  why="digital_account_signed_up", detail={"account_id": account.account_id})
    report.counts["created"] += 1
    return patient


def _apply_changes(practice, patient_id: int, changes: dict, rule: str, actor: str,
                   old: PatientRecord) -> None:
    Patient.objects.filter(id=patient_id).update(**changes, list_fingerprint="",
                                                 updated_at=timezone.now())
    events.record(practice=practice, actor=actor, action="patient.updated", why=rule,
                  patient=Patient(id=patient_id),
                  detail={"changes": [{"field": k, "old": _text(getattr(old, k, None)),
                                       "new": _text(v), "rule": rule}
                                      for k, v in changes.items()]})


def _text(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _update_own_details(practice, existing: PatientRecord, account: PatientRecord, actor,
                        report) -> None:
    # The account is the patient's own: their latest details win (identifiers never change).
    changes = {f: getattr(account, f) for f in OWN_FIELDS
               if getattr(account, f) is not None and getattr(account, f) != getattr(existing, f)}
    if not changes:
        report.counts["unchanged"] += 1
        return
    _apply_changes(practice, existing.id, changes, "account_details_from_patient", actor, existing)
    report.counts["updated"] += 1


def _become_digital(practice, record: PatientRecord, account: PatientRecord, reason: str, actor,
                    report) -> None:
    changes = {"account_id": account.account_id, "digital": True,
               "link_reason": f"account_linked_by_{reason}"}
    changes |= {f: getattr(account, f) for f in ("email", "mobile_phone")
                if getattr(account, f) is not None and getattr(account, f) != getattr(record, f)}
    if account.nhs_number and record.nhs_number is None:
        changes["nhs_number"] = account.nhs_number
    _apply_changes(practice, record.id, changes, f"account_linked_by_{reason}", actor, record)
    report.counts["linked"] += 1


def _review(practice, patient: Patient | None, account: PatientRecord, review, report) -> None:
    item, created = ReviewItem.objects.get_or_create(
        practice=practice, key=f"account:{account.account_id}:{review.key}",
        defaults={"kind": review.kind, "detail": review.detail.replace("List row", "Account row"),
                  "account_ids": [account.account_id],
                  "pms_ids": sorted({c.pms_id for c in review.candidates if c.pms_id})})
    if created:
        item.patients.add(*([patient] if patient else []), *[c.id for c in review.candidates],
                          *review.patient_ids)
        report.counts["needs_review"] += 1
