"""Writing audit events. Actions call these inside their own transaction."""

from django.utils import timezone

from .models import AuditEvent

SYSTEM = "system"


def record(*, practice, actor: str, action: str, why: str = "", patient=None, sync_run=None,
           detail: dict | None = None, at=None) -> AuditEvent:
    return AuditEvent.objects.create(
        practice=practice,
        actor=actor,
        action=action,
        why=why,
        patient=patient,
        sync_run=sync_run,
        detail=detail or {},
        at=at or timezone.now(),
    )
