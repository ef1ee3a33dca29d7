"""The practice export (`practicesync.export/1`, DESIGN.md section 5). Keys never renamed."""

import json
import types
from collections.abc import Iterator

from django.db.models import Q

from practicesync.appointments.models import Appointment
from practicesync.audit.models import AuditEvent
from practicesync.outreach.models import Message, Sequence, StaffTask
from practicesync.patients.models import Patient, PatientRequest, ReviewItem, SyncRun
from practicesync.results.models import Result, ResultGroup

from .models import Practice

SCHEMA = "practicesync.export/1"
PATIENT_KEYS = ("id", "pms_id", "account_id", "digital", "status", "title", "given_name",
                "family_name", "date_of_birth", "sex", "nhs_number", "medicare_number", "ihi",
                "mobile_phone", "home_phone", "email", "address_line1", "address_line2",
                "locality", "postcode", "date_of_death", "link_reason")


def _iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _of(patient: Patient | None, path: str = "patient") -> Q:
    """Rows of one patient (a subject access export), or of the whole practice."""
    return Q(**{path: patient.pk}) if patient is not None else Q()


def build_export(practice: Practice, patient: Patient | None = None):
    """Yields the export's top-level (key, value) pairs in order, so large practices stream.
    With `patient`, only what concerns that patient (a subject access request): the same
    keys, and their audit events and appointments besides; no sync runs, whose row errors
    name other patients."""
    yield "schema", SCHEMA
    yield "practice", {"slug": practice.slug, "name": practice.name, "pms": practice.pms,
                       "country": practice.country, "timezone": practice.timezone,
                       "sync_permitted": practice.sync_permitted,
                       "dpia_ref": practice.dpia_ref or None}
    in_review = set(ReviewItem.patients.through.objects
                    .filter(reviewitem__practice=practice,
                            reviewitem__status=ReviewItem.Status.OPEN)
                    .values_list("patient_id", flat=True))
    yield "patients", (
        {**{k: _iso(v) for k, v in zip(PATIENT_KEYS, values, strict=True)},
         "needs_review": values[0] in in_review}
        for values in Patient.objects.filter(_of(patient, "id"), practice=practice)
        .order_by("id")
        .values_list(*PATIENT_KEYS).iterator(chunk_size=2000))
    yield "review_items", (
        {"id": item.id, "kind": item.kind, "status": item.status,
         "sync_run_id": item.sync_run_id, "created_at": _iso(item.created_at),
         **_naming(item, patient)}
        for item in ReviewItem.objects.filter(_of(patient, "patients"), practice=practice)
        .prefetch_related("patients").distinct().order_by("id"))
    yield "sync_runs", (
        {"id": run.id, "kind": run.kind, "status": run.status, "dry_run": False,
         "source": run.source, "triggered_by": run.triggered_by, "counts": run.counts,
         "errors": run.errors, "failure": run.failure or None,
         "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
         "duration_seconds": run.duration_seconds}
        for run in (SyncRun.objects.none() if patient else
                    SyncRun.objects.filter(practice=practice).order_by("id")))
    yield "results", (
        {"id": r.id, "result_id": r.result_id, "pms_id": r.pms_id, "test_name": r.test_name,
         "performed_on": _iso(r.performed_on), "performed_at": _iso(r.performed_at),
         "reported_on": _iso(r.reported_on), "actioned_on": _iso(r.actioned_on),
         "action": r.action or None, "action_kind": r.action_kind or None,
         "comment": r.comment or None, "filed_under": r.filed_under or None,
         "tab": r.tab or None, "location": r.location or None, "eligible": r.eligible,
         "reason": r.reason or None, "group_id": r.group_id, "notified": r.notified or None}
        for r in Result.objects.filter(_results_of(patient), practice=practice).order_by("id")
        .iterator())
    sequences = {group_id: (state, position, due_at) for group_id, state, position, due_at in
                 Sequence.objects.filter(_of(patient, "group__patient"), practice=practice)
                 .values_list("group_id", "state", "next_position", "due_at")}
    yield "result_groups", (
        {"id": g.id, "pms_id": g.patient.pms_id, "performed_on": _iso(g.performed_on),
         "action": g.action, "priority": g.priority, "disposition": g.disposition,
         "template": g.template.name if g.template else None, "state": g.state,
         "sequence_state": _sequence(sequences, g.id)[0],
         "sequence_next_step": _sequence(sequences, g.id)[1],
         "sequence_due_at": _iso(_sequence(sequences, g.id)[2]),
         "checklist_done_by": g.checklist_done_by or None,
         "checklist_done_at": _iso(g.checklist_done_at)}
        for g in ResultGroup.objects.filter(_of(patient), practice=practice)
        .select_related("patient", "template")
        .order_by("id"))
    yield "patient_requests", (
        {"id": r["id"], "pms_id": r["patient__pms_id"], "reason": r["reason"],
         "notes": r["notes"] or None, "assigned_to": r["assigned_to__user__email"],
         "due_on": _iso(r["due_on"]), "status": r["status"], "created_by": r["created_by"],
         "created_at": _iso(r["created_at"]), "done_by": r["done_by"] or None,
         "done_at": _iso(r["done_at"])}
        for r in PatientRequest.objects.filter(_of(patient), practice=practice).order_by("id")
        .values(
            "id", "patient__pms_id", "reason", "notes", "assigned_to__user__email", "due_on",
            "status", "created_by", "created_at", "done_by", "done_at").iterator(chunk_size=2000))
    yield "messages", (
        {"id": m["id"], "pms_id": m["patient__pms_id"], "group_id": m["group_id"],
         "step": m["step"], "channel": m["channel"], "to": m["to"], "body": m["body"],
         "status": m["status"], "created_at": _iso(m["created_at"]), "sent_at": _iso(m["sent_at"]),
         "kind": m["kind"], "subject": m["subject"] or None,
         "delivered_at": _iso(m["delivered_at"]), "error": m["error"] or None,
         "bulk_id": m["bulk_id"], "sequence_id": m["sequence_id"]}
        for m in Message.objects.filter(_of(patient), practice=practice).order_by("id").values(
            "id", "patient__pms_id", "group_id", "step", "channel", "to", "body", "status",
            "created_at", "sent_at", "kind", "subject", "delivered_at", "error", "bulk_id",
            "sequence_id").iterator(chunk_size=2000))
    yield "staff_tasks", (
        {"id": t["id"], "pms_id": t["patient__pms_id"], "group_id": t["group_id"],
         "kind": t["kind"], "reason": t["reason"], "status": t["status"],
         "created_at": _iso(t["created_at"]), "done_by": t["done_by"] or None,
         "done_at": _iso(t["done_at"]), "sequence_id": t["sequence_id"],
         "message_id": t["message_id"]}
        for t in StaffTask.objects.filter(_of(patient), practice=practice).order_by("id").values(
            "id", "patient__pms_id", "group_id", "kind", "reason", "status", "created_at",
            "done_by", "done_at", "sequence_id", "message_id").iterator(chunk_size=2000))
    if patient is None:
        return
    yield "appointments", (
        {"id": a.id, "appointment_id": a.appointment_id, "pms_id": a.pms_id,
         "starts_at": _iso(a.starts_at), "status": a.status, "source": a.source,
         "updated_at": _iso(a.updated_at)}
        for a in Appointment.objects.filter(practice=practice, patient=patient).order_by("id"))
    yield "audit_events", (
        {"id": e.id, "at": _iso(e.at), "actor": e.actor, "action": e.action,
         "why": e.why or None, "sync_run_id": e.sync_run_id, "detail": e.detail}
        for e in AuditEvent.objects.filter(practice=practice, patient=patient).order_by("id")
        .iterator())


