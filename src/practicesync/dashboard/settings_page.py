"""Settings (DESIGN.md sections 1, 4 and 5): the Patient Sync permission and DPIA record, the
nightly sync, the send window and age rules, the stop-all switch, links and the HL7 feed.

Every member may read the page (reception can see why nothing goes out at night); only an
admin changes it, and a non-admin's POST is refused with 403. Each section is its own small
form and saves through the existing audited actions, so the page, the CLI and the audit log
agree. Provider secrets come from the environment and are never shown: only set / not set.
"""

from urllib.parse import urlsplit

from django import forms
from django.conf import settings as django_settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from practicesync.audit.models import AuditEvent
from practicesync.outreach.actions import set_outreach_policy
from practicesync.outreach.window import NEVER_AFTER, NEVER_BEFORE
from practicesync.practices.access import access_practice
from practicesync.practices.actions import (
    permit_sync,
    record_export,
    revoke_sync,
    schedule_nightly_sync,
    set_hl7_settings,
)
from practicesync.practices.export import export_json
from practicesync.practices.models import Membership, Practice

from .outreach import _post_only, actor_of

WEEKDAYS = [("1", "Mon"), ("2", "Tue"), ("3", "Wed"), ("4", "Thu"), ("5", "Fri"), ("6", "Sat"),
            ("7", "Sun")]
TIME = forms.TimeInput(attrs={"type": "time"}, format="%H:%M")


def _https(value: str) -> str:
    if value and urlsplit(value).scheme != "https":
        raise forms.ValidationError("Use an https:// address: patients open it on their phones.")
    return value


class PermissionForm(forms.Form):
    granted_by = forms.CharField(label="Granted by (the data controller)", max_length=200)
    dpia_ref = forms.CharField(label="DPIA reference", max_length=200)


class RevokeForm(forms.Form):
    reason = forms.CharField(label="Reason for turning Patient Sync off", max_length=200)


class ScheduleForm(forms.Form):
    """Only the time: where the list comes from (a server path or URL, read with the server's
    own access) is the operator's to set, with `practicesync practice schedule`; from a web
    form it could read another practice's list or an internal address (hazard H-044)."""

    at = forms.TimeField(label="Nightly run at (practice time)", widget=TIME)


class WindowForm(forms.Form):
    send_days = forms.MultipleChoiceField(label="Send days", choices=WEEKDAYS,
                                          widget=forms.CheckboxSelectMultiple)
    send_from = forms.TimeField(label="Send from (practice time)", widget=TIME)
    send_until = forms.TimeField(label="Send until (practice time)", widget=TIME)
    sends_per_hour = forms.IntegerField(label="Messages per hour, at most", min_value=1)


class AgesForm(forms.Form):
    min_age_sms = forms.IntegerField(label="No SMS or push below this age", min_value=0,
                                     max_value=30)
    teen_until = forms.IntegerField(
        label="Generic wording only, up to and including this age", min_value=0, max_value=30,
        help_text="The mobile on file for a teenager is often a parent's.")


class StopForm(forms.Form):
    reason = forms.CharField(label="Reason for stopping all sending", max_length=200)
    confirm = forms.BooleanField(
        label="I understand that no message of any kind goes out until sending is resumed")


class ResumeForm(forms.Form):
    reason = forms.CharField(label="Reason for resuming sending", max_length=200)


class LinksForm(forms.Form):
    booking_url = forms.URLField(label="Booking link", max_length=500, required=False,
                                 assume_scheme="https", validators=[_https],
                                 help_text="Where {booking_link} in a message takes the patient.")
    video_base_url = forms.URLField(label="Video room base address", max_length=500,
                                    assume_scheme="https", validators=[_https],
                                    help_text="Each invite adds a room id of its own to it.")


class Hl7Form(forms.Form):
    ack_mode = forms.ChoiceField(label="HL7 v2 acknowledgement", widget=forms.RadioSelect,
                                 choices=Practice.Hl7AckMode.choices)
    pms_id_system = forms.CharField(
        label="PMS record number identifier system", max_length=200, required=False,
        help_text="PID-3 assigning authority or FHIR identifier system. Empty: by identifier "
                  "type (PI, then MR).")


# section: (its form, what the "Saved" message names, the page anchor it returns to)
SECTIONS = {
    "permission": (PermissionForm, "Patient Sync permission", "permission"),
    "revoke": (RevokeForm, "Patient Sync turned off", "permission"),
    "schedule": (ScheduleForm, "nightly sync", "schedule"),
    "window": (WindowForm, "send window", "window"),
    "ages": (AgesForm, "age rules", "window"),
    "stop": (StopForm, "all sending stopped", "stop-all"),
    "resume": (ResumeForm, "sending resumed", "stop-all"),
    "links": (LinksForm, "links", "providers"),
    "hl7": (Hl7Form, "HL7 feed settings", "providers"),
}


def _apply(section: str, *, actor: str, practice, data: dict, why: str) -> None:
    match section:
        case "permission":
            permit_sync(actor=actor, practice=practice, granted_by=data["granted_by"].strip(),
                        dpia_ref=data["dpia_ref"].strip())
        case "revoke":
            revoke_sync(actor=actor, practice=practice, reason=why)
        case "schedule":
            schedule_nightly_sync(actor=actor, practice=practice, source=practice.list_source,
                                  fmt=practice.list_format, at=data["at"])
        case "window":
            set_outreach_policy(actor=actor, practice=practice,
                                send_days="".join(sorted(data["send_days"])),
                                send_from=data["send_from"], send_until=data["send_until"],
                                sends_per_hour=data["sends_per_hour"])
        case "ages":
            set_outreach_policy(actor=actor, practice=practice, min_age_sms=data["min_age_sms"],
                                teen_until=data["teen_until"])
        case "stop" | "resume":
            set_outreach_policy(actor=actor, practice=practice, stop_all=section == "stop",
                                why=why)
        case "links":
            set_outreach_policy(actor=actor, practice=practice, booking_url=data["booking_url"],
                                video_base_url=data["video_base_url"])
        case "hl7":
            set_hl7_settings(actor=actor, practice=practice, ack_mode=data["ack_mode"],
                             pms_id_system=data["pms_id_system"])


