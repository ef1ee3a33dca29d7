"""Who must use two-step login, and which step a logged-in session still has to take."""

from django_otp import user_has_device

from practicesync.practices.models import Membership

ENROL, VERIFY = "enrol", "verify"


def next_step(*, required: bool, has_device: bool, verified: bool) -> str | None:
    """The MFA page a session must go to before any other, or None. Anyone who has set up an
    authenticator proves it at every login; an admin without one must set one up first."""
    if verified:
        return None
    if has_device:
        return VERIFY
    return ENROL if required else None


def mfa_required(user) -> bool:
    """Admins (of any practice) and superusers: they can export, bulk-send and change settings."""
    return user.is_superuser or Membership.objects.filter(
        user=user, role=Membership.Role.ADMIN).exists()


def step_for(user) -> str | None:
    """next_step for a logged-in user on a request (OTPMiddleware has run)."""
    if user.is_verified():
        return None
    return next_step(required=mfa_required(user), has_device=user_has_device(user),
                     verified=False)
