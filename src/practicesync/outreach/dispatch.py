"""The worker's pass over due outreach work, with the database as the work queue.

1. Due sequences take their next step: a message row (idempotency key
   `results:<sequence>:<step>`), a staff task, or a recorded skip; the sequence moves on in
   the same transaction, claimed with a conditional UPDATE so two workers never take one step.
   Within the hourly budget the message is recorded already claimed (step 2) and sent once
   the transaction commits; beyond it, it waits queued.
2. Queued messages are claimed (status sending, a lease) and only then handed to the
   provider; the outcome is written after. A worker killed in between leaves `sending` rows
   whose lease runs out: the provider is asked which keys it has (sent), the rest go out
   again; a provider that cannot say puts a "check whether it went" task in front of staff.
   A lease runs from the moment of its claim, however long the pass has run, and no
   provider is called for a claim older than SEND_WITHIN: what is left goes back to the
   queue, so another worker's recovery never takes a send this worker may still make.
Deciding is done by sequences.py, recipients.py and window.py; this module applies.
"""

import datetime as dt
import logging
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Max
from django.db.models.functions import Greatest
from django.utils import timezone

from practicesync.appointments.models import Appointment
from practicesync.audit.models import AuditEvent
from practicesync.bulk import allocate_ids, insert_rows
from practicesync.patients.models import Patient, ReviewItem, SyncRun
from practicesync.practices.models import Practice
from practicesync.results.models import ResultsTemplate

from .channels import Outcome, provider_for
from .models import Message, OptOut, PushSubscription, Sequence, StaffTask, Step
from .recipients import Plan, Policy, Recipient, plan_step
from .sequences import Event, message_verdict, transition
from .window import next_send_time
from .wording import DEFAULT_SUBJECT, GENERIC_SMS, render

log = logging.getLogger(__name__)

WORKER = "system:worker"
BATCH = 10_000
# A claimed send not finished within this time is taken to have been interrupted.
LEASE = dt.timedelta(minutes=5)
# No provider call starts on a claim older than this: with the providers' 30 s timeouts, a
# claim's last send has its outcome written well inside the lease.
SEND_WITHIN = LEASE / 2
MAX_ATTEMPTS = 5
# A message whose follow-up is paused is looked at again after this.
HOLD_RECHECK = dt.timedelta(minutes=15)
# A booking that has passed without being marked attended stops pausing after this.
STALE_BOOKING = dt.timedelta(days=1)


def backoff(attempts: int) -> dt.timedelta:
    """1, 4, 16, 64 minutes... after the 1st, 2nd, 3rd, 4th failed attempt."""
    return dt.timedelta(minutes=4 ** max(attempts - 1, 0))


@dataclass
class TickReport:
    counts: Counter = field(default_factory=Counter)
    # The pass's `now` is fixed when it starts (decisions agree with each other); a lease is
    # counted from the claim, or a claim late in a long pass would start already run out.
    started: float = field(default_factory=lambda: time.monotonic())  # read late: tests move it

    def lease(self, now: dt.datetime) -> "Lease":
        """The lease of a claim made at this moment of the pass that began at `now`."""
        taken = time.monotonic()
        return Lease(until=now + LEASE + dt.timedelta(seconds=taken - self.started), taken=taken)

    def as_json(self) -> dict:
        keys = ("practices_failed", "bookings_rechecked", "steps_taken", "messages_queued",
                "tasks_created", "skipped", "sequences_paused_booking", "sequences_completed",
                "sequences_opted_out", "sequences_failed", "sent", "retried", "failed",
                "uncertain", "fallbacks", "skipped_before_send", "recovered_sent",
                "recovered_requeued", "recovered_unknown", "held_by_window", "held_by_pause",
                "held_by_rate_limit", "held_by_stale_sync")
        return {k: self.counts[k] for k in keys}


@dataclass(frozen=True)
class Lease:
    """Until when other workers leave a claim's messages alone (`until`, kept in their
    not_before), and when it was taken on this process's clock."""
    until: dt.datetime
    taken: float

    def may_send(self) -> bool:
        return time.monotonic() - self.taken < SEND_WITHIN.total_seconds()


def tick(*, now: dt.datetime | None = None, practice: Practice | None = None) -> TickReport:
    """One pass, practice by practice: re-read bookings of paused follow-ups, take due steps,
    recover interrupted sends, deliver what is due. One practice's failure is put in front of
    its staff and stops nothing at the others."""
    now = now or timezone.now()
    report = TickReport()
    practices = Practice.objects.filter(stop_all=False)
    if practice is not None:
        practices = practices.filter(id=practice.id)
    for p in practices:
        try:
            _practice_pass(p, now=now, report=report)
        except Exception as e:  # noqa: BLE001 - isolate the practice, report it, go on
            _practice_failed(p, e, now=now, report=report)
    return report


