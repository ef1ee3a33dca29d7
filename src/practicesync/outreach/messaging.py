"""Ad-hoc messages, video invites and bulk messages (DESIGN.md sections 1 and 4).

Unlike a results follow-up, these go on the channel staff chose or not at all: the decision is
`recipients.plan_direct`, and a refusal names its reason. Actions are keyword-only, run in one
transaction and are audited; they only queue Message rows, which the dispatcher delivers
within the practice's send window and rate limit.

Bulk messages run on the safety rails of DESIGN.md section 2 (after the Askern incident, a
clinical note sent to ~8,000 patients): saved and scanned templates only; a second staff
member approves more than PRACTICESYNC_BULK_APPROVAL_OVER recipients; only the first batch
goes until staff release the rest; a halt stops it at once; a correction reaches exactly the
patients it reached. The dispatcher adds the last two: every message is checked against the
patient's status just before sending, and bulk delivery is held while the last sync is stale.
"""

import datetime as dt
import re
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from practicesync.audit import events
from practicesync.audit.models import AuditEvent
from practicesync.patients.models import Patient

from .actions import TextRejected
from .dispatch import PracticeFacts, bulk_held, window_of
from .models import BulkMessage, Message, MessageTemplate
from .recipients import Plan, Policy, Recipient, plan_direct
from .window import next_send_time
from .wording import DEFAULT_SUBJECT, render, sms_length, text_problems

DIRECT_CHANNELS = ("sms", "email")
BATCH = 1000
# Why a patient gets nothing, in the order a preview lists them.
EXCLUSIONS = ("deceased", "left", "opted_out", "no_address", "under_age", "sent_today")
# One patient never gets the same bulk text twice within this time, whatever filters two
# bulks used: overlapping filters or a rerun reach only those who have not had it.
SAME_TEXT_WITHIN = dt.timedelta(days=1)
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
    """This bulk may not take this step now; the message says why."""


class SelfApproval(BulkNotAllowed):
    pass


class NeedsApproval(BulkNotAllowed):
    def __init__(self, bulk):
        super().__init__(f"bulk {bulk.id} goes to {bulk.recipient_count} patients: another staff "
                         f"member must approve it (bulk approve --bulk {bulk.id})")


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


# Every bulk SMS says how to stop them (the Spam Act 2003 / PECR unsubscribe facility);
# Twilio acts on the reply (outreach/webhooks.py).
STOP_LINE = "Reply STOP to opt out"


def bulk_text(text: str, *, channel: str, **person) -> str:
    rendered = personal_text(text, **person)
    return f"{rendered}\n{STOP_LINE}" if channel == "sms" else rendered


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


# --- bulk: pure decisions ------------------------------------------------------------------

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
# What a bulk text may not hold, in the order it is looked for. Each find is blanked out
# before the next pattern looks, so one number is named once (an ISO date is not also a long
# number). A date needs its year: "clinics on Saturday 7 March" is a notice, "1 July 1980" is
# someone's date of birth.
_IDENTIFIERS = (
    ("an email address", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("a date of birth or other date", re.compile(
        r"(?<!\d)\d{4}-\d{1,2}-\d{1,2}(?!\d)"
        r"|(?<!\d)\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}(?!\d)"
        rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}\b"
        rf"|\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b"
        r"|\b(?:dob|d\.o\.b|date of birth|born on)\b", re.IGNORECASE)),
    ("a phone number", re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[\s.-]?|\(0\d{1,4}\)\s?|0)\d(?:[\s.-]?\d){6,}(?!\d)")),
    ("an IHI (16 digits)", re.compile(r"(?<!\d)\d{4}[\s-]?\d{4}[\s-]?\d{4}[\s-]?\d{4}(?!\d)")),
    ("an NHS number (10 digits)", re.compile(r"(?<!\d)\d{3}[\s-]?\d{3}[\s-]?\d{4}(?!\d)")),
    ("a Medicare number", re.compile(r"(?<!\d)\d{4}[\s-]?\d{5}[\s-]?\d(?:[\s/-]?\d)?(?!\d)")),
    # A person named with a title ("Mrs Smith"): one patient's affairs in everyone's message.
    ("a person's name", re.compile(r"\b(?i:mr|mrs|ms|miss|mx)\.?\s+[A-Z][a-z'-]+")),
    ("a long number (an identifier or a phone number)",
     re.compile(r"(?<!\d)\d(?:[\s-]?\d){7,}(?!\d)")),
)


