"""The results sync action: store every result, decide each affected group, drive its
sequence, audit it all, in one transaction. Deciding is in eligibility/grouping/sequences."""

import datetime as dt

from django.db import transaction
from django.utils import timezone

from practicesync.audit import events
from practicesync.connectors.csvfile.results import read_results
from practicesync.connectors.fhir import read_result_feed as read_fhir_result_feed
from practicesync.connectors.fhir import server as fhir_server
from practicesync.connectors.hl7v2.feeds import read_result_feed
from practicesync.connectors.profiles import PRIORITY, get_profile
from practicesync.imports import ImportReport
from practicesync.outreach.actions import started_fields
from practicesync.outreach.models import Sequence
from practicesync.outreach.sequences import sequence_change
from practicesync.patients.models import Patient, ReviewItem
from practicesync.practices.access import require_sync_permission
from practicesync.practices.models import Practice

from .eligibility import judge
from .grouping import GroupDecision, Member, decide_group, group_day
from .models import Result, ResultGroup
from .rows import ResultRow, check_result_row
from .templates import ensure_templates

COUNTERS = ("created", "updated", "unchanged", "eligible", "ineligible", "unmatched",
            "groups_created", "groups_updated", "template", "checklist", "ignored", "done",
            "sequences_started", "sequences_paused", "sequences_cancelled",
            "sequences_completed", "needs_review")
# Fields of a result that a re-import may change.
TRACKED = ("test_name", "performed_on", "performed_at", "reported_on", "actioned_on", "action",
           "comment", "filed_under", "tab", "location", "notified", "eligible", "reason",
           "action_key", "action_kind", "patient_id")


class ResultsReport(ImportReport):
    COUNTERS = COUNTERS


def sync_results(*, practice: Practice, source: str, actor: str, fmt: str = "csv"
                 ) -> ResultsReport:
    """Import the canonical actioned-results CSV at `source`, or (`fmt` "hl7") the ORU^R01
    messages of a file or folder: one result per OBR; a bad message is reported by file,
    message and segment, and the rest imported. `fmt` "fhir": the DiagnosticReports of a FHIR
    Bundle, resource file or folder, a bad resource reported by file and FHIR path; with an
    http(s) `source`, the DiagnosticReports updated on that FHIR server since the practice's
    cursor, which moves in the same transaction as their import (a crash or a server error
    leaves it where it was; re-importing a report is harmless)."""
    require_sync_permission(practice)
    if fmt not in ("hl7", "fhir"):
        return import_result_rows(practice=practice, raw_rows=read_results(source), actor=actor)
    if fmt == "fhir" and fhir_server.is_url(source):
        pulled = fhir_server.pull(source, "DiagnosticReport", fhir_server.cursor_position(
            practice, source, "DiagnosticReport"))
        feed = read_fhir_result_feed(pulled.documents, country=practice.country,
                                     pms_id_system=practice.pms_id_system)
        with transaction.atomic():
            report = import_result_rows(practice=practice, raw_rows=feed.rows, actor=actor)
            fhir_server.advance_cursor(practice, source, pulled)
        report.errors = sorted(feed.errors + [feed.locate_row_error(e) for e in report.errors],
                               key=lambda e: e["row"])
        return report
    if fmt == "fhir":
        feed = read_fhir_result_feed(source, country=practice.country,
                                     pms_id_system=practice.pms_id_system)
    else:
        feed = read_result_feed(source, pms=practice.pms, pms_id_system=practice.pms_id_system)
    report = import_result_rows(practice=practice, raw_rows=feed.rows, actor=actor)
    report.errors = sorted(feed.errors + [feed.locate_row_error(e) for e in report.errors],
                           key=lambda e: e["row"])
    return report


@transaction.atomic
def import_result_rows(*, practice: Practice, raw_rows, actor: str) -> ResultsReport:
    """Import (line, canonical result dict) pairs from any connector (CSV, PMS database)."""
    require_sync_permission(practice)
    report = ResultsReport()
    rows = []
    for line, raw in raw_rows:
        row, errors = check_result_row(line, raw)
        report.errors += [e.as_dict() for e in errors]
        if row is not None:
            rows.append(row)
    _apply(practice, rows, actor, report)
    return report


