"""Staff actions on results: keyword-only, one transaction, audited."""

from django.db import transaction
from django.utils import timezone

from practicesync.audit import events

from .models import ResultGroup, ResultsTemplate


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


@transaction.atomic
def set_template_auto_start(*, actor: str, template: ResultsTemplate,
                            auto_start: bool) -> ResultsTemplate:
    """An admin decides whether a Results template starts by itself or waits for Start.
    Groups already waiting are not started by this: each still needs staff."""
    if template.auto_start != auto_start:
        template.auto_start = auto_start
        template.save(update_fields=["auto_start"])
        events.record(practice=template.practice, actor=actor, action="template.auto_start",
                      why="on" if auto_start else "off",
                      detail={"template_id": template.id, "action_key": template.action_key,
                              "auto_start": auto_start})
    return template
