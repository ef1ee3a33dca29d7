from django.db import models

from practicesync.practices.models import Practice


class AppendOnly(Exception):
    """An audit event was to be changed or deleted: the audit log only grows."""


REFUSED = "audit events are append-only"


class AuditEventQuerySet(models.QuerySet):
    # A related manager's delete goes through these too. The database trigger (migration
    # 0003) refuses what gets past the ORM, such as raw SQL.
    def update(self, **kwargs):
        raise AppendOnly(REFUSED)

    def bulk_update(self, objs, fields, batch_size=None):
        # Refused before Django's own transaction, which the error would otherwise break.
        raise AppendOnly(REFUSED)

    def delete(self):
        raise AppendOnly(REFUSED)


class AuditEvent(models.Model):
    """Who did what, when and why. Never updated or deleted (docs/adr/0016)."""

    # Indexes are few on purpose: a tick or a sync writes one event per change, 100,000 at a
    # time. The audit log reads by practice and time, and by patient. The references are
    # plain ids in the database (no foreign key check per event, docs/adr/0019); PROTECT
    # still keeps the ORM from deleting what the log names.
    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="audit_events",
                                 db_index=False, db_constraint=False)
    at = models.DateTimeField()
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=60)
    why = models.CharField(max_length=200, blank=True)
    patient = models.ForeignKey(
        "patients.Patient", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        db_constraint=False,
    )
    sync_run = models.ForeignKey(
        "patients.SyncRun", null=True, blank=True, on_delete=models.PROTECT, related_name="events",
        db_index=False, db_constraint=False,
    )
    # For patient changes: [{"field", "old", "new", "rule"}, ...]
    detail = models.JSONField(default=dict)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["practice", "at"], name="audit_practice_at"),
            models.Index(fields=["sync_run"], name="audit_sync_run",
                         condition=models.Q(sync_run__isnull=False)),
        ]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnly(REFUSED)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnly(REFUSED)