def identifier_problems(text: str) -> list[str]:
    """Identifiers and contact details in a bulk text. The reason names the kind, never what
    was found: refusals are audited, and the audit log is no place for an NHS number."""
    found, rest = [], text
    for what, pattern in _IDENTIFIERS:
        if pattern.search(rest):
            found.append(f"the text looks like it holds {what}")
            rest = pattern.sub(lambda m: "#" * len(m.group(0)), rest)
    return found


def template_problems(channel: str, body: str, subject: str = "") -> list[str]:
    """Why a bulk template may not be saved or sent; empty when it may. One text goes to
    thousands, so an email gets the SMS rules too (subject included): no test names, values
    or outcomes, and no identifiers, dates or contact details anywhere."""
    problems = [p for p in text_problems(channel, body, subject) if not p.startswith("sms text")]
    problems += [p.replace("sms text", "bulk text", 1)
                 for p in text_problems("sms", f"{subject}\n{body}") if p.startswith("sms text")]
    return problems + identifier_problems(f"{subject}\n{body}")


def needs_approval(*, recipients: int, over: int, corrects_approved: bool = False) -> bool:
    """A second staff member approves a bulk to more than `over` patients. A correction of a
    bulk that was approved is not held for a second approval: it goes to (some of) the
    same patients, and while it waited the wrong message would stand uncorrected."""
    return recipients > over and not corrects_approved


def release_refusal(*, phase: str, first_batch_pending: int) -> str | None:
    """Why the rest of a bulk may not be released now; None when it may. Staff release it
    after seeing how the first batch went, so the first batch must have gone."""
    if phase in (BulkMessage.Phase.DRAFT, BulkMessage.Phase.APPROVED):
        return "its first batch has not been sent yet"
    if phase == BulkMessage.Phase.HALTED:
        return "it was halted"
    if first_batch_pending:
        return (f"{first_batch_pending} message(s) of its first batch have not gone yet; "
                f"release the rest once you have seen how the first batch went")
    return None


# --- bulk: who gets it ---------------------------------------------------------------------

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


def _candidates(bulk: BulkMessage) -> tuple[list[int], dict | None]:
    """A bulk's patients to decide on, and the filter whose ages apply: a correction's fixed
    list, or whoever the filter selects now."""
    if bulk.recipient_ids is not None:
        return list(bulk.recipient_ids), None
    flt = bulk.recipient_filter
    return list(_selection(bulk.practice, flt).order_by("id").values_list("id", flat=True)), flt


def _planned(ids: list[int], channel: str, facts: PracticeFacts, flt: dict | None = None,
             had_it: frozenset = frozenset()):
    """(patient row, plan, exclusion or None) for these patients, 1,000 at a time. `had_it`:
    patients the same text reached lately (`sent_today`)."""
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        recipients = facts.recipients(chunk)
        for pid in chunk:
            row, recipient = recipients[pid]
            if flt is not None and not _age_ok(recipient.age, flt):
                continue
            plan = plan_direct(channel=channel, recipient=recipient, policy=facts.policy)
            if plan.action != "send":
                yield row, plan, exclusion(plan.reason)
            elif pid in had_it:
                yield row, plan._replace(action="skip", reason=SENT_TODAY), "sent_today"
            else:
                yield row, plan, None


SENT_TODAY = "had the same text in the last day"


