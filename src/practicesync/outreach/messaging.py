"""Ad-hoc messages, video invites and bulk messages (DESIGN.md sections 1 and 4).

Unlike a results follow-up, these go on the channel staff chose or not at all: the decision is
`recipients.plan_direct`, and a refusal names its reason. Actions are keyword-only, run in one
transaction and are audited; they only queue Message rows, which the dispatcher delivers
within the practice's send window and rate limit.
"""

import datetime as dt
import re
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from practicesync.audit import events
from practicesync.audit.models import AuditEvent
from practicesync.patients.models import Patient

from .actions import TextRejected
from .dispatch import PracticeFacts, window_of
from .models import BulkMessage, Message
from .recipients import Plan, Policy, Recipient, plan_direct
from .window import next_send_time
from .wording import DEFAULT_SUBJECT, render, sms_length, text_problems

DIRECT_CHANNELS = ("sms", "email")
BATCH = 1000
# Why a patient gets nothing, in the order a preview lists them.
EXCLUSIONS = ("deceased", "left", "opted_out", "no_address", "under_age")
# Staff's own words (or a video link anyone holding the phone could open) must not go to a
# number that may be a parent's or a family's: generic wording is all such a number may get.
NOT_OWN_MOBILE = "the mobile may not be the patient's own; use email or call"
FILTER_KEYS = ("status", "digital", "has_mobile", "has_email", "age_min", "age_max", "pms_ids",
               "family_name_prefix")


class Refused(ValueError):
    """This patient may not get this message; `reason` says why, `code` for scripts."""

    def __init__(self, reason: str, code: str, problems: list[str] | None = None):
        super().__init__(reason)
        self.reason, self.code, self.problems = reason, code, problems or []


class BadFilter(ValueError):
    pass


class BulkNotAllowed(ValueError):
    pass


# --- pure decisions ------------------------------------------------------------------------

def exclusion(reason: str) -> str:
    """The preview's category for a `plan_direct` skip reason."""
    if reason.startswith("patient is "):
        return reason.removeprefix("patient is ")  # deceased | left
    if reason.startswith("opted out"):
        return "opted_out"
    if reason.startswith("no "):
        return "no_address"
    if reason.startswith("under "):
        return "under_age"
    return "other"


def _readable(reason: str) -> str:
    return "patient has left the practice" if reason == "patient is left" else reason


def direct_decision(*, channel: str, recipient: Recipient, policy: Policy,
                    problems: list[str] | tuple = ()) -> tuple[Plan, Refused | None]:
    """One patient, one staff-written message: the plan, and why not when it may not go."""
    plan = plan_direct(channel=channel, recipient=recipient, policy=policy)
    if plan.action != "send":
        return plan, Refused(_readable(plan.reason), exclusion(plan.reason))
    if channel == "sms" and plan.generic:
        return plan, Refused(NOT_OWN_MOBILE, "not_own_mobile")
    if problems:
        return plan, Refused("the text was refused: " + "; ".join(problems), "text", list(problems))
    return plan, None


_GAP = "\x00"  # where a left-out first name was, until the text is tidied


def tidy_without_name(text: str) -> str:
    """Close the gap a left-out {first_name} leaves: "Hello , ..." -> "Hello, ..."."""
    text = re.sub(rf"(^|\n)[ \t]*{_GAP}[ \t]*[,;:]?[ \t]*", r"\1", text)
    text = re.sub(rf"[ \t]*{_GAP}[ \t]*(?=[,.!?;:)])", "", text)
    return re.sub(rf"[ \t]*{_GAP}", "", text)


def personal_text(text: str, *, first_name: str, generic: bool, practice) -> str:
    """Placeholders filled; a generic recipient's text carries no name at all."""
    rendered = render(text, first_name=_GAP if generic else first_name,
                      practice_name=practice.name, booking_link=practice.booking_url)
    return tidy_without_name(rendered) if generic else rendered


