"""The practice export (`practicesync.export/1`, DESIGN.md section 5). Keys never renamed."""

from practicesync.outreach.models import Sequence
from practicesync.patients.models import Patient, ReviewItem, SyncRun
from practicesync.results.models import Result, ResultGroup

from .models import Practice

SCHEMA = "practicesync.export/1"
PATIENT_KEYS = ("id", "pms_id", "account_id", "digital", "status", "title", "given_name",
                "family_name", "date_of_birth", "sex", "nhs_number", "medicare_number", "ihi",
                "mobile_phone", "home_phone", "email", "address_line1", "address_line2",
                "locality", "postcode", "date_of_death", "link_reason")


def _iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def build_export(practice: Practice):
    """Yields the export's top-level (key, value) pairs in order, so large practices stream."""
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
        for values in Patient.objects.filter(practice=practice).order_by("id")
        .values_list(*PATIENT_KEYS).iterator(chunk_size=2000))
    yield "review_items", (
        {"id": item.id, "kind": item.kind, "pms_ids": item.pms_ids,
         "account_ids": item.account_ids, "status": item.status, "detail": item.detail,
         "sync_run_id": item.sync_run_id, "created_at": _iso(item.created_at)}
        for item in ReviewItem.objects.filter(practice=practice).order_by("id"))
    yield "sync_runs", (
        {"id": run.id, "kind": run.kind, "status": run.status, "dry_run": False,
         "source": run.source, "triggered_by": run.triggered_by, "counts": run.counts,
         "errors": run.errors, "failure": run.failure or None,
         "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
         "duration_seconds": run.duration_seconds}
        for run in SyncRun.objects.filter(practice=practice).order_by("id"))
    yield "results", (
        {"id": r.id, "result_id": r.result_id, "pms_id": r.pms_id, "test_name": r.test_name,
         "performed_on": _iso(r.performed_on), "performed_at": _iso(r.performed_at),
         "reported_on": _iso(r.reported_on), "actioned_on": _iso(r.actioned_on),
         "action": r.action or None, "action_kind": r.action_kind or None,
         "comment": r.comment or None, "filed_under": r.filed_under or None,
         "tab": r.tab or None, "location": r.location or None, "eligible": r.eligible,
         "reason": r.reason or None, "group_id": r.group_id, "notified": r.notified or None}
        for r in Result.objects.filter(practice=practice).order_by("id").iterator())
    sequences = dict(Sequence.objects.filter(practice=practice).values_list("group_id", "state"))
    yield "result_groups", (
        {"id": g.id, "pms_id": g.patient.pms_id, "performed_on": _iso(g.performed_on),
         "action": g.action, "priority": g.priority, "disposition": g.disposition,
         "template": g.template.name if g.template else None, "state": g.state,
         "sequence_state": sequences.get(g.id),
         "checklist_done_by": g.checklist_done_by or None,
         "checklist_done_at": _iso(g.checklist_done_at)}
        for g in ResultGroup.objects.filter(practice=practice).select_related("patient", "template")
        .order_by("id"))