def had_same_text(practice, *, channel: str, body: str, subject: str, now) -> frozenset:
    """Patients a bulk with this text reached or is about to reach within SAME_TEXT_WITHIN."""
    return frozenset(Message.objects.filter(
        practice=practice, kind=Message.Kind.BULK, bulk__channel=channel, bulk__body=body,
        bulk__subject=subject, created_at__gte=now - SAME_TEXT_WITHIN).exclude(
        status__in=[Message.Status.SKIPPED, Message.Status.FAILED]).values_list(
        "patient_id", flat=True))


def _had_it(bulk: BulkMessage, now) -> frozenset:
    # A correction goes to exactly the patients staff chose to correct, whatever it says.
    if bulk.corrects_id is not None:
        return frozenset()
    return had_same_text(bulk.practice, channel=bulk.channel, body=bulk.body,
                         subject=bulk.subject, now=now)


def _count(ids, channel, facts, flt, had_it) -> int:
    return sum(excluded is None for _, _, excluded in _planned(ids, channel, facts, flt, had_it))


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
    template: str = ""
    recipients: int = 0
    generic: int = 0
    excluded: Counter = field(default_factory=Counter)
    sample: str | None = None
    sample_subject: str | None = None
    sample_generic: str | None = None
    sms: _Lengths | None = None
    problems: list[str] = field(default_factory=list)
    approval_needed: bool = False
    first_batch: int = 0
    held_by_stale_sync: bool = False

    def as_json(self) -> dict:
        return {"channel": self.channel, "template": self.template, "recipients": self.recipients,
                "generic": self.generic,
                "excluded": {k: self.excluded[k] for k in (*EXCLUSIONS, *sorted(
                    set(self.excluded) - set(EXCLUSIONS)))},
                "excluded_total": sum(self.excluded.values()), "sample": self.sample,
                "sample_subject": self.sample_subject, "sample_generic": self.sample_generic,
                "sms": self.sms and {"encoding": self.sms.encoding,
                                     "characters": self.sms.characters,
                                     "segments": self.sms.segments,
                                     "total_segments": self.sms.total_segments},
                "problems": self.problems, "approval_needed": self.approval_needed,
                "first_batch": self.first_batch, "held_by_stale_sync": self.held_by_stale_sync}


def _same_practice(practice, template: MessageTemplate) -> None:
    if template.practice_id != practice.id:
        raise BulkNotAllowed(f"no message template {template.name!r} at {practice.slug}")


def preview_bulk(*, practice, recipient_filter: dict, template: MessageTemplate,
                 now: dt.datetime | None = None) -> Preview:
    """Who would get it and who not (by reason), a sample text, the SMS size, and which rails
    it would meet (approval, first batch, a stale-sync hold). Reads only."""
    _same_practice(practice, template)
    flt = normalise_filter(recipient_filter)
    now = now or timezone.now()
    facts = PracticeFacts(practice, now)
    channel, body, subject = template.channel, template.body, template.subject
    preview = Preview(channel=channel, template=template.name,
                      problems=template_problems(channel, body, subject),
                      sms=_Lengths() if channel == "sms" else None,
                      held_by_stale_sync=bulk_held(practice, now))
    ids = list(_selection(practice, flt).order_by("id").values_list("id", flat=True))
    had_it = had_same_text(practice, channel=channel, body=body, subject=subject, now=now)
    for row, plan, excluded in _planned(ids, channel, facts, flt, had_it):
        if excluded:
            preview.excluded[excluded] += 1
            continue
        preview.recipients += 1
        preview.generic += plan.generic
        if preview.problems:
            continue  # text that cannot be rendered is only counted
        text = bulk_text(body, channel=channel, first_name=row["given_name"],
                         generic=plan.generic, practice=practice)
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
    preview.approval_needed = needs_approval(recipients=preview.recipients,
                                             over=settings.PRACTICESYNC_BULK_APPROVAL_OVER)
    preview.first_batch = min(preview.recipients, settings.PRACTICESYNC_BULK_FIRST_BATCH)
    return preview


