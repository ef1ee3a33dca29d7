"""Staff actions on results: keyword-only, one transaction, audited."""

from django.db import transaction
from django.utils import timezone

from practicesync.audit import events

from .models import ResultGroup


class NotOnChecklist(ValueError):
    pass


@transaction.atomic
def mark_checklist_done(*, actor: str, group: ResultGroup) -> ResultGroup:
    """Recalls > Summary: staff tick a checklist group done (who and when are kept)."""
    group = ResultGroup.objects.select_for_update().get(id=group.id)
    if group.disposition != ResultGroup.Disposition.CHECKLIST:
        raise NotOnChecklist(f"group {group.id} is {group.disposition}, not on the checklist")
    if group.checklist_done_at is None:
        group.checklist_done_by = actor
        group.checklist_done_at = timezone.now()
        group.save(update_fields=["checklist_done_by", "checklist_done_at", "updated_at"])
        events.record(practice=group.practice, actor=actor, action="group.checklist_done",
                      patient=group.patient, why=group.action,
                      detail={"group_id": group.id, "performed_on": group.performed_on.isoformat()})
    return group
