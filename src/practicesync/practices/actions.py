"""Practice actions: keyword-only, one transaction each, audited."""

import datetime as dt
import zoneinfo

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from practicesync.audit import events
from practicesync.connectors.hl7v2.inbox import _close_incidents
from practicesync.connectors.hl7v2.models import InboundMessage
from practicesync.connectors.profiles import get_profile
from practicesync.outreach.models import Message, OutboxEntry
from practicesync.results.templates import ensure_templates

from .export import SCHEMA
from .models import Membership, Practice
from .retention import PURGE_AT, PURGED, purge_plan

DEFAULT_TIMEZONES = {"AU": "Australia/Sydney", "GB": "Europe/London"}


def next_nightly_run(practice: Practice, after: dt.datetime,
                     at: dt.time | None = None) -> dt.datetime:
    """The next practice-local `at` (default `nightly_sync_at`) strictly after `after`, in
    UTC."""
    at = at or practice.nightly_sync_at
    local = after.astimezone(practice.tz)
    candidate = dt.datetime.combine(local.date(), at, tzinfo=practice.tz)
    if candidate <= local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), at,
                                        tzinfo=practice.tz)
    return candidate.astimezone(dt.UTC)


@transaction.atomic
def create_practice(*, actor: str, name: str, pms: str, country: str | None = None,
                    timezone_name: str | None = None, slug: str | None = None) -> Practice:
    profile = get_profile(pms)
    country = country or profile.country
    timezone_name = timezone_name or DEFAULT_TIMEZONES[country]
    zoneinfo.ZoneInfo(timezone_name)  # raises for an unknown IANA name
    base = slug or slugify(name) or "practice"
    slug, n = base, 1
    while Practice.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    practice = Practice(slug=slug, name=name, pms=pms, country=country, timezone=timezone_name)
    practice.next_purge_due = next_nightly_run(practice, timezone.now(), at=PURGE_AT)
    practice.save()
    ensure_templates(practice)
    events.record(practice=practice, actor=actor, action="practice.created",
                  detail={"pms": pms, "country": country, "timezone": timezone_name})
    return practice


@transaction.atomic
def permit_sync(*, actor: str, practice: Practice, granted_by: str, dpia_ref: str) -> Practice:
    practice.permission_granted_by = granted_by
    practice.dpia_ref = dpia_ref
    practice.permission_granted_at = timezone.now()
    practice.save(update_fields=["permission_granted_by", "dpia_ref", "permission_granted_at"])
    events.record(practice=practice, actor=actor, action="practice.sync_permitted",
                  why=f"DPIA {dpia_ref}", detail={"granted_by": granted_by, "dpia_ref": dpia_ref})
    return practice


@transaction.atomic
def revoke_sync(*, actor: str, practice: Practice, reason: str) -> Practice:
    """Turn Patient Sync off: the permission record is cleared (the audit log keeps it), so
    every gated command and the nightly run refuse until it is recorded again."""
    reason = " ".join(reason.split())
    if not reason:
        raise ValueError("give the reason for turning Patient Sync off")
    before = {"granted_by": practice.permission_granted_by, "dpia_ref": practice.dpia_ref,
              "granted_at": practice.permission_granted_at.isoformat()
              if practice.permission_granted_at else None}
    practice.permission_granted_by, practice.dpia_ref = "", ""
    practice.permission_granted_at = None
    practice.save(update_fields=["permission_granted_by", "dpia_ref", "permission_granted_at"])
    events.record(practice=practice, actor=actor, action="practice.sync_revoked",
                  why=reason[:200], detail={"before": before, "reason": reason})
    return practice


@transaction.atomic
def schedule_nightly_sync(*, actor: str, practice: Practice, source: str, fmt: str = "csv",
                          at: dt.time | None = None, now: dt.datetime | None = None) -> Practice:
    practice.list_source = source
    practice.list_format = fmt
    if at is not None:
        practice.nightly_sync_at = at
    practice.next_sync_due = next_nightly_run(practice, now or timezone.now())
    practice.save(update_fields=["list_source", "list_format", "nightly_sync_at", "next_sync_due"])
    events.record(practice=practice, actor=actor, action="practice.sync_scheduled",
                  detail={"source": source, "format": fmt,
                          "at": practice.nightly_sync_at.isoformat(),
                          "next": practice.next_sync_due.isoformat()})
    return practice


@transaction.atomic
def set_hl7_settings(*, actor: str, practice: Practice, ack_mode: str | None = None,
                     pms_id_system: str | None = None) -> Practice:
    """The practice's HL7 v2 / FHIR feed settings; None leaves a setting as it is."""
    changed = {}
    if ack_mode is not None:
        if ack_mode not in Practice.Hl7AckMode.values:
            raise ValueError(f"ack mode {ack_mode!r}: use one of {Practice.Hl7AckMode.values}")
        changed["hl7_ack_mode"] = ack_mode
    if pms_id_system is not None:
        changed["pms_id_system"] = pms_id_system.strip()
    if not changed:
        return practice
    for name, value in changed.items():
        setattr(practice, name, value)
    practice.save(update_fields=list(changed))
    events.record(practice=practice, actor=actor, action="practice.hl7_settings_changed",
                  detail=changed)
    return practice