# --- bulk: saved templates -----------------------------------------------------------------

def save_template(*, actor: str, practice, name: str, channel: str, body: str, subject: str = "",
                  now: dt.datetime | None = None) -> MessageTemplate:
    """Save (or replace) the practice's bulk template `name`. A text with clinical details,
    identifiers, dates or contact details raises TextRejected, recorded as
    message_template.refused. A bulk already created keeps the text it was created with."""
    _check_channel(channel)
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a template name is 1 to 100 characters")
    subject = subject if channel == "email" else ""
    problems = template_problems(channel, body, subject)
    now = now or timezone.now()
    with transaction.atomic():
        detail = {"name": name, "channel": channel}
        if problems:
            events.record(practice=practice, actor=actor, action="message_template.refused",
                          why=problems[0][:200], at=now, detail=detail | {"problems": problems})
        else:
            template, created = MessageTemplate.objects.select_for_update().get_or_create(
                practice=practice, name=name,
                defaults={"channel": channel, "body": body, "subject": subject,
                          "created_by": actor})
            if not created:
                template.channel, template.body, template.subject = channel, body, subject
                template.save(update_fields=["channel", "body", "subject", "updated_at"])
            events.record(practice=practice, actor=actor, action="message_template.saved",
                          why="created" if created else "replaced", at=now,
                          detail=detail | {"template_id": template.id, "body": body,
                                           "subject": subject})
    # Raised after the commit so the refusal stays on the record.
    if problems:
        raise TextRejected(problems)
    return template


def template_by_name(practice, name: str) -> MessageTemplate:
    found = MessageTemplate.objects.filter(practice=practice, name=name.strip()).first()
    if found is None:
        raise BulkNotAllowed(f"no message template {name!r} at {practice.slug}")
    return found


# --- bulk: the rails -----------------------------------------------------------------------

@transaction.atomic
def create_bulk(*, actor: str, practice, recipient_filter: dict, template: MessageTemplate,
                now: dt.datetime | None = None) -> BulkMessage:
    """A draft: nothing goes out until confirm_bulk (or approve_bulk, when more patients
    would get it than one person may send to alone). Raises TextRejected, BadFilter."""
    _same_practice(practice, template)
    flt = normalise_filter(recipient_filter)
    return _create(actor=actor, practice=practice, template=template, recipient_filter=flt,
                   recipient_ids=None, corrects=None, now=now or timezone.now())


def _create(*, actor, practice, template, recipient_filter, recipient_ids, corrects,
            now) -> BulkMessage:
    channel, body, subject = template.channel, template.body, template.subject
    # Scanned again: the rules may have grown since the template was saved.
    if problems := template_problems(channel, body, subject):
        raise TextRejected(problems)
    bulk = BulkMessage(practice=practice, channel=channel, body=body, subject=subject,
                       template=template, recipient_filter=recipient_filter,
                       recipient_ids=recipient_ids, corrects=corrects, created_by=actor)
    ids, flt = _candidates(bulk)
    bulk.recipient_count = _count(ids, channel, PracticeFacts(practice, now), flt,
                                  _had_it(bulk, now))
    bulk.approval_needed = needs_approval(
        recipients=bulk.recipient_count, over=settings.PRACTICESYNC_BULK_APPROVAL_OVER,
        corrects_approved=corrects is not None and _was_approved(corrects))
    bulk.save()
    events.record(practice=practice, actor=actor, action="bulk.created", why=f"bulk {channel}",
                  at=now, detail={"bulk_id": bulk.id, "channel": channel, "filter": recipient_filter,
                                  "template": template.name, "body": body, "subject": subject,
                                  "recipients": bulk.recipient_count,
                                  "approval_needed": bulk.approval_needed,
                                  "corrects": corrects and corrects.id})
    return bulk


def _was_approved(bulk: BulkMessage) -> bool:
    """Approved by a second staff member, or a correction let through because the bulk it
    corrects was (so a correction of a correction is not held either)."""
    if bulk.approved_by:
        return True
    return bulk.corrects_id is not None and not bulk.approval_needed and _was_approved(bulk.corrects)


