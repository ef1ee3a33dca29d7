"""Two-step login actions: keyword-only, one transaction each, audited.

A staff user is not tied to one practice, so each event is written to every practice the
user belongs to: each practice's audit log then shows its own staff's sign-in security.
Codes, keys and backup codes never go into an event."""

import datetime as dt
from dataclasses import dataclass

from axes.utils import reset as axes_reset
from django.contrib.auth import get_user_model
from django.db import transaction
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from practicesync.audit import events
from practicesync.numbers import is_digits
from practicesync.practices.models import Membership

BACKUP_CODES = 10
DEVICE_NAME = "Authenticator app"


def _record_for_member(user, *, actor: str, action: str, why: str = "",
                       detail: dict | None = None) -> None:
    for membership in Membership.objects.filter(user=user).select_related("practice"):
        events.record(practice=membership.practice, actor=actor, action=action, why=why,
                      detail={"email": user.email or user.username, **(detail or {})})


def pending_device(*, user) -> TOTPDevice:
    """The authenticator the user is setting up: unconfirmed until they type a code from it.
    The same key on every visit, so reloading the page does not undo a scanned QR code."""
    return (TOTPDevice.objects.filter(user=user, confirmed=False).order_by("id").first()
            or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False))


@transaction.atomic
def confirm_enrolment(*, actor: str, user, device_id: int, code: str) -> list[str] | None:
    """Confirm the pending authenticator with a current code from it. Returns the new backup
    codes (shown once; any older ones are replaced), or None if the code did not match."""
    device = TOTPDevice.objects.select_for_update().get(id=device_id, user=user, confirmed=False)
    if not device.verify_token(code):
        _record_for_member(user, actor=actor, action="mfa.verify_failed",
                           detail={"step": "enrol", "failures": device.throttling_failure_count})
        return None
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    StaticDevice.objects.filter(user=user).delete()
    backup = StaticDevice.objects.create(user=user, name="Backup codes", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(BACKUP_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=backup, token=c) for c in codes)
    _record_for_member(user, actor=actor, action="mfa.enrolled",
                       detail={"backup_codes": BACKUP_CODES})
    return codes


@dataclass(frozen=True)
class Verification:
    device: Device | None = None
    # Set when django-otp's throttle refused to check the code (too many wrong ones lately).
    wait_until: dt.datetime | None = None

    @property
    def counted_failure(self) -> bool:
        return self.device is None and self.wait_until is None


@transaction.atomic
def verify_login(*, actor: str, user, code: str) -> Verification:
    """Check a login's second step: a 6-digit authenticator code or one backup code (which
    is then used up). A wrong code adds to the device's throttle (1, 2, 4, 8... seconds)."""
    backup = not is_digits(code)
    model = StaticDevice if backup else TOTPDevice
    device = (model.objects.devices_for_user(user, confirmed=True).select_for_update()
              .order_by("id").first())
    if device is not None:
        allowed, why = device.verify_is_allowed()
        if not allowed:
            return Verification(wait_until=why["locked_until"])
        if device.verify_token(code):
            if backup:
                _record_for_member(user, actor=actor, action="mfa.backup_code_used",
                                   detail={"backup_codes_left": device.token_set.count()})
            return Verification(device=device)
    detail = {"step": "login", "kind": "backup code" if backup else "authenticator"}
    if device is not None:
        detail["failures"] = device.throttling_failure_count
    _record_for_member(user, actor=actor, action="mfa.verify_failed", detail=detail)
    return Verification()


@transaction.atomic
def reset_mfa(*, actor: str, user, why: str) -> int:
    """Remove all of the user's authenticators and backup codes; returns how many devices.
    An admin must then set up a new authenticator at their next login."""
    devices = [TOTPDevice.objects.filter(user=user), StaticDevice.objects.filter(user=user)]
    removed = sum(found.count() for found in devices)
    for found in devices:
        found.delete()
    _record_for_member(user, actor=actor, action="mfa.reset", why=why,
                       detail={"devices_removed": removed})
    return removed


@transaction.atomic
def record_lockout(*, username: str | None, ip_address: str | None) -> None:
    """django-axes locked this email (from this address) out after repeated failures."""
    user = get_user_model().objects.filter(username=(username or "").lower()).first()
    if user is not None:
        _record_for_member(user, actor=events.SYSTEM, action="auth.locked_out",
                           why="too many failed logins or codes",
                           detail={"ip_address": ip_address or ""})


@transaction.atomic
def unlock_login(*, actor: str, user) -> int:
    """Lift a django-axes lockout of the user's email (from any address) before the 15
    minutes are up; returns how many lockout records were cleared."""
    cleared = axes_reset(username=user.get_username())
    if cleared:
        _record_for_member(user, actor=actor, action="auth.unlocked",
                           detail={"records_cleared": cleared})
    return cleared