def normalise_filter(raw: dict | None) -> dict:
    """A bulk's recipient filter checked and in one shape (it is stored on the bulk and
    compared). Deceased and left patients are selectable only to be counted as excluded."""
    raw = dict(raw or {})
    if unknown := sorted(set(raw) - set(FILTER_KEYS)):
        raise BadFilter(f"unknown filter {', '.join(unknown)}; use {', '.join(FILTER_KEYS)}")
    out = {}
    status = raw.get("status") or [Patient.Status.ACTIVE]
    status = [status] if isinstance(status, str) else list(status)
    if bad := [s for s in status if s not in Patient.Status.values]:
        raise BadFilter(f"status {', '.join(bad)}: use {', '.join(Patient.Status.values)}")
    out["status"] = sorted(set(status))
    for key in ("digital", "has_mobile", "has_email"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], bool):
                raise BadFilter(f"{key} is true or false")
            out[key] = raw[key]
    for key in ("age_min", "age_max"):
        if raw.get(key) is not None:
            if isinstance(raw[key], bool) or not isinstance(raw[key], int) or raw[key] < 0:
                raise BadFilter(f"{key} is a whole number of years")
            out[key] = raw[key]
    if "age_min" in out and "age_max" in out and out["age_min"] > out["age_max"]:
        raise BadFilter("age_min is above age_max")
    if raw.get("pms_ids"):
        out["pms_ids"] = sorted({str(p) for p in raw["pms_ids"]})
    if raw.get("family_name_prefix"):
        out["family_name_prefix"] = str(raw["family_name_prefix"])
    return out


def _age_ok(age: int, flt: dict) -> bool:
    return flt.get("age_min", 0) <= age <= flt.get("age_max", age)


def _check_channel(channel: str) -> None:
    if channel not in DIRECT_CHANNELS:
        raise ValueError(f"channel {channel!r}: use {' or '.join(DIRECT_CHANNELS)}")


# --- one patient ---------------------------------------------------------------------------

def send_message(*, actor: str, patient: Patient, channel: str, body: str, subject: str = "",
                 now: dt.datetime | None = None) -> Message:
    """Staff's own message to one patient. Raises Refused (recorded as message.refused)."""
    _check_channel(channel)
    return _send_direct(actor=actor, patient=patient, channel=channel, kind=Message.Kind.ADHOC,
                        body=body, subject=subject, problems=text_problems(channel, body, subject),
                        now=now)


def invite_to_video(*, actor: str, patient: Patient, channel: str,
                    now: dt.datetime | None = None) -> Message:
    """A video consultation invite with a room link of its own. Raises Refused."""
    _check_channel(channel)
    practice = patient.practice
    # Unguessable and never reused: the link is the only key to the room.
    link = practice.video_base_url + secrets.token_urlsafe(16)
    body = f"{practice.name} invites you to a video consultation: {link}"
    subject = f"Video consultation with {practice.name}"
    # Fixed text, not placeholders: braces in a practice name or link stay as they are.
    return _send_direct(actor=actor, patient=patient, channel=channel, kind=Message.Kind.VIDEO,
                        body=_literal(body), subject=_literal(subject), problems=[], now=now)


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _send_direct(*, actor, patient, channel, kind, body, subject, problems, now) -> Message:
    now = now or timezone.now()
    practice = patient.practice
    with transaction.atomic():
        facts = PracticeFacts(practice, now)
        row, recipient = facts.recipients([patient.id])[patient.id]
        plan, refused = direct_decision(channel=channel, recipient=recipient, policy=facts.policy,
                                        problems=problems)
        detail = {"channel": channel, "kind": kind}
        if refused is None:
            text = personal_text(body, first_name=row["given_name"], generic=False, practice=practice)
            message = Message.objects.create(
                practice=practice, patient=patient, kind=kind, channel=channel, to=plan.to,
                subject=personal_text(subject or DEFAULT_SUBJECT, first_name=row["given_name"],
                                      generic=False, practice=practice) if channel == "email" else "",
                body=text, idempotency_key=f"{kind}:{uuid.uuid4()}",
                # Staff may press send at any hour; the patient hears from us only in the window.
                not_before=next_send_time(now, **window_of(practice)), created_by=actor)
            events.record(practice=practice, actor=actor, action="message.queued", why=kind,
                          patient=patient, at=now,
                          detail=detail | {"message_id": message.id, "key": message.idempotency_key})
        else:
            events.record(practice=practice, actor=actor, action="message.refused",
                          why=refused.reason[:200], patient=patient, at=now,
                          detail=detail | {"code": refused.code, "problems": refused.problems})
    # Raised after the commit so the refusal stays on the record.
    if refused is not None:
        raise refused
    return message