def _queue(*, actor, bulk: BulkMessage, ids: list[int], flt: dict | None, now, limit=None):
    """Decide on these patients now (a patient who died since the preview gets nothing) and
    queue a message for each recipient, up to `limit`. Returns (counts, the patient ids
    queued, the recipients left over)."""
    practice = bulk.practice
    facts = PracticeFacts(practice, now)
    not_before = next_send_time(now, **window_of(practice))
    subject_of = (lambda row: personal_text(bulk.subject or DEFAULT_SUBJECT,
                                            first_name=row["given_name"], generic=False,
                                            practice=practice)) \
        if bulk.channel == "email" else (lambda row: "")
    messages, skipped, counts, queued, left = [], [], Counter(), [], []

    def flush():
        # The unique idempotency key is the last guard: a recipient is never queued twice.
        Message.objects.bulk_create(messages, batch_size=BATCH, ignore_conflicts=True)
        AuditEvent.objects.bulk_create(skipped, batch_size=BATCH)
        messages.clear()
        skipped.clear()

    for row, plan, excluded in _planned(ids, bulk.channel, facts, flt, _had_it(bulk, now)):
        if excluded:
            counts[excluded] += 1
            skipped.append(AuditEvent(
                practice=practice, at=now, actor=actor, action="bulk.skipped",
                why=_readable(plan.reason)[:200], patient_id=row["id"],
                detail={"bulk_id": bulk.id, "reason": excluded, "channel": bulk.channel}))
        elif limit is not None and len(queued) >= limit:
            left.append(row["id"])  # decided as a recipient; waits for the release
        else:
            counts["queued"] += 1
            counts["generic"] += plan.generic
            queued.append(row["id"])
            messages.append(Message(
                practice=practice, patient_id=row["id"], kind=Message.Kind.BULK, bulk=bulk,
                channel=bulk.channel, to=plan.to, subject=subject_of(row),
                body=bulk_text(bulk.body, channel=bulk.channel, first_name=row["given_name"],
                               generic=plan.generic, practice=practice),
                idempotency_key=f"bulk:{bulk.id}:{row['id']}", not_before=not_before,
                created_by=actor))
        if len(messages) >= BATCH or len(skipped) >= BATCH:
            flush()
    flush()
    return counts, queued, left, not_before


def confirm_bulk(*, actor: str, bulk: BulkMessage, now: dt.datetime | None = None) -> dict:
    """Queue the first batch (PRACTICESYNC_BULK_FIRST_BATCH recipients); every other
    recipient is decided now and waits for release_bulk. A repeated confirm queues nothing
    more. A bulk that needs a second approval raises NeedsApproval. Returns bulk_status."""
    now = now or timezone.now()
    with transaction.atomic():
        # The claim: only one confirm moves the bulk on, however many run at once. A bulk
        # that needs approval moves on only from `approved`, which approve_bulk sets.
        ready = BulkMessage.Phase.APPROVED if bulk.approval_needed else BulkMessage.Phase.DRAFT
        claimed = BulkMessage.objects.filter(
            id=bulk.id, status=BulkMessage.Status.DRAFT, phase=ready).update(
            status=BulkMessage.Status.CONFIRMED, phase=BulkMessage.Phase.FIRST_BATCH,
            confirmed_by=actor, confirmed_at=now)
        bulk.refresh_from_db()
        if not claimed:
            if bulk.phase == BulkMessage.Phase.HALTED:
                raise BulkNotAllowed(f"bulk {bulk.id} was halted; it cannot be sent")
            if bulk.phase == BulkMessage.Phase.DRAFT:
                raise NeedsApproval(bulk)
            return bulk_status(bulk, now=now)
        ids, flt = _candidates(bulk)
        counts, queued, left, not_before = _queue(
            actor=actor, bulk=bulk, ids=ids, flt=flt, now=now,
            limit=settings.PRACTICESYNC_BULK_FIRST_BATCH)
        bulk.first_batch, bulk.waiting = queued, left
        bulk.save(update_fields=["first_batch", "waiting"])
        events.record(practice=bulk.practice, actor=actor, action="bulk.confirmed",
                      why=f"first batch of {counts['queued']} queued, {len(left)} wait for a "
                          f"release, {sum(counts[k] for k in EXCLUSIONS)} excluded",
                      at=now, detail={"bulk_id": bulk.id, "channel": bulk.channel,
                                      "queued": counts["queued"], "generic": counts["generic"],
                                      "waiting": len(left),
                                      "excluded": {k: counts[k] for k in EXCLUSIONS},
                                      "not_before": not_before.isoformat()})
    return bulk_status(bulk, now=now)