@transaction.atomic
def add_staff(*, actor: str, practice: Practice, email: str, role: str,
              password: str | None = None) -> Membership:
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=email.lower(),
                                               defaults={"email": email.lower()})
    if password:
        user.set_password(password)
        user.save(update_fields=["password"])
    membership, _ = Membership.objects.update_or_create(practice=practice, user=user,
                                                        defaults={"role": role})
    events.record(practice=practice, actor=actor, action="staff.added",
                  detail={"email": email.lower(), "role": role})
    return membership


def record_export(*, actor: str, practice: Practice, via: str, patient=None) -> None:
    """Everything the practice holds is leaving, or with `patient` everything about one
    patient (a subject access request): who took it, when, and how."""
    if patient is None:
        events.record(practice=practice, actor=actor, action="practice.exported", why=via,
                      detail={"schema": SCHEMA})
        return
    events.record(practice=practice, actor=actor, action="practice.exported",
                  why=SUBJECT_ACCESS, patient=patient,
                  detail={"schema": SCHEMA, "via": via, "pms_id": patient.pms_id})


SUBJECT_ACCESS = "subject access"
# Inside a week staff still answer questions about what was sent or received.
MIN_RETENTION_DAYS = 7
PURGE_BATCH = 2000


@transaction.atomic
def set_retention(*, actor: str, practice: Practice, raw_days: int | None = None,
                  bodies_days: int | None = None) -> Practice:
    """How long raw inbound messages and message texts are kept; None leaves one as it is."""
    changed = {}
    for name, days in (("retain_raw_messages_days", raw_days),
                       ("retain_message_bodies_days", bodies_days)):
        if days is None:
            continue
        if days < MIN_RETENTION_DAYS:
            raise ValueError(f"keep them at least {MIN_RETENTION_DAYS} days, not {days}")
        changed[name] = days
    if not changed:
        return practice
    before = {name: getattr(practice, name) for name in changed}
    for name, value in changed.items():
        setattr(practice, name, value)
    practice.save(update_fields=list(changed))
    events.record(practice=practice, actor=actor, action="practice.retention_changed",
                  detail={"before": before, "after": changed})
    return practice


def _batches(rows, fields):
    """(id, *fields) of `rows` in id order, a batch at a time: bounded memory, and rows a
    batch leaves alone (in flight) are not read again."""
    last = 0
    while batch := list(rows.filter(id__gt=last).order_by("id")
                        .values_list("id", *fields)[:PURGE_BATCH]):
        yield batch
        last = batch[-1][0]


@transaction.atomic
def purge_expired(*, practice: Practice, actor: str, now: dt.datetime | None = None) -> dict:
    """Purge what the practice's retention policy no longer keeps (retention.purge_plan):
    message texts (the rows stay, marked), the outbox's copies, raw inbound messages and old
    dead letters. One audit event counts what went; it never holds any of it."""
    now = now or timezone.now()
    plan = purge_plan(now=now, raw_days=practice.retain_raw_messages_days,
                      bodies_days=practice.retain_message_bodies_days)
    counts = dict.fromkeys(("message_texts", "outbox_texts", "inbound_messages",
                            "dead_letters"), 0)
    messages = (Message.objects.filter(practice=practice, created_at__lt=plan.bodies_before)
                .exclude(body=PURGED))
    for batch in _batches(messages, ("status", "created_at")):
        ids = [i for i, status, created in batch if plan.message_due(status, created)]
        counts["message_texts"] += Message.objects.filter(id__in=ids).update(body=PURGED,
                                                                              subject="")
    outbox = (OutboxEntry.objects.filter(practice=practice, created_at__lt=plan.bodies_before)
              .exclude(body=PURGED))
    for batch in _batches(outbox, ()):
        counts["outbox_texts"] += OutboxEntry.objects.filter(
            id__in=[i for i, in batch]).update(body=PURGED, subject="")
    inbound = InboundMessage.objects.filter(practice=practice, received_at__lt=plan.raw_before)
    for batch in _batches(inbound, ("state", "received_at")):
        due = [(i, state) for i, state, received in batch if plan.inbound_due(state, received)]
        InboundMessage.objects.filter(id__in=[i for i, _ in due]).delete()
        dead = sum(state == InboundMessage.State.DEAD for _, state in due)
        counts["dead_letters"] += dead
        counts["inbound_messages"] += len(due) - dead
    if counts["dead_letters"]:
        _close_incidents(practice.id)  # an incident whose letters are gone is over
    events.record(practice=practice, actor=actor, action="practice.retention_purged",
                  why="retention policy",
                  detail={"counts": counts, "raw_days": practice.retain_raw_messages_days,
                          "bodies_days": practice.retain_message_bodies_days,
                          "bodies_before": plan.bodies_before.isoformat(),
                          "raw_before": plan.raw_before.isoformat(),
                          "dead_before": plan.dead_before.isoformat()})
    return counts