# --- bulk ----------------------------------------------------------------------------------

def _selection(practice, flt: dict):
    qs = Patient.objects.filter(practice=practice, status__in=flt["status"])
    if "digital" in flt:
        qs = qs.filter(digital=flt["digital"])
    for key, column in (("has_mobile", "mobile_phone"), ("has_email", "email")):
        if key in flt:
            present = Q(**{f"{column}__isnull": False}) & ~Q(**{column: ""})
            qs = qs.filter(present if flt[key] else ~present)
    if "pms_ids" in flt:
        qs = qs.filter(pms_id__in=flt["pms_ids"])
    if "family_name_prefix" in flt:
        qs = qs.filter(family_name__istartswith=flt["family_name_prefix"])
    return qs


def _planned(practice, flt: dict, channel: str, facts: PracticeFacts):
    """(patient row, plan, exclusion or None) for everyone the filter selects, 1,000 at a time."""
    ids = list(_selection(practice, flt).order_by("id").values_list("id", flat=True))
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        recipients = facts.recipients(chunk)
        for pid in chunk:
            row, recipient = recipients[pid]
            if not _age_ok(recipient.age, flt):
                continue
            plan = plan_direct(channel=channel, recipient=recipient, policy=facts.policy)
            yield row, plan, None if plan.action == "send" else exclusion(plan.reason)


@dataclass
class _Lengths:
    encoding: str = "GSM-7"
    characters: int = 0
    segments: int = 0
    total_segments: int = 0

    def add(self, text: str) -> None:
        length = sms_length(text)
        if length.encoding != "GSM-7":
            self.encoding = length.encoding
        self.characters = max(self.characters, length.characters)
        self.segments = max(self.segments, length.segments)
        self.total_segments += length.segments


@dataclass
class Preview:
    channel: str
    recipients: int = 0
    generic: int = 0
    excluded: Counter = field(default_factory=Counter)
    sample: str | None = None
    sample_subject: str | None = None
    sample_generic: str | None = None
    sms: _Lengths | None = None
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"channel": self.channel, "recipients": self.recipients, "generic": self.generic,
                "excluded": {k: self.excluded[k] for k in (*EXCLUSIONS, *sorted(
                    set(self.excluded) - set(EXCLUSIONS)))},
                "excluded_total": sum(self.excluded.values()), "sample": self.sample,
                "sample_subject": self.sample_subject, "sample_generic": self.sample_generic,
                "sms": self.sms and {"encoding": self.sms.encoding,
                                     "characters": self.sms.characters,
                                     "segments": self.sms.segments,
                                     "total_segments": self.sms.total_segments},
                "problems": self.problems}