def approve_bulk(*, actor: str, bulk: BulkMessage, now: dt.datetime | None = None) -> dict:
    """A second staff member's approval of a bulk to more patients than one may send to
    alone; the approval sends the first batch. The creator may not approve their own bulk
    (raises SelfApproval, recorded as bulk.approval_refused). Returns bulk_status."""
    now = now or timezone.now()
    refused = None
    with transaction.atomic():
        bulk.refresh_from_db()
        if not bulk.approval_needed:
            raise BulkNotAllowed(f"bulk {bulk.id} goes to {bulk.recipient_count} patients and "
                                 f"needs no second approval")
        if actor == bulk.created_by:
            refused = SelfApproval(f"bulk {bulk.id} was created by {actor}; another staff member "
                                   f"must approve it")
            events.record(practice=bulk.practice, actor=actor, action="bulk.approval_refused",
                          why=str(refused)[:200], at=now, detail={"bulk_id": bulk.id})
        else:
            claimed = BulkMessage.objects.filter(id=bulk.id, phase=BulkMessage.Phase.DRAFT).update(
                phase=BulkMessage.Phase.APPROVED, approved_by=actor, approved_at=now)
            bulk.refresh_from_db()
            if not claimed:
                if bulk.phase == BulkMessage.Phase.HALTED:
                    raise BulkNotAllowed(f"bulk {bulk.id} was halted; it cannot be approved")
                return bulk_status(bulk, now=now)  # approved already: nothing more to do
            events.record(practice=bulk.practice, actor=actor, action="bulk.approved",
                          why=f"{bulk.recipient_count} recipients, created by {bulk.created_by}",
                          at=now, detail={"bulk_id": bulk.id, "created_by": bulk.created_by,
                                          "recipients": bulk.recipient_count})
            status = confirm_bulk(actor=actor, bulk=bulk, now=now)
    if refused is not None:
        raise refused
    return status


def release_bulk(*, actor: str, bulk: BulkMessage, now: dt.datetime | None = None) -> dict:
    """Queue everyone who waits after the first batch, decided again now. Refused until the
    first batch has gone. A repeated release queues nothing more. Returns bulk_status."""
    now = now or timezone.now()
    with transaction.atomic():
        bulk.refresh_from_db()
        if bulk.phase == BulkMessage.Phase.RELEASED:
            return bulk_status(bulk, now=now)
        pending = Message.objects.filter(
            bulk=bulk, patient_id__in=bulk.first_batch,
            status__in=[Message.Status.QUEUED, Message.Status.SENDING]).count()
        if why := release_refusal(phase=bulk.phase, first_batch_pending=pending):
            raise BulkNotAllowed(f"bulk {bulk.id} cannot be released: {why}")
        # The claim: a halt or another release in between wins, and this one queues nothing.
        if not BulkMessage.objects.filter(id=bulk.id, phase=BulkMessage.Phase.FIRST_BATCH).update(
                phase=BulkMessage.Phase.RELEASED, released_by=actor, released_at=now, waiting=[]):
            bulk.refresh_from_db()
            if bulk.phase == BulkMessage.Phase.HALTED:
                raise BulkNotAllowed(f"bulk {bulk.id} cannot be released: it was halted")
            return bulk_status(bulk, now=now)
        counts, _, _, not_before = _queue(actor=actor, bulk=bulk, ids=list(bulk.waiting), flt=None,
                                          now=now)
        bulk.refresh_from_db()
        events.record(practice=bulk.practice, actor=actor, action="bulk.released",
                      why=f"{counts['queued']} queued, "
                          f"{sum(counts[k] for k in EXCLUSIONS)} excluded since the confirm",
                      at=now, detail={"bulk_id": bulk.id, "queued": counts["queued"],
                                      "generic": counts["generic"],
                                      "excluded": {k: counts[k] for k in EXCLUSIONS},
                                      "not_before": not_before.isoformat()})
    return bulk_status(bulk, now=now)


