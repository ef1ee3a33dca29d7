"""Erasing a non-digital patient's personal data on request (docs/adr/0017).

The record is kept, emptied: audit events, messages and result groups point at it (and the
audit log is never changed), and its PMS id lets a later list recognise the same patient.
Only a patient who is no longer on the practice list (left or deceased) can be erased: an
active one would be filled in again by the next Patient Sync, since the PMS is the practice's
record.
"""

import datetime as dt
import re

from django.db import transaction
from django.utils import timezone

from practicesync.audit import events
from practicesync.outreach.actions import stop_sequences_of
from practicesync.outreach.models import Message, OutboxEntry, PushSubscription, StaffTask
from practicesync.practices.models import Practice
from practicesync.results.models import Result

from .actions import NotFound
from .models import CONTACT_FIELDS, IDENTIFIER_FIELDS, Patient, PatientRequest, ReviewItem

ERASED = "[erased]"
# The date of birth cannot be empty; this one matches no list row's patient.
ERASED_DOB = dt.date(1900, 1, 1)
ERASABLE = (Patient.Status.LEFT, Patient.Status.DECEASED)
# The record's values that free text (review items) may quote.
_TRACED = ("given_name", "family_name", *IDENTIFIER_FIELDS, *CONTACT_FIELDS)


class ErasureRefused(ValueError):
    """Why this patient cannot be erased. Names no patient data: pages and the CLI show it."""


def erasure_refusal(patient: Patient) -> str | None:
    """Why the patient's data may not be erased here, or None. Pure."""
    if patient.digital or patient.account_id:
        return ("a digital patient's account is their own: they close it themselves; "
                "only non-digital patients are erased here")
    if patient.family_name == ERASED:
        return "this patient's data was already erased"
    if patient.status == Patient.Status.MERGED:
        return "this record was merged into another: erase that one"
    if patient.status not in ERASABLE:
        return ("the patient is still registered on the practice list, so the next Patient "
                "Sync would bring the data back: mark them as left in the PMS first (or stop "
                "messages to them with an opt-out)")
    return None


def scrub(text: str, values) -> str:
    """`text` with every one of `values` (case-insensitive, whole words) replaced. Pure."""
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", ERASED, text, flags=re.IGNORECASE)
    return text


@transaction.atomic
def erase_patient(*, actor: str, practice: Practice, pms_id: str, reason: str) -> dict:
    """Erase a non-digital patient's personal data: live follow-ups are cancelled first; then
    the record's names, identifiers, contact details and address, the texts and addresses of
    their messages (the rows stay: the contact ledger), the outbox's copies, their requests'
    notes, their results' comments and their names in review items. Raises NotFound,
    ErasureRefused. The audit event names the PMS id and the reason, none of the data."""
    reason = " ".join(reason.split())
    if not reason:
        raise ErasureRefused("give the reason for the erasure (the request it answers)")
    patient = (Patient.objects.select_for_update().filter(practice=practice, pms_id=pms_id)
               .first())
    if patient is None:
        raise NotFound(f"no patient with PMS id {pms_id!r} at {practice.slug}")
    if refusal := erasure_refusal(patient):
        raise ErasureRefused(refusal)
    traces = [getattr(patient, name) for name in _TRACED]
    why = "patient's data erased on request"
    counts = {"follow_ups_cancelled": stop_sequences_of(
        practice=practice, patient_ids=[patient.id], why=why, actor=actor)}

    messages = Message.objects.filter(practice=practice, patient=patient)
    counts["outbox_entries_deleted"] = OutboxEntry.objects.filter(
        practice=practice, idempotency_key__in=messages.values("idempotency_key")).delete()[0]
    messages.filter(status=Message.Status.QUEUED).update(status=Message.Status.SKIPPED,
                                                         error=why)
    # A provider's error text may quote the number or address it refused.
    counts["messages_erased"] = messages.update(to="", subject="", body=ERASED, error="")
    counts["staff_tasks_closed"] = StaffTask.objects.filter(
        practice=practice, patient=patient, status=StaffTask.Status.OPEN).update(
        status=StaffTask.Status.DONE, done_by=actor, done_at=timezone.now())
    PushSubscription.objects.filter(practice=practice, patient=patient).delete()
    counts["requests_cleared"] = PatientRequest.objects.filter(
        practice=practice, patient=patient).exclude(notes="").update(notes="")
    counts["result_comments_cleared"] = Result.objects.filter(
        practice=practice, patient=patient).exclude(comment="").update(comment="")
    items = list(ReviewItem.objects.filter(practice=practice, patients=patient).distinct())
    for item in items:
        item.detail = scrub(item.detail, traces)
        item.resolution_note = scrub(item.resolution_note, traces)
    ReviewItem.objects.bulk_update(items, ["detail", "resolution_note"])
    counts["review_items_scrubbed"] = len(items)

    for name in (*IDENTIFIER_FIELDS, *CONTACT_FIELDS, "date_of_death"):
        setattr(patient, name, None if Patient._meta.get_field(name).null else "")
    patient.title, patient.given_name, patient.family_name, patient.sex = "", "", ERASED, ""
    patient.date_of_birth, patient.list_fingerprint = ERASED_DOB, ""
    patient.save()
    events.record(practice=practice, actor=actor, action="patient.erased", patient=patient,
                  why=reason[:200], detail={"pms_id": pms_id, "reason": reason, **counts})
    return counts