def preview_bulk(*, practice, recipient_filter: dict, channel: str, body: str, subject: str = "",
                 now: dt.datetime | None = None) -> Preview:
    """Who would get it and who not (by reason), a sample text and the SMS size. Reads only."""
    _check_channel(channel)
    flt = normalise_filter(recipient_filter)
    facts = PracticeFacts(practice, now or timezone.now())
    preview = Preview(channel=channel, problems=text_problems(channel, body, subject),
                      sms=_Lengths() if channel == "sms" else None)
    for row, plan, excluded in _planned(practice, flt, channel, facts):
        if excluded:
            preview.excluded[excluded] += 1
            continue
        preview.recipients += 1
        preview.generic += plan.generic
        if preview.problems:
            continue  # text that cannot be rendered is only counted
        text = personal_text(body, first_name=row["given_name"], generic=plan.generic,
                             practice=practice)
        if preview.sms:
            preview.sms.add(text)
        if plan.generic and preview.sample_generic is None:
            preview.sample_generic = text
        elif not plan.generic and preview.sample is None:
            preview.sample = text
            if channel == "email":
                preview.sample_subject = personal_text(subject or DEFAULT_SUBJECT,
                                                       first_name=row["given_name"], generic=False,
                                                       practice=practice)
    return preview


@transaction.atomic
def create_bulk(*, actor: str, practice, recipient_filter: dict, channel: str, body: str,
                subject: str = "") -> BulkMessage:
    """A draft: nothing goes out until confirm_bulk. Raises TextRejected, BadFilter."""
    _check_channel(channel)
    flt = normalise_filter(recipient_filter)
    if problems := text_problems(channel, body, subject):
        raise TextRejected(problems)
    bulk = BulkMessage.objects.create(practice=practice, channel=channel, body=body,
                                      subject=subject if channel == "email" else "",
                                      recipient_filter=flt, created_by=actor)
    events.record(practice=practice, actor=actor, action="bulk.created", why=f"bulk {channel}",
                  detail={"bulk_id": bulk.id, "channel": channel, "filter": flt, "body": body,
                          "subject": bulk.subject})
    return bulk


def confirm_bulk(*, actor: str, bulk: BulkMessage, now: dt.datetime | None = None) -> dict:
    """Queue one message per eligible recipient, decided now (a patient who died since the
    preview gets nothing). A repeated confirm queues nothing more. Returns bulk_status."""
    now = now or timezone.now()
    practice = bulk.practice
    with transaction.atomic():
        # The claim: only one confirm moves the draft on, however many run at once.
        claimed = BulkMessage.objects.filter(id=bulk.id, status=BulkMessage.Status.DRAFT).update(
            status=BulkMessage.Status.CONFIRMED, confirmed_by=actor, confirmed_at=now)
        bulk.refresh_from_db()
        if not claimed:
            if bulk.status == BulkMessage.Status.CANCELLED:
                raise BulkNotAllowed(f"bulk {bulk.id} was cancelled; it cannot be sent")
            return bulk_status(bulk)
        facts = PracticeFacts(practice, now)
        not_before = next_send_time(now, **window_of(practice))
        subject_of = (lambda row: personal_text(bulk.subject or DEFAULT_SUBJECT,
                                                first_name=row["given_name"], generic=False,
                                                practice=practice)) \
            if bulk.channel == "email" else (lambda row: "")
        messages, skipped, counts = [], [], Counter()

        def flush():
            # The unique idempotency key is the last guard: a recipient is never queued twice.
            Message.objects.bulk_create(messages, batch_size=BATCH, ignore_conflicts=True)
            AuditEvent.objects.bulk_create(skipped, batch_size=BATCH)
            messages.clear()
            skipped.clear()

        for row, plan, excluded in _planned(practice, bulk.recipient_filter, bulk.channel, facts):
            if excluded:
                counts[excluded] += 1
                skipped.append(AuditEvent(
                    practice=practice, at=now, actor=actor, action="bulk.skipped",
                    why=_readable(plan.reason)[:200], patient_id=row["id"],
                    detail={"bulk_id": bulk.id, "reason": excluded, "channel": bulk.channel}))
            else:
                counts["queued"] += 1
                counts["generic"] += plan.generic
                messages.append(Message(
                    practice=practice, patient_id=row["id"], kind=Message.Kind.BULK, bulk=bulk,
                    channel=bulk.channel, to=plan.to, subject=subject_of(row),
                    body=personal_text(bulk.body, first_name=row["given_name"],
                                       generic=plan.generic, practice=practice),
                    idempotency_key=f"bulk:{bulk.id}:{row['id']}", not_before=not_before,
                    created_by=actor))
            if len(messages) >= BATCH or len(skipped) >= BATCH:
                flush()
        flush()
        events.record(practice=practice, actor=actor, action="bulk.confirmed",
                      why=f"{counts['queued']} queued, {sum(counts[k] for k in EXCLUSIONS)} excluded",
                      at=now, detail={"bulk_id": bulk.id, "channel": bulk.channel,
                                      "queued": counts["queued"], "generic": counts["generic"],
                                      "excluded": {k: counts[k] for k in EXCLUSIONS},
                                      "not_before": not_before.isoformat()})
    return bulk_status(bulk)