@transaction.atomic
def halt_bulk(*, actor: str, bulk: BulkMessage, now: dt.datetime | None = None) -> dict:
    """Stop a bulk at once: its queued messages are skipped, nobody waiting is released and
    a draft can no longer be approved. Messages a worker already took are not recalled."""
    now = now or timezone.now()
    bulk.refresh_from_db()
    dropped = len(bulk.waiting)
    halted = BulkMessage.objects.filter(id=bulk.id).exclude(phase=BulkMessage.Phase.HALTED).update(
        phase=BulkMessage.Phase.HALTED, status=BulkMessage.Status.CANCELLED, halted_by=actor,
        halted_at=now, waiting=[])
    # Conditional on `queued`: a message the dispatcher claimed meanwhile goes out as claimed.
    stopped = Message.objects.filter(bulk=bulk, status=Message.Status.QUEUED).update(
        status=Message.Status.SKIPPED, error=f"halted by {actor}"[:500])
    bulk.refresh_from_db()
    if halted or stopped:
        in_flight = Message.objects.filter(bulk=bulk, status=Message.Status.SENDING).count()
        events.record(practice=bulk.practice, actor=actor, action="bulk.halted",
                      why=f"{stopped} queued messages stopped, {dropped} waiting not released",
                      at=now, detail={"bulk_id": bulk.id, "stopped": stopped, "not_released": dropped,
                                      "in_flight": in_flight})
    return bulk_status(bulk, now=now)


CORRECTION_BATCHES = ("all", "first")
REACHED = (Message.Status.SENT, Message.Status.DELIVERED, Message.Status.READ)


def correct_bulk(*, actor: str, bulk: BulkMessage, template: MessageTemplate, batch: str = "all",
                 now: dt.datetime | None = None) -> BulkMessage:
    """A correction: `template` to exactly the patients whose message of `bulk` went out (of
    its first batch only, with batch="first"), as a new bulk on the same rails: scanned
    text, first batch, release, halt, the stale-sync hold. It needs no second approval when
    `bulk` was approved. Raises BulkNotAllowed, TextRejected."""
    if batch not in CORRECTION_BATCHES:
        raise ValueError(f"batch {batch!r}: use {' or '.join(CORRECTION_BATCHES)}")
    now = now or timezone.now()
    practice = bulk.practice
    _same_practice(practice, template)
    if template.channel != bulk.channel:
        # The wrong message is on the patients' phones (or in their inboxes): the
        # correction must land next to it.
        raise BulkNotAllowed(f"bulk {bulk.id} went by {bulk.channel}; template {template.name!r} "
                             f"is for {template.channel}")
    with transaction.atomic():
        reached = Message.objects.filter(bulk=bulk, status__in=REACHED)
        if batch == "first":
            reached = reached.filter(patient_id__in=bulk.first_batch)
        ids = sorted(set(reached.values_list("patient_id", flat=True)))
        if not ids:
            raise BulkNotAllowed(f"no message of bulk {bulk.id} ({batch}) has gone out; there is "
                                 f"nothing to correct")
        correction = _create(actor=actor, practice=practice, template=template,
                             recipient_filter={}, recipient_ids=ids, corrects=bulk, now=now)
        events.record(practice=practice, actor=actor, action="bulk.correction",
                      why=f"corrects bulk {bulk.id}: {len(ids)} patients ({batch})", at=now,
                      detail={"bulk_id": correction.id, "corrects": bulk.id, "batch": batch,
                              "patients": len(ids), "template": template.name,
                              "approval_needed": correction.approval_needed})
        if not correction.approval_needed:
            confirm_bulk(actor=actor, bulk=correction, now=now)
    correction.refresh_from_db()
    return correction