def _apply(practice: Practice, rows: list[ResultRow], actor: str, report: ResultsReport) -> None:
    profile = get_profile(practice.pms)
    templates = ensure_templates(practice)
    patients = {p.pms_id: p for p in Patient.objects.filter(
        practice=practice, pms_id__in={r.pms_id for r in rows})}
    stored = {r.result_id: r for r in Result.objects.filter(
        practice=practice, result_id__in=[r.result_id for r in rows])}
    # (patient id, day) of every group a row touches, and whether an action already in it
    # changed (then the group is decided afresh; otherwise it can only rise).
    affected: dict[tuple[int, dt.date], bool] = {}

    for row in rows:
        patient = patients.get(row.pms_id)
        judgement = judge(profile, row.facts)
        values = {
            "pms_id": row.pms_id, "patient_id": patient.id if patient else None,
            "test_name": row.test_name,
            "performed_on": group_day(row.performed, practice.tz),
            "performed_at": row.performed if isinstance(row.performed, dt.datetime) else None,
            "reported_on": row.reported_on, "actioned_on": row.actioned_on,
            "action": row.facts.action, "comment": row.facts.comment,
            "filed_under": row.facts.filed_under, "tab": row.facts.tab,
            "location": row.facts.location, "notified": row.notified,
            "eligible": judgement.eligible and patient is not None,
            "reason": judgement.reason or ("" if patient else f"no patient with PMS id "
                                                              f"{row.pms_id}"),
            "action_key": judgement.meaning.key if judgement.meaning else "",
            "action_kind": judgement.meaning.kind if judgement.meaning else "",
        }
        if values["performed_at"] is not None and values["performed_at"].tzinfo is None:
            values["performed_at"] = values["performed_at"].replace(tzinfo=practice.tz)
        result = stored.get(row.result_id)
        if result is None:
            result = Result.objects.create(practice=practice, result_id=row.result_id, **values)
            stored[row.result_id] = result
            events.record(practice=practice, actor=actor, action="result.created",
                          patient=patient, why=values["reason"] or values["action"],
                          detail={"result_id": row.result_id, "row": row.line})
            report.counts["created"] += 1
            old_key = None
        else:
            changes = {k: (getattr(result, k), v) for k, v in values.items()
                       if k in TRACKED and getattr(result, k) != v}
            if not changes:
                report.counts["unchanged"] += 1
                continue
            old_key = (result.patient_id, result.performed_on) if result.group_id else None
            for name, (_, new) in changes.items():
                setattr(result, name, new)
            result.save()
            events.record(practice=practice, actor=actor, action="result.updated",
                          patient=patient, why="re-imported with changes",
                          detail={"result_id": row.result_id, "changes": [
                              {"field": k, "old": _text(o), "new": _text(n)}
                              for k, (o, n) in changes.items()]})
            report.counts["updated"] += 1
            action_changed = bool({"action", "comment", "eligible", "action_key"} & set(changes))
            if old_key and old_key != (result.patient_id, result.performed_on):
                affected[old_key] = True  # a result moved away: decide what is left afresh
            if old_key:
                affected[old_key] = affected.get(old_key, False) or action_changed
        report.counts["eligible" if result.eligible else "ineligible"] += 1
        if patient is None:
            report.counts["unmatched"] += 1
            _review_unmatched(practice, row, report)
        if result.eligible:
            key = (patient.id, result.performed_on)
            affected[key] = affected.get(key, False)
        elif result.group_id:
            # A result that stopped counting (deleted, refiled, un-actioned) leaves its group,
            # and what is left of the group is decided afresh.
            affected[old_key or (result.patient_id, result.performed_on)] = True
            Result.objects.filter(id=result.id).update(group=None)

    for (patient_id, day), re_decide in affected.items():
        _decide(practice, patient_id, day, re_decide, templates, actor, report)