def _naming(item: ReviewItem, patient: Patient | None) -> dict:
    """Whom a review item names. In a patient's export, only them: an item that also names
    someone else (an ambiguous match, twins) keeps its text back, which names both."""
    if patient is None:
        return {"pms_ids": item.pms_ids, "account_ids": item.account_ids, "detail": item.detail}
    own_pms = [p for p in item.pms_ids if p == patient.pms_id]
    own_accounts = [a for a in item.account_ids if a == patient.account_id]
    only_them = ([p.pk for p in item.patients.all()] == [patient.pk]
                 and own_pms == item.pms_ids and own_accounts == item.account_ids)
    return {"pms_ids": own_pms, "account_ids": own_accounts,
            "detail": item.detail if only_them else WITHHELD}


# In a patient's export, in place of text that also names other patients.
WITHHELD = "[withheld: also names other patients]"


def _results_of(patient: Patient | None) -> Q:
    """A result is the patient's when linked to them, or when it came for their PMS id
    before they were on the list (stored unmatched)."""
    if patient is None or not patient.pms_id:
        return _of(patient)
    return Q(patient=patient) | Q(patient__isnull=True, pms_id=patient.pms_id)


def _sequence(sequences: dict, group_id: int) -> tuple:
    """(state, next step, due at) of a group's sequence: the next step only while the sequence
    is live, the due time only while it is active (a paused or ended one is due at no time,
    whatever its row still holds)."""
    if group_id not in sequences:
        return None, None, None
    state, position, due_at = sequences[group_id]
    return (state, position if state in Sequence.LIVE else None,
            due_at if state == Sequence.State.ACTIVE else None)


def export_json(practice: Practice, patient: Patient | None = None) -> Iterator[str]:
    """The export as JSON text, piece by piece: a 100,000-patient export never sits in
    memory whole (the CLI prints it, the web page streams it)."""
    yield "{"
    for n, (key, value) in enumerate(build_export(practice, patient)):
        yield ("," if n else "") + json.dumps(key) + ":"
        if isinstance(value, types.GeneratorType):
            yield "["
            for i, item in enumerate(value):
                yield ("," if i else "") + json.dumps(item)
            yield "]"
        else:
            yield json.dumps(value)
    yield "}"
