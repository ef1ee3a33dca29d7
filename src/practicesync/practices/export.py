"""The practice export (`practicesync.export/1`, DESIGN.md section 5). Keys never renamed."""

from practicesync.patients.models import Patient, ReviewItem, SyncRun

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