def _practice_pass(practice: Practice, *, now, report: TickReport) -> None:
    with transaction.atomic():
        refresh_paused_bookings(practice, now=now, report=report)
    if next_send_time(now, **window_of(practice)) > now:
        report.counts["held_by_window"] += Sequence.objects.filter(
            practice=practice, state=Sequence.State.ACTIVE, due_at__lte=now).count()
        return
    take_due_steps(practice, now=now, report=report)
    recover_interrupted_sends(now=now, report=report, practices=[practice])
    deliver_queued(now=now, report=report, practices=[practice])


def _practice_failed(practice: Practice, error: Exception, *, now, report: TickReport) -> None:
    # Only the practice id and the error's type: its text may quote patient data.
    log.error("outreach tick failed for practice=%s: %s", practice.id, type(error).__name__)
    report.counts["practices_failed"] += 1
    ReviewItem.objects.get_or_create(
        practice=practice, key=f"outreach_failed:{now.date().isoformat()}",
        defaults={"kind": "outreach_failed", "detail": (
            f"The outreach worker could not finish its pass for this practice "
            f"({type(error).__name__}); due messages wait until it can. The worker log has "
            f"the details.")})


def refresh_paused_bookings(practice: Practice, *, now, report: TickReport) -> None:
    """A booking that passes without being marked attended, cancelled or DNA stops pausing
    (STALE_BOOKING): re-read the appointments of every follow-up paused on a booking."""
    from .actions import refresh_bookings  # actions builds on this module

    paused = Sequence.objects.filter(practice=practice, state=Sequence.State.PAUSED_BOOKING) \
        .values_list("group__patient_id", flat=True)
    if patient_ids := set(paused):
        report.counts["bookings_rechecked"] += refresh_bookings(
            practice=practice, patient_ids=patient_ids, actor=WORKER, now=now)


def window_of(practice: Practice) -> dict:
    return {"tz": practice.tz, "days": practice.send_days, "start": practice.send_from,
            "end": practice.send_until}


def _skip_locked(qs):
    # PostgreSQL: several workers share the queue, each skipping rows another holds (and
    # locking only the queue's own rows, not the patients joined in). SQLite serialises
    # writers; the conditional UPDATE after it is the claim there.
    if connection.vendor == "postgresql":
        return qs.select_for_update(skip_locked=True, of=("self",))
    return qs


# --- sending budget and claimed messages ----------------------------------------------

@dataclass(slots=True)
class Outgoing:
    """A claimed message as the providers and the outcome code see it: only what sending
    needs, without building a model instance per message."""

    id: int
    practice_id: int
    patient_id: int
    kind: str
    channel: str
    to: str
    subject: str
    body: str
    idempotency_key: str
    attempts: int
    status: str
    sequence_id: int | None
    group_id: int | None
    step: int | None


OUTGOING_FIELDS = [f for f in Outgoing.__slots__]


def _budget(practice, now) -> tuple[dt.datetime, int]:
    """(this clock hour, sends left in it). Read under the practice row's lock (_locked).
    A worker whose `now` is behind another's never moves the counter back an hour (which
    would start that hour's count again)."""
    hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    if practice.sends_hour is not None and practice.sends_hour > hour:
        hour = practice.sends_hour
    used = practice.sends_in_hour if practice.sends_hour == hour else 0
    return hour, practice.sends_per_hour - used


def _locked(practice: Practice) -> Practice:
    """The practice row, read afresh and locked until the transaction ends (PostgreSQL;
    SQLite has one writer at a time)."""
    fresh = Practice.objects.filter(id=practice.id)
    if connection.vendor == "postgresql":
        # FOR NO KEY UPDATE: two budget readers still wait for each other, but the foreign
        # key checks of another worker's new messages (FOR KEY SHARE on this row) do not.
        fresh = fresh.select_for_update(no_key=True)
    return fresh.get()


# --- 1. due steps -------------------------------------------------------------------------

PATIENT_FIELDS = ("id", "given_name", "date_of_birth", "status", "mobile_phone", "email")


