"""Outreach actions: keyword-only, in the caller's transaction, audited."""

from django.utils import timezone

from practicesync.audit.models import AuditEvent

from .models import Sequence


def stop_sequences_of(*, practice, patient_ids, why: str, actor: str, sync_run=None) -> int:
    """Cancel every live sequence of these patients at once (deceased, left practice):
    nothing more goes out to them, and each stop is on the record."""
    live = list(Sequence.objects.filter(practice=practice, group__patient_id__in=patient_ids,
                                        state__in=Sequence.LIVE)
                .values_list("id", "group_id", "group__patient_id"))
    if not live:
        return 0
    now = timezone.now()
    Sequence.objects.filter(id__in=[s for s, _, _ in live]).update(
        state=Sequence.State.CANCELLED, state_reason=why, updated_at=now)
    AuditEvent.objects.bulk_create([
        AuditEvent(practice=practice, at=now, actor=actor, action="sequence.cancelled", why=why,
                   patient_id=patient_id, sync_run=sync_run,
                   detail={"sequence_id": sequence_id, "group_id": group_id})
        for sequence_id, group_id, patient_id in live])
    return len(live)
