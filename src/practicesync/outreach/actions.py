"""Outreach actions: keyword-only, one transaction, audited. The state machine decides."""

import datetime as dt

from django.db import transaction
from django.utils import timezone

from practicesync.appointments.models import Appointment
from practicesync.audit import events
from practicesync.audit.models import AuditEvent

from .dispatch import STALE_BOOKING
from .models import OptOut, Sequence, StaffTask, Step
from .sequences import Event, booking_event, ending_problem, transition
from .window import check_window
from .wording import text_problems


class NotAllowed(ValueError):
    """The event does not apply to the sequence in its current state."""


def first_due(template_id: int, now: dt.datetime, position: int = 1) -> dt.datetime | None:
    step = Step.objects.filter(template_id=template_id, position=position).first()
    return now + step.delay if step else now


def started_fields(template_id: int, now: dt.datetime, actor: str) -> dict:
    """A sequence that becomes active from its first step."""
    return {"next_position": 1, "due_at": first_due(template_id, now), "started_at": now,
            "started_by": actor}


def _apply(sequence: Sequence, event: Event, *, actor: str, now, why: str = "") -> Sequence:
    new_state, reason = transition(sequence.state, event)
    if new_state is None:
        raise NotAllowed(f"cannot {event} a sequence that is {sequence.state}")
    fields = {"state": new_state, "state_reason": why or reason, "updated_at": now}
    if event in (Event.START, Event.RESTART) and (event == Event.RESTART or not sequence.started_at):
        fields |= started_fields(sequence.template_id, now, actor)
        if event == Event.RESTART:
            fields["round"] = sequence.round + 1
    elif new_state == Sequence.State.ACTIVE:
        # Resumed: the step that was due goes when it was due, or now if that has passed.
        fields["due_at"] = max(sequence.due_at or now, now)
    elif new_state not in Sequence.LIVE:
        fields["due_at"] = None
    Sequence.objects.filter(id=sequence.id, state=sequence.state).update(**fields)
    for k, v in fields.items():
        setattr(sequence, k, v)
    events.record(practice=sequence.practice, actor=actor, action=f"sequence.{new_state}",
                  why=fields["state_reason"], patient=sequence.group.patient, at=now,
                  detail={"sequence_id": sequence.id, "group_id": sequence.group_id,
                          "event": str(event), "state": new_state})
    return sequence


@transaction.atomic
def change_sequence(*, actor: str, sequence: Sequence, event: Event, now=None) -> Sequence:
    """Staff press Start, Pause, Cancel or Restart."""
    sequence = Sequence.objects.select_for_update().select_related("group__patient", "practice") \
        .get(id=sequence.id)
    return _apply(sequence, event, actor=actor, now=now or timezone.now())


def refresh_bookings(*, practice, patient_ids, actor: str, now=None, sync_run=None) -> int:
    """Pause on Booking: re-read these patients' appointments as a whole and pause, resume
    or complete their running sequences. In the caller's transaction; returns changes."""
    now = now or timezone.now()
    running = list(Sequence.objects.filter(
        practice=practice, group__patient_id__in=patient_ids, template__pause_on_booking=True,
        state__in=(Sequence.State.ACTIVE, Sequence.State.PAUSED_BOOKING))
        .select_related("group__patient", "practice"))
    if not running:
        return 0
    appointments = {}
    for patient_id, starts_at, status in Appointment.objects.filter(
            practice=practice, patient_id__in={s.group.patient_id for s in running}) \
            .values_list("patient_id", "starts_at", "status"):
        appointments.setdefault(patient_id, []).append((starts_at, status))
    changed = 0
    for sequence in running:
        event = booking_event(appointments.get(sequence.group.patient_id, []),
                              since=sequence.started_at or sequence.created_at, now=now,
                              stale_after=STALE_BOOKING)
        if transition(sequence.state, event)[0] is not None:
            _apply(sequence, event, actor=actor, now=now)
            changed += 1
    return changed


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
        state=Sequence.State.CANCELLED, state_reason=why, due_at=None, updated_at=now)
    AuditEvent.objects.bulk_create([
        AuditEvent(practice=practice, at=now, actor=actor, action="sequence.cancelled", why=why,
                   patient_id=patient_id, sync_run=sync_run,
                   detail={"sequence_id": sequence_id, "group_id": group_id})
        for sequence_id, group_id, patient_id in live])
    return len(live)