# What each channel's provider needs from the environment. Only whether each is set is shown.
PROVIDER_SETTINGS = {
    "sms": ("SMS", ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM",
                    "TWILIO_STATUS_CALLBACK_URL")),
    "email": ("Email", ("PRACTICESYNC_EMAIL_FROM", "EMAIL_HOST", "EMAIL_HOST_USER",
                        "EMAIL_HOST_PASSWORD", "ANYMAIL")),
    "push": ("Push", ("VAPID_PRIVATE_KEY", "VAPID_SUBJECT")),
}
PROVIDER_WORDS = {
    "OutboxProvider": "Local outbox: nothing leaves this machine",
    "TwilioSmsProvider": "Twilio",
    "EmailProvider": "Email through Django (SMTP or an anymail ESP)",
    "WebPushProvider": "Web Push (VAPID)",
}
# The audit actions that change each section, for its "last changed" line.
SECTION_EVENTS = {
    "permission": ("practice.sync_permitted", "practice.sync_revoked"),
    "schedule": ("practice.sync_scheduled",),
    "hl7": ("practice.hl7_settings_changed",),
}


def providers() -> list[dict]:
    configured = django_settings.PRACTICESYNC_PROVIDERS
    rows = []
    for channel, (words, names) in PROVIDER_SETTINGS.items():
        provider = configured[channel].rsplit(".", 1)[-1]
        rows.append({"channel": words, "provider": PROVIDER_WORDS.get(provider, provider),
                     "outbox": provider == "OutboxProvider",
                     "settings": [(name, bool(getattr(django_settings, name, "")))
                                  for name in names]})
    return rows


def _initial(practice) -> dict:
    return {
        "permission": {"granted_by": practice.permission_granted_by,
                       "dpia_ref": practice.dpia_ref},
        "schedule": {"at": practice.nightly_sync_at},
        "window": {"send_days": list(practice.send_days), "send_from": practice.send_from,
                   "send_until": practice.send_until, "sends_per_hour": practice.sends_per_hour},
        "ages": {"min_age_sms": practice.min_age_sms, "teen_until": practice.teen_until},
        "links": {"booking_url": practice.booking_url,
                  "video_base_url": practice.video_base_url},
        "hl7": {"ack_mode": practice.hl7_ack_mode, "pms_id_system": practice.pms_id_system},
    }


def _last(practice, actions, **detail) -> AuditEvent | None:
    found = AuditEvent.objects.filter(practice=practice, action__in=actions)
    if detail:
        found = found.filter(**detail)
    return found.order_by("-at", "-id").first()


def _page(request, practice, membership, *, bound=None, status=200):
    can_change = membership.role == Membership.Role.ADMIN
    initial = _initial(practice)
    forms_by_section = {}
    for section, (form_class, *_) in SECTIONS.items():
        if bound is not None and bound.prefix == section:
            form = bound
        else:
            form = form_class(initial=initial.get(section), prefix=section)
        if not can_change:
            for field in form.fields.values():
                field.disabled = True
        forms_by_section[section] = form
    last = {section: _last(practice, actions) for section, actions in SECTION_EVENTS.items()}
    policy = "practice.outreach_policy_changed"
    last["stop_all"] = _last(practice, [policy], detail__has_key="stop_all")
    last["policy"] = _last(practice, [policy])
    return render(request, "dashboard/settings.html", {
        "practice": practice, "can_change": can_change, "forms": forms_by_section,
        "granted": _last(practice, ["practice.sync_permitted"]) if practice.sync_permitted
        else None,
        "last": last, "providers": providers(), "never_after": NEVER_AFTER,
        "never_before": NEVER_BEFORE}, status=status)


@login_required
def settings_page(request, practice):
    practice, membership = access_practice(request.user, practice)
    return _page(request, practice, membership)


@login_required
def save_settings(request, practice, section):
    """One section's form. Its errors come back on the page (400) with what was typed."""
    practice, membership = access_practice(request.user, practice, roles=(Membership.Role.ADMIN,))
    if (refused := _post_only(request)) is not None:
        return refused
    if section not in SECTIONS:
        raise Http404("No such settings section")
    form_class, saved, anchor = SECTIONS[section]
    form = form_class(request.POST, prefix=section)
    if form.is_valid():
        why = " ".join(form.cleaned_data.get("reason", "").split())
        try:
            _apply(section, actor=actor_of(request.user), practice=practice,
                   data=form.cleaned_data, why=why)
        except ValueError as e:
            # The action's own check (quiet hours, ages): nothing was saved.
            form.add_error(None, str(e))
        else:
            messages.success(request, f"Saved: {saved}.")
            return redirect(reverse("settings", kwargs={"practice": practice.slug})
                            + f"#{anchor}")
    return _page(request, practice, membership, bound=form, status=400)


@login_required
def export_download(request, practice):
    """Everything practicesync holds for the practice (`practicesync export`), for its admins
    only, audited before the first byte goes."""
    practice, _ = access_practice(request.user, practice, roles=(Membership.Role.ADMIN,))
    record_export(actor=actor_of(request.user), practice=practice, via="web")
    response = StreamingHttpResponse(export_json(practice), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{practice.slug}-export.json"'
    return response
