from django.db import models

from practicesync.practices.models import Practice


class AuditEvent(models.Model):
    """Who did what, when and why. Never updated or deleted."""

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="audit_events")
    at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=60)
    why = models.CharField(max_length=200, blank=True)
    patient = models.ForeignKey(
        "patients.Patient", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    sync_run = models.ForeignKey(
        "patients.SyncRun", null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    # For patient changes: [{"field", "old", "new", "rule"}, ...]
    detail = models.JSONField(default=dict)

    class Meta:
        ordering = ["-at", "-id"]