def _text(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _review_unmatched(practice, row: ResultRow, report) -> None:
    _, created = ReviewItem.objects.get_or_create(
        practice=practice, key=f"unmatched_result:{row.result_id}",
        defaults={"kind": "unmatched_result", "pms_ids": [row.pms_id],
                  "detail": f"Result {row.result_id} ({row.test_name}) is for PMS id "
                            f"{row.pms_id}, who is not on the patient list. Stored, not acted on."})
    report.counts["needs_review"] += created


def _decide(practice, patient_id, day, re_decide, templates, actor, report) -> None:
    group = (ResultGroup.objects.select_for_update()
             .filter(practice=practice, patient_id=patient_id, performed_on=day).first())
    members_qs = Result.objects.filter(practice=practice, patient_id=patient_id,
                                       performed_on=day, eligible=True)
    members = [Member(r.action_key, r.action, r.action_kind, bool(r.notified))
               for r in members_qs]
    if not members:
        if group is not None:
            # Every result left the group or stopped counting: nothing is asked of anyone.
            ResultGroup.objects.filter(id=group.id).update(
                disposition=ResultGroup.Disposition.IGNORED, priority=0, template=None,
                action="No action", action_key="no_action", updated_at=timezone.now())
            events.record(practice=practice, actor=actor, action="group.updated",
                          patient=group.patient, why="no counted results left",
                          detail={"group_id": group.id, "disposition": "ignored"})
            _apply_sequence(practice, group, "ignored", done=False, templates=templates,
                            actor=actor, report=report)
        return
    previous = None
    if group is not None:
        previous = GroupDecision(group.priority, group.action_key, group.action, group.disposition,
                                 group.state == ResultGroup.State.DONE)
    decision = decide_group(members, previous, re_decide=re_decide)
    template = templates.get(decision.action_key) if decision.disposition == "template" else None
    cancelled = Sequence.objects.filter(group=group, state=Sequence.State.CANCELLED).exists()
    if decision.disposition == "template" and (template is None or cancelled):
        # No template for this automatic action, or its sequence was cancelled (which only
        # staff may restart): the group goes on the checklist rather than to nobody.
        decision = GroupDecision(PRIORITY["manual"], decision.action_key, decision.action_label,
                                 "checklist", decision.done)
        template = None
    state = ResultGroup.State.DONE if decision.done else ResultGroup.State.OPEN
    fields = {"action": decision.action_label, "action_key": decision.action_key,
              "priority": decision.priority, "disposition": decision.disposition,
              "template": template, "state": state}
    if group is None:
        group = ResultGroup.objects.create(practice=practice, patient_id=patient_id,
                                           performed_on=day, **fields)
        report.counts["groups_created"] += 1
        what = "group.created"
    else:
        if group.checklist_done_at and (decision.priority > group.priority
                                        or members_qs.exclude(group=group).exists()):
            # A ticked item that gains a result or becomes more pressing is back to action:
            # the tick was for what staff saw then.
            fields |= {"checklist_done_by": "", "checklist_done_at": None}
        what = None
        if any(getattr(group, k) != v for k, v in fields.items()):
            for k, v in fields.items():
                setattr(group, k, v)
            group.save()
            report.counts["groups_updated"] += 1
            what = "group.updated"
    members_qs.exclude(group=group).update(group=group)
    if what:
        events.record(practice=practice, actor=actor, action=what, patient=group.patient,
                      why=f"{decision.disposition}: {decision.action_label}",
                      detail={"group_id": group.id, "performed_on": day.isoformat(),
                              "priority": decision.priority, "state": state,
                              "re_decided": re_decide})
        report.counts[decision.disposition] += 1
        report.counts["done"] += decision.done
    _apply_sequence(practice, group, decision.disposition, done=decision.done,
                    templates=templates, actor=actor, report=report)


def _apply_sequence(practice, group, disposition, *, done, templates, actor, report) -> None:
    sequence = Sequence.objects.filter(group=group).first()
    template = group.template
    new_state, why = sequence_change(
        current=sequence.state if sequence else None, disposition=disposition, done=done,
        auto_start=bool(template and template.auto_start),
        contactable=group.patient.status == Patient.Status.ACTIVE)
    if new_state is None:
        return
    if sequence is None:
        started = (started_fields(template.id, timezone.now(), actor)
                   if new_state == Sequence.State.ACTIVE else {})
        sequence = Sequence.objects.create(practice=practice, group=group, template=template,
                                           state=new_state, state_reason=why, **started)
        report.counts["sequences_started" if new_state == Sequence.State.ACTIVE
                      else "sequences_paused"] += 1
        action = "sequence.created"
    else:
        Sequence.objects.filter(id=sequence.id).update(state=new_state, state_reason=why,
                                                       updated_at=timezone.now())
        report.counts[f"sequences_{new_state}"] += 1
        action = f"sequence.{new_state}"
    events.record(practice=practice, actor=actor, action=action, patient=group.patient, why=why,
                  detail={"group_id": group.id, "sequence_id": sequence.id, "state": new_state})