@transaction.atomic
def cancel_bulk(*, actor: str, bulk: BulkMessage, now: dt.datetime | None = None) -> dict:
    """Stop what has not gone yet. Messages already with a provider are not recalled."""
    now = now or timezone.now()
    # Conditional on `queued`: a message the dispatcher claimed meanwhile goes out as claimed.
    stopped = Message.objects.filter(bulk=bulk, status=Message.Status.QUEUED).update(
        status=Message.Status.FAILED, error=f"bulk cancelled by {actor}"[:500])
    BulkMessage.objects.filter(id=bulk.id).update(status=BulkMessage.Status.CANCELLED)
    bulk.refresh_from_db()
    events.record(practice=bulk.practice, actor=actor, action="bulk.cancelled",
                  why=f"{stopped} queued messages stopped", at=now,
                  detail={"bulk_id": bulk.id, "stopped": stopped})
    return bulk_status(bulk)


def bulk_status(bulk: BulkMessage) -> dict:
    """Counts per message status, and who got nothing and why."""
    by_status = dict.fromkeys(Message.Status.values, 0)
    by_status.update(Message.objects.filter(bulk=bulk).order_by().values("status")
                     .annotate(n=Count("id")).values_list("status", "n"))
    skipped = list(AuditEvent.objects.filter(practice_id=bulk.practice_id, action="bulk.skipped",
                                             detail__bulk_id=bulk.id).order_by("id")
                   .values("patient_id", "patient__pms_id", "why", "detail"))
    excluded = Counter(s["detail"]["reason"] for s in skipped)
    return {"bulk_id": bulk.id, "status": bulk.status, "channel": bulk.channel,
            "created_by": bulk.created_by, "confirmed_by": bulk.confirmed_by or None,
            "confirmed_at": bulk.confirmed_at.isoformat() if bulk.confirmed_at else None,
            "messages": sum(by_status.values()), "by_status": by_status,
            "excluded": {k: excluded[k] for k in (*EXCLUSIONS, *sorted(set(excluded) - set(EXCLUSIONS)))},
            "skipped": [{"patient_id": s["patient_id"], "pms_id": s["patient__pms_id"],
                         "reason": s["detail"]["reason"], "why": s["why"]} for s in skipped]}


def same_bulk_recently(*, practice, recipient_filter: dict, channel: str, body: str,
                       subject: str = "", within: dt.timedelta = dt.timedelta(days=1),
                       now: dt.datetime | None = None) -> BulkMessage | None:
    """A confirmed bulk with this text and filter sent lately: a rerun script or a second
    press would otherwise message every patient twice."""
    flt = normalise_filter(recipient_filter)
    since = (now or timezone.now()) - within
    for bulk in BulkMessage.objects.filter(practice=practice, channel=channel, body=body,
                                           subject=subject if channel == "email" else "",
                                           status=BulkMessage.Status.CONFIRMED,
                                           confirmed_at__gte=since).order_by("-id"):
        if bulk.recipient_filter == flt:
            return bulk
    return None