class PracticeFacts:
    """What every recipient decision of one practice needs, read once per pass."""

    def __init__(self, practice: Practice, now: dt.datetime):
        self.practice = practice
        self.policy = Policy(min_age_sms=practice.min_age_sms, teen_until=practice.teen_until)
        self.today = now.astimezone(practice.tz).date()
        self.now = now
        self.has_push = PushSubscription.objects.filter(practice=practice, active=True).exists()
        self.opted_out = set(OptOut.objects.filter(practice=practice)
                             .values_list("channel", "address"))
        self.shared_mobiles = set(
            Patient.objects.filter(practice=practice, status=Patient.Status.ACTIVE,
                                   mobile_phone__isnull=False)
            .values("mobile_phone").annotate(n=Count("id")).filter(n__gt=1)
            .values_list("mobile_phone", flat=True))

    def recipients(self, patient_ids, patients=None,
                   need_booked=True) -> dict[int, tuple[dict, Recipient]]:
        """`patients`: rows with PATIENT_FIELDS when the caller has read them already;
        `need_booked`: whether bookings matter for the steps at hand (Pause on Booking, or a
        step "only if not yet booked")."""
        if patients is None:
            patients = Patient.objects.filter(id__among=patient_ids).values(*PATIENT_FIELDS)
        patients = {p["id"]: p for p in patients}
        push = {}
        if self.has_push:
            push = dict(PushSubscription.objects.filter(patient_id__among=patient_ids, active=True)
                        .order_by("patient_id", "-created_at").values_list("patient_id", "endpoint"))
        booked = set()
        if need_booked:
            booked = set(Appointment.objects.filter(
                patient_id__among=patient_ids, status=Appointment.Status.BOOKED,
                starts_at__gte=self.now - STALE_BOOKING).values_list("patient_id", flat=True))
        out = {}
        for pid, p in patients.items():
            opted_out = frozenset()
            if self.opted_out:
                addresses = {"sms": p["mobile_phone"], "email": p["email"], "push": push.get(pid)}
                opted_out = frozenset(c for c, a in addresses.items()
                                      if a and (c, a) in self.opted_out)
            out[pid] = (p, Recipient(
                status=p["status"], age=_age(p["date_of_birth"], self.today),
                mobile=p["mobile_phone"], email=p["email"], push=push.get(pid),
                opted_out=opted_out,
                shared_mobile=p["mobile_phone"] in self.shared_mobiles,
                booked=pid in booked))
        return out

    def text(self, step: Step | None, plan: Plan, patient: dict) -> str:
        # An email step's text may say more than an SMS or push may: falling back to those,
        # only the generic wording goes.
        short = ("sms", "push")
        generic = plan.generic or step is None or (plan.channel in short and step.channel not in short)
        body = GENERIC_SMS if generic else step.body
        return self._render(body, patient)

    def subject(self, step: Step | None, patient: dict) -> str:
        return self._render(step.subject if step and step.subject else DEFAULT_SUBJECT, patient)

    def _render(self, text: str, patient: dict) -> str:
        return render(text, first_name=patient["given_name"], practice_name=self.practice.name,
                      booking_link=self.practice.booking_url)