class TextRejected(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@transaction.atomic
def save_step(*, actor: str, template, position: int, channel: str, delay: dt.timedelta,
              body: str, subject: str = "", condition: str = "") -> Step:
    """Add or replace one step of a Results template, after the text check (no result
    details in SMS/push, known placeholders only)."""
    if problems := text_problems(channel, body, subject):
        raise TextRejected(problems)
    channels = list(template.steps.order_by("position").values_list("channel", flat=True))
    if position < 1 or position > len(channels) + 1:
        raise ValueError(f"position {position}: steps are numbered 1 to {len(channels) + 1}")
    channels[position - 1:position] = [channel]
    if problem := ending_problem(channels):
        raise ValueError(problem)
    step, created = Step.objects.update_or_create(
        template=template, position=position,
        defaults={"channel": channel, "delay": delay, "body": body, "subject": subject,
                  "condition": condition})
    events.record(practice=template.practice, actor=actor,
                  action="template.step_added" if created else "template.step_changed",
                  why=f"{template.name} step {position}",
                  detail={"template_id": template.id, "position": position, "channel": channel,
                          "delay_seconds": delay.total_seconds(), "condition": condition,
                          "body": body, "subject": subject})
    return step


@transaction.atomic
def remove_step(*, actor: str, template, position: int) -> None:
    """Remove one step of a Results template; the later steps move up one. Refused while a
    follow-up is past that step: its sent steps are keyed by position, so renumbering
    would make it skip a step or take one it has taken already."""
    steps = list(Step.objects.select_for_update().filter(template=template).order_by("position"))
    removed = next((s for s in steps if s.position == position), None)
    if removed is None:
        raise ValueError(f"{template.name} has no step {position}")
    if problem := ending_problem([s.channel for s in steps if s is not removed]):
        raise ValueError(problem)
    past = Sequence.objects.filter(template=template, state__in=Sequence.LIVE,
                                   next_position__gt=position).count()
    if past:
        raise ValueError(f"{past} running follow-up(s) are past step {position}; remove it once "
                         f"they have finished")
    removed.delete()
    # One row at a time, lowest first: the unique (template, position) holds at every step.
    for step in (s for s in steps if s.position > position):
        step.position -= 1
        step.save(update_fields=["position"])
    events.record(practice=template.practice, actor=actor, action="template.step_removed",
                  why=f"{template.name} step {position}",
                  detail={"template_id": template.id, "position": position,
                          "channel": removed.channel, "body": removed.body,
                          "subject": removed.subject})


@transaction.atomic
def mark_task_done(*, actor: str, task: StaffTask, note: str = "") -> StaffTask:
    """Staff did the call, sent the letter, or checked the send."""
    task = StaffTask.objects.select_for_update().select_related("practice", "patient").get(id=task.id)
    if task.status == StaffTask.Status.OPEN:
        task.status, task.done_by, task.done_at = StaffTask.Status.DONE, actor, timezone.now()
        task.save(update_fields=["status", "done_by", "done_at"])
        events.record(practice=task.practice, actor=actor, action="task.done", patient=task.patient,
                      why=note or task.get_kind_display(),
                      detail={"task_id": task.id, "kind": task.kind, "group_id": task.group_id})
    return task


POLICY_FIELDS = ("send_days", "send_from", "send_until", "sends_per_hour", "min_age_sms",
                 "teen_until", "stop_all", "booking_url", "video_base_url")


@transaction.atomic
def set_outreach_policy(*, actor: str, practice, why: str = "", **changes):
    """The practice's send window, rate limit, age rules, stop-all switch and links
    (DESIGN.md section 4). The window may never reach into the quiet hours. `why` is staff's
    reason (the settings page asks for one to stop or resume all sending)."""
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise ValueError(f"not an outreach setting: {', '.join(sorted(unknown))}")
    practice = type(practice).objects.select_for_update().get(id=practice.id)
    changes = {k: v for k, v in changes.items() if v is not None and getattr(practice, k) != v}
    after = {k: changes.get(k, getattr(practice, k)) for k in ("send_days", "send_from", "send_until")}
    check_window(after["send_days"], after["send_from"], after["send_until"])
    if changes.get("teen_until", practice.teen_until) < changes.get("min_age_sms", practice.min_age_sms):
        raise ValueError("teen_until must not be below min_age_sms")
    if not changes:
        return practice
    before = {k: str(getattr(practice, k)) for k in changes}
    for name, value in changes.items():
        setattr(practice, name, value)
    practice.save(update_fields=list(changes))
    events.record(practice=practice, actor=actor, action="practice.outreach_policy_changed",
                  why=why[:200] or ", ".join(sorted(changes)),
                  detail={k: {"old": before[k], "new": str(v)} for k, v in changes.items()})
    return practice


@transaction.atomic
def record_opt_out(*, actor: str, patient, channel: str, undo: bool = False) -> str:
    """A patient asked staff to stop (or start again) messages on one channel: kept for the
    address, as a STOP reply would be. Returns the address."""
    address = {"sms": patient.mobile_phone, "email": patient.email}.get(channel)
    if not address:
        raise ValueError(f"patient has no {channel} address to opt out")
    if undo:
        found = OptOut.objects.filter(practice=patient.practice, channel=channel, address=address)
        if found.exclude(source__startswith="staff:").exists():
            raise ValueError(f"the patient opted out of {channel} themselves (a STOP reply); "
                             f"only their own START reply lifts it")
        changed = found.delete()[0] > 0
    else:
        changed = OptOut.objects.get_or_create(practice=patient.practice, channel=channel,
                                               address=address,
                                               defaults={"source": f"staff: {actor}"})[1]
    if changed:
        events.record(practice=patient.practice, actor=actor, patient=patient,
                      action="patient.opted_in" if undo else "patient.opted_out",
                      why=f"{channel}, asked staff", detail={"channel": channel})
    return address
