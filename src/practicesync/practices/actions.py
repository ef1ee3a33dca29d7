"""Practice actions: keyword-only, one transaction each, audited."""

import datetime as dt
import zoneinfo

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from practicesync.audit import events
from practicesync.connectors.profiles import get_profile
from practicesync.results.templates import ensure_templates

from .export import SCHEMA
from .models import Membership, Practice

DEFAULT_TIMEZONES = {"AU": "Australia/Sydney", "GB": "Europe/London"}


def next_nightly_run(practice: Practice, after: dt.datetime) -> dt.datetime:
    """The next practice-local `nightly_sync_at` strictly after `after`, in UTC."""
    local = after.astimezone(practice.tz)
    candidate = dt.datetime.combine(local.date(), practice.nightly_sync_at, tzinfo=practice.tz)
    if candidate <= local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1),
                                        practice.nightly_sync_at, tzinfo=practice.tz)
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
    practice = Practice.objects.create(slug=slug, name=name, pms=pms, country=country,
                                       timezone=timezone_name)
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


def record_export(*, actor: str, practice: Practice, via: str) -> None:
    """Everything the practice holds is leaving: who took it, when, and how."""
    events.record(practice=practice, actor=actor, action="practice.exported", why=via,
                  detail={"schema": SCHEMA})