def _age(born: dt.date, today: dt.date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def steps_of(template_ids) -> dict[int, dict[int, Step]]:
    steps = defaultdict(dict)
    for step in Step.objects.filter(template_id__in=template_ids):
        steps[step.template_id][step.position] = step
    return steps


class StepTakenElsewhere(Exception):
    pass


def take_due_steps(practice: Practice, *, now: dt.datetime, report: TickReport) -> None:
    with _Sender(practice, report) as sender:
        _take_due_steps(practice, now=now, report=report, sender=sender)


class _Sender:
    """Delivers each batch's claimed messages. On PostgreSQL in a thread of its own (its own
    connection), while the next batch is being decided: half of a batch's time is waiting
    for the server, which the other thread can use. One batch at a time, in order; the next
    waits for the one before, so at most one batch of messages is held in memory. SQLite has
    one writer: there the batch is delivered in line, as it is inside a caller's transaction
    (another connection would not see the batch)."""

    def __init__(self, practice: Practice, report: TickReport):
        self.practice, self.report, self.pending = practice, report, None
        self.threaded = connection.vendor == "postgresql" and not connection.in_atomic_block

    def __enter__(self):
        if self.threaded:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tick-send")
        return self

    def send(self, claimed: list[Outgoing], lease: Lease, now) -> None:
        """Hand a batch over (after ready())."""
        if not self.threaded:
            _deliver(self.practice, claimed, lease, now=now, report=self.report)
            return
        self.pending = self.pool.submit(self._deliver_in_thread, claimed, lease, now)

    def ready(self) -> None:
        """Wait for the batch before to be delivered; raise what its delivery raised."""
        if self.threaded:
            self.wait()

    def _deliver_in_thread(self, claimed, lease, now) -> Counter:
        own = TickReport()
        try:
            _deliver(self.practice, claimed, lease, now=now, report=own)
        finally:
            connection.close()  # this thread's own connection
        return own.counts

    def raise_if_failed(self) -> None:
        if self.pending is not None and self.pending.done():
            self.wait()

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.report.counts.update(pending.result())  # raises what the thread raised

    def __exit__(self, *exc) -> None:
        if self.threaded:
            try:
                self.wait()
            finally:
                self.pool.shutdown(wait=True)


def _take_due_steps(practice: Practice, *, now, report: TickReport, sender: _Sender) -> None:
    facts = PracticeFacts(practice, now)
    while True:
        # The batch's share of the hourly budget is taken first, in a transaction of its
        # own, and what it did not use given back after: two workers never wait for each
        # other's batch to commit, and a crash in between only leaves fewer sends this hour.
        due_now = Sequence.objects.filter(practice=practice, state=Sequence.State.ACTIVE,
                                          due_at__lte=now)
        pending = due_now.values("id")[:BATCH].count()
        if not pending:
            return  # an idle pass writes nothing
        sender.raise_if_failed()  # a batch that failed to go stops the pass before the next
        allowance = reserve_sends(practice, now, pending)
        committed = False
        try:
            with transaction.atomic():
                due = list(_skip_locked(due_now.order_by("due_at", "id"))
                    .values_list(*SEQUENCE_FIELDS, *(f"group__patient__{f}" for f in PATIENT_FIELDS))
                    [:BATCH])
                if not due:
                    return
                batch, lease = TickReport(), report.lease(now)
                claimed = _take_steps(facts, due, now=now, report=batch, allowance=allowance,
                                      lease=lease.until)
            committed = True
        except StepTakenElsewhere:
            continue  # another worker moved some of these first; what is left is retaken
        finally:
            if not committed:
                give_back_sends(practice, now, allowance)
        try:
            give_back_sends(practice, now, allowance - len(claimed))
            report.counts.update(batch.counts)
            sender.ready()  # raises what the batch before raised
        except BaseException:
            # Claimed but not yet handed to a provider: queued again rather than left for
            # the lease to run out (where a provider that cannot look up leaves it unknown).
            _unclaim(practice, claimed, lease, now)
            raise
        sender.send(claimed, lease, now)  # from here on, the batch may be with the provider


def _unclaim(practice: Practice, claimed: list[Outgoing], lease: Lease, now) -> None:
    """Claimed messages that were not handed to a provider go back to the queue: only while
    they are still this claim's (its lease), never another worker's claim of them."""
    if claimed:
        returned = Message.objects.filter(
            id__among=[m.id for m in claimed], status=Message.Status.SENDING,
            not_before=lease.until).update(
            status=Message.Status.QUEUED, not_before=now, attempts=F("attempts") - 1)
        give_back_sends(practice, now, returned)


SEQUENCE_FIELDS = ("id", "group_id", "template_id", "next_position", "round")


def round_of(key: str) -> int:
    """The round a results message belongs to, from its key (a fallback's key starts with
    the key of the message it replaces)."""
    match = _ROUND.search(key)
    return int(match.group(1)) if match else 1


_ROUND = re.compile(r"^results:\d+:\d+:r(\d+)")


def step_key(sequence_id: int, position: int, round_: int = 1) -> str:
    """One key per step of one round of a sequence: however often a worker retries it, the
    step is one message (or one task)."""
    return f"results:{sequence_id}:{position}" + (f":r{round_}" if round_ > 1 else "")


def _take_steps(facts: PracticeFacts, rows: list[tuple], *, now, report, allowance: int,
                lease: dt.datetime) -> list[Outgoing]:
    """rows: SEQUENCE_FIELDS then the patient's PATIENT_FIELDS, per due sequence. Returns
    the new messages this worker claimed for sending as it recorded them (until `lease`), at
    most `allowance` (its share of the hourly budget)."""
    practice = facts.practice
    split = len(SEQUENCE_FIELDS)
    due = [dict(zip(SEQUENCE_FIELDS, r[:split], strict=True), group__patient_id=r[split]) for r in rows]
    steps = steps_of({s["template_id"] for s in due})
    pause_on_booking = set(ResultsTemplate.objects.filter(
        id__in={s["template_id"] for s in due}, pause_on_booking=True).values_list("id", flat=True))
    need_booked = bool(pause_on_booking) or any(
        steps[s["template_id"]].get(s["next_position"]) is not None
        and steps[s["template_id"]][s["next_position"]].condition for s in due)
    recipients = facts.recipients({s["group__patient_id"] for s in due}, need_booked=need_booked,
                                  patients=[dict(zip(PATIENT_FIELDS, r[split:], strict=True))
                                            for r in rows])
    messages, tasks, events = [], [], []
    # (state, next_position, due_at, reason) -> [(sequence id, position it was at)]
    moves = defaultdict(list)
    for seq in due:
        pos, template_steps = seq["next_position"], steps[seq["template_id"]]
        patient, recipient = recipients[seq["group__patient_id"]]
        step = template_steps.get(pos)
        state, reason = Sequence.State.ACTIVE, ""
        audit = {"sequence_id": seq["id"], "group_id": seq["group_id"], "step": pos}
        if step is None:
            state, reason = transition(state, Event.STEPS_DONE)
        elif recipient.booked and seq["template_id"] in pause_on_booking:
            # Booked before this step came due (the feed may have told us before the
            # follow-up started): Pause on Booking holds the step rather than send it.
            state, reason = transition(state, Event.BOOKED)
        else:
            plan = plan_step(channel=step.channel, condition=step.condition,
                             recipient=recipient, policy=facts.policy)
            key = step_key(seq["id"], pos, seq["round"])
            if plan.action == "send":
                messages.append(message_row(
                    practice_id=practice.id, patient_id=patient["id"], kind=Message.Kind.RESULTS,
                    group_id=seq["group_id"], sequence_id=seq["id"], step=pos,
                    channel=plan.channel, to=plan.to,
                    subject=facts.subject(step, patient) if plan.channel == "email" else "",
                    body=facts.text(step, plan, patient), idempotency_key=key,
                    not_before=now, created_by=WORKER, created_at=now))
                events.append(("message.queued", plan.reason or f"step {pos}", patient["id"],
                               audit | {"channel": plan.channel, "generic": plan.generic,
                                        "key": key}))
                report.counts["messages_queued"] += 1
            elif plan.action == "task":
                tasks.append(StaffTask(
                    practice=practice, patient_id=patient["id"], group_id=seq["group_id"],
                    sequence_id=seq["id"], kind=plan.channel, reason=plan.reason[:300],
                    idempotency_key=key))
                events.append(("task.created", plan.reason, patient["id"],
                               audit | {"kind": plan.channel, "key": key}))
                report.counts["tasks_created"] += 1
                if plan.reason != "template step":
                    # No channel left: one call task, and the sequence says why it ended.
                    state, reason = transition(state, Event.OPTED_OUT if plan.opted_out
                                               else Event.UNREACHABLE)
            else:
                events.append(("message.skipped", plan.reason, patient["id"], audit))
                report.counts["skipped"] += 1
            report.counts["steps_taken"] += 1
            if state == Sequence.State.ACTIVE and pos + 1 not in template_steps:
                state, reason = transition(state, Event.STEPS_DONE)
        if state == Sequence.State.ACTIVE:
            due_at = now + template_steps[pos + 1].delay
            moves[(state, pos + 1, due_at, "")].append((seq["id"], pos))
        else:
            # A step held by a booking was not taken: it is still the next one, due again as
            # soon as the follow-up resumes.
            next_position = pos if state == Sequence.State.PAUSED_BOOKING else pos + 1
            moves[(state, next_position, None, reason)].append((seq["id"], pos))
            events.append((f"sequence.{state}", reason, patient["id"],
                           {"sequence_id": seq["id"], "group_id": seq["group_id"]}))
            report.counts[f"sequences_{state}"] += 1
    for (state, next_position, due_at, reason), claimed in moves.items():
        by_position = defaultdict(list)
        for sequence_id, pos in claimed:
            by_position[pos].append(sequence_id)
        for pos, ids in by_position.items():
            moved = Sequence.objects.filter(id__among=ids, state=Sequence.State.ACTIVE,
                                            next_position=pos).update(
                state=state, next_position=next_position, due_at=due_at,
                state_reason=reason or F("state_reason"), updated_at=now)
            if moved != len(ids):
                raise StepTakenElsewhere  # undo this whole batch: none of it happened

    claimed = _claim_new(messages, lease, allowance)
    insert_rows(Message, messages, MESSAGE_COLUMNS)
    StaffTask.objects.bulk_create(tasks)
    insert_audit(practice.id, now, events)
    return claimed


def _claim_new(messages: list[dict], lease: dt.datetime, allowance: int) -> list[Outgoing]:
    """Messages decided in this transaction are recorded already claimed (status sending,
    the lease), as far as the allowance goes: what _claim and _checked_before_sending would
    do a moment later, minus reading back rows whose patient, address and follow-up this
    transaction has just looked at. The rest wait, queued, for deliver_queued."""
    for message, id_ in zip(messages, allocate_ids(Message, len(messages)), strict=True):
        message["id"] = id_
    claimed = messages[:max(allowance, 0)]
    for message in claimed:
        message.update(status=Message.Status.SENDING, not_before=lease, attempts=1)
    outgoing = itemgetter(*OUTGOING_FIELDS)
    return [Outgoing(*outgoing(message)) for message in claimed]


def reserve_sends(practice: Practice, now, wanted: int) -> int:
    """Up to `wanted` sends of this hour's budget, taken now (committed); 0 when spent."""
    with transaction.atomic():
        practice = _locked(practice)
        hour, left = _budget(practice, now)
        taken = max(min(wanted, left), 0)
        if taken:
            Practice.objects.filter(id=practice.id).update(
                sends_hour=hour, sends_in_hour=practice.sends_per_hour - left + taken)
        return taken


def give_back_sends(practice: Practice, now, unused: int) -> None:
    """Return what a reservation did not use, unless the clock hour (and so the count) has
    moved on meanwhile."""
    if unused > 0:
        hour = _budget(practice, now)[0]
        Practice.objects.filter(id=practice.id, sends_hour=hour).update(
            sends_in_hour=Greatest(F("sends_in_hour") - unused, 0))


# The large writes of a tick go straight to the driver (docs/adr/0006): one queued message
# and one audit event per step, tens of thousands a pass.
MESSAGE_COLUMNS = ["id", "practice_id", "patient_id", "kind", "group_id", "sequence_id", "step",
                   "bulk_id", "channel", "to", "subject", "body", "status", "idempotency_key",
                   "attempts", "not_before", "provider", "provider_ref", "error", "created_by",
                   "created_at", "sent_at", "delivered_at"]
AUDIT_COLUMNS = ["practice_id", "at", "actor", "action", "why", "patient_id", "sync_run_id",
                 "detail"]


def message_row(**fields) -> dict:
    """A queued message as a row for insert_rows: every column, defaults filled in."""
    return {"group_id": None, "sequence_id": None, "step": None, "bulk_id": None, "subject": "",
            "status": Message.Status.QUEUED, "attempts": 0, "provider": "", "provider_ref": "",
            "error": "", "sent_at": None, "delivered_at": None, **fields}


def insert_audit(practice_id: int, now, events, actor: str = WORKER) -> None:
    """events: (action, why, patient id, detail) tuples."""
    insert_rows(AuditEvent, ({"practice_id": practice_id, "at": now, "actor": actor,
                              "action": action, "why": why[:200], "patient_id": patient_id,
                              "sync_run_id": None, "detail": detail}
                             for action, why, patient_id, detail in events), AUDIT_COLUMNS)


# --- 2. interrupted sends ------------------------------------------------------------------

def recover_interrupted_sends(*, now, report, practices) -> None:
    with transaction.atomic():
        # Held while recovering, so two workers never recover (and audit) one send twice.
        stuck = list(_skip_locked(Message.objects.filter(
            status=Message.Status.SENDING, not_before__lt=now, practice__in=practices)))
        by_channel = defaultdict(list)
        for message in stuck:
            by_channel[message.channel].append(message)
        for channel, messages in by_channel.items():
            _recover(channel, messages, now=now, report=report)


def _recover(channel: str, messages: list[Message], *, now, report) -> None:
    provider = provider_for(channel)
    known = provider.lookup([m.idempotency_key for m in messages]) if provider.can_lookup else {}
    for m in messages:
        if m.idempotency_key in known:
            outcome = "recovered_sent"
            _set(m, now, status=Message.Status.SENT, sent_at=now, provider=provider.name,
                 provider_ref=known[m.idempotency_key])
            why = "interrupted send: the provider has it"
        elif provider.can_lookup:
            outcome = "recovered_requeued"
            _set(m, now, status=Message.Status.QUEUED, not_before=now)
            why = "interrupted send: the provider never got it; sending again"
        else:
            outcome = "recovered_unknown"
            _unknown(m, now, "interrupted send; the provider cannot say whether it went")
            report.counts[outcome] += 1
            continue
        _audit_message(m, now, f"message.{outcome}", why)
        report.counts[outcome] += 1


def _unknown(m, now, why: str) -> None:
    """A send that may or may not have gone: never resent by itself; staff check."""
    _set(m, now, status=Message.Status.UNKNOWN, error=why[:500])
    StaffTask.objects.get_or_create(
        idempotency_key=f"check:{m.idempotency_key}", defaults=dict(
            practice_id=m.practice_id, patient_id=m.patient_id, group_id=m.group_id,
            sequence_id=m.sequence_id, message_id=m.id, kind=StaffTask.Kind.CHECK_SEND,
            reason=f"check whether this {m.channel} went out before sending again"))
    _audit_message(m, now, "message.unknown", why)


def _set(message: Message, now, **fields) -> None:
    """Change a claimed message only while it is still in the state this worker saw."""
    Message.objects.filter(id=message.id, status=message.status).update(**fields)
    for k, v in fields.items():
        if hasattr(message, k):
            setattr(message, k, v)


def _audit_message(m: Message, now, action: str, why: str, **detail) -> None:
    AuditEvent.objects.create(
        practice_id=m.practice_id, at=now, actor=WORKER, action=action, why=why[:200],
        patient_id=m.patient_id,
        detail={"message_id": m.id, "channel": m.channel, "kind": m.kind,
                "key": m.idempotency_key, **detail})


# --- 3. delivery ---------------------------------------------------------------------------

def deliver_queued(*, now, report, practices) -> None:
    for practice in practices:
        if next_send_time(now, **window_of(practice)) > now:
            continue  # nothing reaches a patient outside the practice's send window
        hold_bulk = bulk_held(practice, now)
        if hold_bulk:
            report.counts["held_by_stale_sync"] += Message.objects.filter(
                practice=practice, kind=Message.Kind.BULK, status=Message.Status.QUEUED).count()
        while True:
            lease = report.lease(now)
            if not (claimed := _claim(practice, now, BATCH, lease, hold_bulk=hold_bulk)):
                break
            ready = _checked_before_sending(practice, claimed, now=now, report=report)
            if ready and not _deliver(practice, ready, lease, now=now, report=report):
                break  # a claim that ran out before any send: the next pass goes on
        practice.refresh_from_db(fields=["sends_hour", "sends_in_hour"])
        if _budget(practice, now)[1] <= 0:
            report.counts["held_by_rate_limit"] += Message.objects.filter(
                practice=practice, status=Message.Status.QUEUED, not_before__lte=now).count()


class ClaimedElsewhere(Exception):
    pass


def bulk_held(practice: Practice, now) -> bool:
    """Bulk sending fails closed while the practice list may be stale: no full patient sync
    has succeeded within BULK_SYNC_MAX_AGE (DESIGN.md section 2, bulk-send rails)."""
    last = SyncRun.objects.filter(
        practice=practice, kind="patients",
        status__in=[SyncRun.Status.COMPLETED, SyncRun.Status.COMPLETED_WITH_ERRORS],
    ).aggregate(at=Max("finished_at"))["at"]
    return last is None or last < now - settings.PRACTICESYNC_BULK_SYNC_MAX_AGE


def _checked_before_sending(practice, claimed: list[Outgoing], *, now, report) -> list[Outgoing]:
    """The last look before a provider is called: a patient who died or left, or an address
    that opted out, since the message was queued gets nothing. A results step then falls
    back (to another channel, or staff)."""
    status = dict(Patient.objects.filter(id__among={m.patient_id for m in claimed})
                  .values_list("id", "status"))
    refused = set()
    if OptOut.objects.filter(practice=practice).exists():
        refused = set(OptOut.objects.filter(practice=practice,
                                            address__among={m.to for m in claimed})
                      .values_list("channel", "address"))
    verdicts = _verdicts(claimed)
    ready = []
    for m in claimed:
        if verdicts.get(m.id) == "hold":
            # Paused by staff or a booking: the message waits for the follow-up to resume.
            _set(m, now, status=Message.Status.QUEUED, not_before=now + HOLD_RECHECK,
                 attempts=F("attempts") - 1)
            report.counts["held_by_pause"] += 1
            continue
        if status[m.patient_id] != Patient.Status.ACTIVE:
            why = f"patient is {status[m.patient_id]} (checked before sending)"
        elif verdicts.get(m.id) == "stop":
            why = "the follow-up has stopped (notified, booked, cancelled or restarted)"
        elif (m.channel, m.to) in refused:
            why = f"opted out of {m.channel} (checked before sending)"
        else:
            ready.append(m)
            continue
        _set(m, now, status=Message.Status.SKIPPED, error=why)
        _audit_message(m, now, "message.skipped", why)
        report.counts["skipped_before_send"] += 1
        if m.kind == Message.Kind.RESULTS and status[m.patient_id] == Patient.Status.ACTIVE:
            fall_back(m, now=now, report=report)
    return ready


def _verdicts(messages) -> dict[int, str]:
    """Message id -> go / hold / stop (sequences.message_verdict), for results messages."""
    with_sequence = [m for m in messages if m.sequence_id]
    sequences = {sid: rest for sid, *rest in Sequence.objects.filter(
        id__among={m.sequence_id for m in with_sequence})
        .values_list("id", "state", "state_reason", "group__state", "round")}
    verdicts = {}
    for m in with_sequence:
        state, reason, group_state, sequence_round = sequences[m.sequence_id]
        verdicts[m.id] = message_verdict(state, reason, group_done=group_state == "done",
                                         message_round=round_of(m.idempotency_key),
                                         sequence_round=sequence_round)
    return verdicts


def _claim(practice, now, limit, lease: Lease, *, hold_bulk=False) -> list[Outgoing]:
    """Take up to `limit` due messages for this worker: status sending, the `lease` in
    not_before. PostgreSQL: rows another worker holds are skipped. SQLite: a writer that got
    in first makes this transaction fail and the claim is tried again."""
    while True:
        try:
            with transaction.atomic():
                # The practice row holds the hourly budget and is its lock: two workers
                # cannot each spend all of it.
                practice = _locked(practice)
                hour, left = _budget(practice, now)
                limit = min(limit, left)
                if limit <= 0:
                    return []
                due = Message.objects.filter(practice=practice, status=Message.Status.QUEUED,
                                             not_before__lte=now)
                if hold_bulk:
                    due = due.exclude(kind=Message.Kind.BULK)
                claimed = [Outgoing(*row) for row in _skip_locked(due.order_by("not_before", "id"))
                           .values_list(*OUTGOING_FIELDS)[:limit]]
                if not claimed:
                    return []
                taken = Message.objects.filter(
                    id__among=[m.id for m in claimed], status=Message.Status.QUEUED).update(
                    status=Message.Status.SENDING, not_before=lease.until,
                    attempts=F("attempts") + 1)
                if taken != len(claimed):
                    raise ClaimedElsewhere
                Practice.objects.filter(id=practice.id).update(
                    sends_hour=hour, sends_in_hour=practice.sends_per_hour - left + taken)
        except ClaimedElsewhere:
            continue
        for m in claimed:
            m.status, m.attempts = Message.Status.SENDING, m.attempts + 1
        return claimed


def _deliver(practice: Practice, messages: list[Outgoing], lease: Lease, *, now,
             report) -> int:
    """Hand a claim's messages to their providers and write the outcomes. What is not with
    a provider within SEND_WITHIN of the claim is queued again. Returns how many went to a
    provider."""
    by_channel = defaultdict(list)
    for m in messages:
        by_channel[m.channel].append(m)
    chunks = [(provider, claimed[start:start + provider.chunk])
              for provider, claimed in ((provider_for(c), ms) for c, ms in by_channel.items())
              for start in range(0, len(claimed), provider.chunk)]
    handed = 0
    for n, (provider, batch) in enumerate(chunks):
        if not lease.may_send():
            _unclaim(practice, [m for _, rest in chunks[n:] for m in rest], lease, now)
            return handed
        outcomes = {o.message_id: o for o in provider.send_many(batch)}
        handed += len(batch)
        with transaction.atomic():
            _apply_outcomes(batch, outcomes, provider=provider.name, now=now, report=report)
    return handed


def _apply_outcomes(batch, outcomes: dict[int, Outcome], *, provider, now, report) -> None:
    sent = [m for m in batch if outcomes[m.id].ref]
    by_ref = defaultdict(list)  # the outbox gives one ref for all; Twilio one per message
    for m in sent:
        by_ref[outcomes[m.id].ref].append(m.id)
    for ref, ids in by_ref.items():
        Message.objects.filter(id__among=ids, status=Message.Status.SENDING).update(
            status=Message.Status.SENT, sent_at=now, provider=provider, provider_ref=ref)
    for practice_id in {m.practice_id for m in sent}:
        insert_audit(practice_id, now, [
            ("message.sent", f"{m.kind} via {provider}", m.patient_id,
             {"message_id": m.id, "channel": m.channel, "key": m.idempotency_key})
            for m in sent if m.practice_id == practice_id])
    report.counts["sent"] += len(sent)
    for m in batch:
        outcome = outcomes[m.id]
        if outcome.uncertain:
            _unknown(m, now, f"{outcome.uncertain}; not resent (a resend could duplicate)")
            report.counts["uncertain"] += 1
        elif outcome.transient and m.attempts < MAX_ATTEMPTS:
            _set(m, now, status=Message.Status.QUEUED, not_before=now + backoff(m.attempts),
                 error=outcome.transient[:500])
            _audit_message(m, now, "message.retry", outcome.transient, attempts=m.attempts)
            report.counts["retried"] += 1
        elif outcome.transient or outcome.permanent:
            reason = outcome.permanent or f"gave up after {m.attempts} attempts: {outcome.transient}"
            _set(m, now, status=Message.Status.FAILED, error=reason[:500])
            _audit_message(m, now, "message.failed", reason)
            report.counts["failed"] += 1
            if m.kind == Message.Kind.RESULTS:
                fall_back(m, now=now, report=report)


def fall_back(failed: Message | Outgoing, *, now, report) -> None:
    """A results step whose message failed for good goes out on the next channel, or
    becomes a staff call task: a follow-up never ends silently. Unless it has ended: the
    results were marked notified, the patient booked, or staff stopped it."""
    if failed.sequence_id and _verdicts([failed])[failed.id] == "stop":
        _audit_message(failed, now, "message.no_fallback", "the follow-up has stopped")
        return
    tried = set(Message.objects.filter(sequence_id=failed.sequence_id, step=failed.step,
                                       status=Message.Status.FAILED)
                .values_list("channel", flat=True))
    practice = Practice.objects.get(id=failed.practice_id)
    facts = PracticeFacts(practice, now)
    patient, recipient = facts.recipients([failed.patient_id])[failed.patient_id]
    step = Step.objects.filter(template__sequence__id=failed.sequence_id,
                               position=failed.step).first()
    plan = plan_step(channel=failed.channel, condition="", recipient=recipient,
                     policy=facts.policy, exclude=frozenset(tried))
    key = f"{failed.idempotency_key}:after:{failed.channel}"
    report.counts["fallbacks"] += 1
    if plan.action == "send":
        m, created = Message.objects.get_or_create(idempotency_key=key, defaults=dict(
            practice=practice, patient_id=failed.patient_id, kind=failed.kind,
            group_id=failed.group_id, sequence_id=failed.sequence_id, step=failed.step,
            channel=plan.channel, to=plan.to,
            subject=facts.subject(step, patient) if plan.channel == "email" else "",
            body=facts.text(step, plan, patient),
            not_before=now, created_by=WORKER))
        if created:
            _audit_message(m, now, "message.queued", f"{failed.channel} failed; {plan.reason}")
    elif plan.action == "task":
        task, created = StaffTask.objects.get_or_create(idempotency_key=key, defaults=dict(
            practice=practice, patient_id=failed.patient_id, group_id=failed.group_id,
            sequence_id=failed.sequence_id, message_id=failed.id, kind=StaffTask.Kind.CALL,
            reason=f"{failed.channel} failed; {plan.reason}"[:300]))
        if created:
            AuditEvent.objects.create(
                practice=practice, at=now, actor=WORKER, action="task.created",
                why=task.reason[:200], patient_id=failed.patient_id,
                detail={"task_id": task.id, "message_id": failed.id, "kind": task.kind})