def _by_status(messages) -> dict:
    counts = dict.fromkeys(Message.Status.values, 0)
    counts.update(messages.order_by().values("status").annotate(n=Count("id"))
                  .values_list("status", "n"))
    return counts


def bulk_status(bulk: BulkMessage, *, now: dt.datetime | None = None) -> dict:
    """Where the bulk is on the rails, counts per message status (all, and of the first
    batch), and who got nothing and why."""
    messages = Message.objects.filter(bulk=bulk)
    by_status = _by_status(messages)
    first = _by_status(messages.filter(patient_id__in=bulk.first_batch))
    skipped = list(AuditEvent.objects.filter(practice_id=bulk.practice_id, action="bulk.skipped",
                                             detail__bulk_id=bulk.id).order_by("id")
                   .values("patient_id", "patient__pms_id", "why", "detail"))
    excluded = Counter(s["detail"]["reason"] for s in skipped)

    def at(value):
        return value.isoformat() if value else None

    return {"bulk_id": bulk.id, "status": bulk.status, "phase": bulk.phase, "channel": bulk.channel,
            "template": bulk.template.name if bulk.template_id else None,
            "corrects": bulk.corrects_id,
            "corrections": list(bulk.corrections.order_by("id").values_list("id", flat=True)),
            "recipients": bulk.recipient_count, "approval_needed": bulk.approval_needed,
            "created_by": bulk.created_by, "approved_by": bulk.approved_by or None,
            "approved_at": at(bulk.approved_at), "confirmed_by": bulk.confirmed_by or None,
            "confirmed_at": at(bulk.confirmed_at), "released_by": bulk.released_by or None,
            "released_at": at(bulk.released_at), "halted_by": bulk.halted_by or None,
            "halted_at": at(bulk.halted_at),
            "messages": sum(by_status.values()), "by_status": by_status,
            "first_batch": {"messages": sum(first.values()), "by_status": first},
            "waiting": len(bulk.waiting),
            # Bulk delivery is held (fail closed) while the practice list may be stale.
            "held_by_stale_sync": bulk_held(bulk.practice, now or timezone.now()),
            "excluded": {k: excluded[k] for k in (*EXCLUSIONS, *sorted(set(excluded) - set(EXCLUSIONS)))},
            "skipped": [{"patient_id": s["patient_id"], "pms_id": s["patient__pms_id"],
                         "reason": s["detail"]["reason"], "why": s["why"]} for s in skipped]}


def same_bulk_recently(*, practice, recipient_filter: dict, template: MessageTemplate,
                       within: dt.timedelta = dt.timedelta(days=1),
                       now: dt.datetime | None = None) -> BulkMessage | None:
    """A bulk with this text and filter confirmed lately, or waiting for approval: a rerun
    script or a second press would otherwise message every patient twice."""
    flt = normalise_filter(recipient_filter)
    since = (now or timezone.now()) - within
    recent = Q(status=BulkMessage.Status.CONFIRMED, confirmed_at__gte=since) | Q(
        status=BulkMessage.Status.DRAFT, created_at__gte=since)
    for bulk in BulkMessage.objects.filter(recent, practice=practice, channel=template.channel,
                                           body=template.body, subject=template.subject,
                                           corrects__isnull=True).order_by("-id"):
        if bulk.recipient_filter == flt:
            return bulk
    return None
