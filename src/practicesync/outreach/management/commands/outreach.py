import datetime as dt

from django.core.management.base import BaseCommand

from practicesync.cli import FAILED, OK, cli_actor, exit_with, practice_arg, print_json, usage_error
from practicesync.outreach.actions import (
    POLICY_FIELDS,
    NotAllowed,
    TextRejected,
    change_sequence,
    mark_task_done,
    record_opt_out,
    save_step,
    set_outreach_policy,
)
from practicesync.outreach.dispatch import tick
from practicesync.outreach.models import Channel, Sequence, StaffTask, Step
from practicesync.outreach.sequences import Event
from practicesync.outreach.window import BadWindow
from practicesync.outreach.wording import sms_length
from practicesync.patients.models import Patient
from practicesync.results.models import ResultsTemplate

STAFF_EVENTS = {"start": Event.START, "pause": Event.PAUSE, "cancel": Event.CANCEL,
                "restart": Event.RESTART}


def _clock(text: str) -> dt.time:
    try:
        return dt.time.fromisoformat(text)
    except ValueError:
        raise usage_error(f"{text!r} is not a time (HH:MM)") from None


def _when(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise usage_error(f"--now {text!r}: use ISO 8601, e.g. 2026-11-23T10:00:00+00:00") from None
    if value.tzinfo is None:
        raise usage_error(f"--now {text!r}: give the UTC offset, e.g. +00:00")
    return value


class Command(BaseCommand):
    help = "Results follow-up sequences: Start, Pause, Cancel, Restart; run due work; edit steps."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        for name, what in (("start", "start a paused sequence (To action – Paused)"),
                           ("pause", "pause a running sequence"),
                           ("cancel", "cancel a sequence: nothing more goes out"),
                           ("restart", "restart a finished sequence from its first step")):
            p = sub.add_parser(name, help=what)
            p.add_argument("--practice", required=True)
            p.add_argument("--group", required=True, type=int, help="the result group's id")
            p.add_argument("--json", action="store_true")

        t = sub.add_parser("tick", help="one pass of due work (steps, retries, sends)")
        t.add_argument("--now", type=_when, help="as if it were this time (ISO 8601 with offset)")
        t.add_argument("--practice", help="only this practice")
        t.add_argument("--json", action="store_true")

        tasks = sub.add_parser("tasks", help="staff tasks: calls, letters, sends to check")
        tasks.add_argument("--practice", required=True)
        tasks.add_argument("--all", action="store_true", help="done ones too")
        tasks.add_argument("--json", action="store_true")

        done = sub.add_parser("task-done", help="mark a staff task done")
        done.add_argument("--practice", required=True)
        done.add_argument("--task", required=True, type=int)
        done.add_argument("--note", default="")
        done.add_argument("--json", action="store_true")

        policy = sub.add_parser("policy", help="show or change the practice's send window, "
                                               "rate limit, age rules, stop-all and links")
        policy.add_argument("--practice", required=True)
        policy.add_argument("--send-days", help="ISO weekdays, e.g. 12345 for Mon-Fri")
        policy.add_argument("--send-from", type=_clock, help="HH:MM practice time (not before 08:00)")
        policy.add_argument("--send-until", type=_clock, help="HH:MM practice time (not after 20:00)")
        policy.add_argument("--sends-per-hour", type=int)
        policy.add_argument("--min-age-sms", type=int, help="no SMS or push below this age")
        policy.add_argument("--teen-until", type=int, help="generic wording up to this age")
        policy.add_argument("--stop-all", choices=["on", "off"], help="the global stop switch")
        policy.add_argument("--booking-url")
        policy.add_argument("--video-base-url")
        policy.add_argument("--json", action="store_true")

        opt = sub.add_parser("opt-out", help="a patient asked to stop messages on a channel")
        opt.add_argument("--practice", required=True)
        opt.add_argument("--patient", required=True, help="the patient's PMS id")
        opt.add_argument("--channel", required=True, choices=["sms", "email"])
        opt.add_argument("--undo", action="store_true", help="they want them again")
        opt.add_argument("--json", action="store_true")

        steps = sub.add_parser("steps", help="show a Results template's steps")
        steps.add_argument("--practice", required=True)
        steps.add_argument("--action-key", required=True)
        steps.add_argument("--json", action="store_true")

        step = sub.add_parser("step", help="add or replace a template step (text is checked)")
        step.add_argument("--practice", required=True)
        step.add_argument("--action-key", required=True)
        step.add_argument("--position", required=True, type=int)
        step.add_argument("--channel", required=True, choices=Channel.values)
        step.add_argument("--delay-days", required=True, type=float,
                          help="days after the previous step (the first: after Start)")
        step.add_argument("--body", required=True)
        step.add_argument("--subject", default="")
        step.add_argument("--condition", default="", choices=["", "not_booked"])
        step.add_argument("--json", action="store_true")

    def tasks(self, *, practice, all, json, **_):
        found = StaffTask.objects.filter(practice=practice_arg(practice)).select_related("patient")
        if not all:
            found = found.filter(status=StaffTask.Status.OPEN)
        rows = [{"id": t.id, "pms_id": t.patient.pms_id, "kind": t.kind, "reason": t.reason,
                 "status": t.status, "group_id": t.group_id, "message_id": t.message_id,
                 "created_at": t.created_at, "done_by": t.done_by or None, "done_at": t.done_at}
                for t in found.order_by("created_at", "id")]
        if json:
            print_json(self, {"tasks": rows})
            return
        for r in rows:
            self.stdout.write(f"{r['id']}. [{r['status']}] {r['kind']} {r['pms_id']}: {r['reason']}")
        if not rows:
            self.stdout.write("no open staff tasks")

    def task_done(self, *, practice, task, note, json, **_):
        found = StaffTask.objects.filter(practice=practice_arg(practice), id=task).first()
        if found is None:
            raise usage_error(f"no staff task {task} at {practice}")
        found = mark_task_done(actor=cli_actor(), task=found, note=note)
        if json:
            print_json(self, {"id": found.id, "status": found.status, "done_by": found.done_by,
                              "done_at": found.done_at})
        else:
            self.stdout.write(f"task {found.id} done by {found.done_by}")

    def policy(self, *, practice, json, stop_all, **opts):
        changes = {k: opts[k] for k in POLICY_FIELDS if k != "stop_all"}
        changes["stop_all"] = None if stop_all is None else stop_all == "on"
        try:
            found = set_outreach_policy(actor=cli_actor(), practice=practice_arg(practice),
                                        **changes)
        except (BadWindow, ValueError) as e:
            raise usage_error(str(e)) from e
        data = {k: getattr(found, k) for k in POLICY_FIELDS} | {"timezone": found.timezone}
        if json:
            print_json(self, data)
        else:
            for k, v in data.items():
                self.stdout.write(f"{k.replace('_', ' ')}: {v}")

    def opt_out(self, *, practice, patient, channel, undo, json, **_):
        found = Patient.objects.filter(practice=practice_arg(practice), pms_id=patient).first()
        if found is None:
            raise usage_error(f"no patient {patient} at {practice}")
        try:
            record_opt_out(actor=cli_actor(), patient=found, channel=channel, undo=undo)
        except ValueError as e:
            raise usage_error(str(e)) from e
        data = {"pms_id": patient, "channel": channel, "opted_out": not undo}
        if json:
            print_json(self, data)
        else:
            self.stdout.write(f"{patient}: {channel} {'back on' if undo else 'opted out'}")

    def handle(self, *args, action, **opts):
        if action in STAFF_EVENTS:
            return self.change(event=STAFF_EVENTS[action], **opts)
        getattr(self, action.replace("-", "_"))(**opts)

    def change(self, *, practice, group, json, event, **_):
        sequence = Sequence.objects.filter(practice=practice_arg(practice), group_id=group).first()
        if sequence is None:
            raise usage_error(f"group {group} at {practice} has no sequence")
        try:
            sequence = change_sequence(actor=cli_actor(), sequence=sequence, event=event)
        except NotAllowed as e:
            raise usage_error(str(e)) from e
        data = {"group_id": group, "sequence_id": sequence.id, "state": sequence.state,
                "reason": sequence.state_reason, "next_step": sequence.next_position,
                "due_at": sequence.due_at}
        if json:
            print_json(self, data)
        else:
            self.stdout.write(f"group {group}: {sequence.state} ({sequence.state_reason})")

    def tick(self, *, now, practice, json, **_):
        report = tick(now=now, practice=practice_arg(practice) if practice else None)
        data = report.as_json()
        if json:
            print_json(self, data)
        else:
            self.stdout.write(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in data.items() if v)
                              or "nothing due")
        exit_with(FAILED if data["practices_failed"] else OK)

    def _template(self, practice, action_key) -> ResultsTemplate:
        found = ResultsTemplate.objects.filter(practice=practice_arg(practice),
                                               action_key=action_key).first()
        if found is None:
            raise usage_error(f"no Results template for {action_key!r} at {practice}")
        return found

    def steps(self, *, practice, action_key, json, **_):
        template = self._template(practice, action_key)
        rows = [_step_json(s) for s in template.steps.all()]
        if json:
            print_json(self, {"template": template.name, "auto_start": template.auto_start,
                              "pause_on_booking": template.pause_on_booking, "steps": rows})
            return
        self.stdout.write(f"{template.name} (auto-start {'on' if template.auto_start else 'off'}, "
                          f"pause on booking {'on' if template.pause_on_booking else 'off'})")
        for r in rows:
            size = f" [{r['sms']['segments']} SMS, {r['sms']['characters']} chars]" if r["sms"] else ""
            when = f"+{r['delay_days']:g}d"
            only = " only if not booked" if r["condition"] else ""
            self.stdout.write(f"{r['position']}. {when} {r['channel']}{only}{size}: {r['body']}")

    def step(self, *, practice, action_key, position, channel, delay_days, body, subject,
             condition, json, **_):
        template = self._template(practice, action_key)
        try:
            step = save_step(actor=cli_actor(), template=template, position=position,
                             channel=channel, delay=dt.timedelta(days=delay_days), body=body,
                             subject=subject, condition=condition)
        except (TextRejected, ValueError) as e:
            raise usage_error(f"step {position} not saved: {e}") from e
        data = _step_json(step)
        if json:
            print_json(self, data)
        else:
            self.stdout.write(f"step {position} saved")


def _step_json(step: Step) -> dict:
    length = sms_length(step.body) if step.channel == Channel.SMS else None
    return {"position": step.position, "channel": step.channel,
            "delay_days": step.delay.total_seconds() / 86400, "condition": step.condition,
            "subject": step.subject, "body": step.body,
            "sms": length and {"encoding": length.encoding, "characters": length.characters,
                               "segments": length.segments}}
