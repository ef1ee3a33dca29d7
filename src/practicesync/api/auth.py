"""Who is calling (a practice's API token), how often it may, and what it may do."""

import datetime as dt

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Case, F, Q, Value, When
from django.http import Http404
from django.utils import timezone
from ninja.security import HttpBearer
from ninja.throttling import BaseThrottle

from practicesync.practices.models import Membership

from .models import ApiToken
from .tokens import secret_matches, split_token

R = Membership.Role
# What a token of each role may do: the dashboard's rules for staff of that role (any
# member starts, pauses, cancels and restarts sequences and messages a patient; DESIGN.md
# section 1). What feeds or runs a sync of PMS data is an admin's, like the sync commands.
MAY = {
    "read": (R.ADMIN, R.CLINICIAN, R.RECEPTION),
    "sequence": (R.ADMIN, R.CLINICIAN, R.RECEPTION),
    "message": (R.ADMIN, R.CLINICIAN, R.RECEPTION),
    "appointments": (R.ADMIN,),
    "sync": (R.ADMIN,),
}


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str) -> ApiToken | None:
        parts = split_token(token.strip())
        if parts is None:
            return None
        prefix, secret = parts
        found = ApiToken.objects.select_related("practice").filter(prefix=prefix).first()
        # Compared even when no row has the prefix: a miss takes as long as a wrong secret.
        if not secret_matches(secret, found.secret_sha256 if found else None):
            return None
        return found if found.revoked_at is None else None


def rate_per_minute() -> int:
    return getattr(settings, "PRACTICESYNC_API_RATE_PER_MINUTE", 600)


def spend_request(token: ApiToken, now: dt.datetime, limit: int) -> bool:
    """Count one request in the token's window of this minute, if it has any left. One
    conditional UPDATE: however many workers answer the token, they spend one budget."""
    minute = now.astimezone(dt.UTC).replace(second=0, microsecond=0)
    return ApiToken.objects.filter(
        Q(id=token.id) & (~Q(window_start=minute) | Q(window_count__lt=limit))
    ).update(window_count=Case(When(window_start=minute, then=F("window_count") + 1),
                               default=Value(1)),
             window_start=minute, last_used_at=now) == 1


class TokenRate(BaseThrottle):
    """PRACTICESYNC_API_RATE_PER_MINUTE requests per token per clock minute (fixed window)."""

    def allow_request(self, request) -> bool:
        return spend_request(request.auth, timezone.now(), rate_per_minute())

    def wait(self) -> float:
        # Until the window turns over: the next clock minute.
        now = timezone.now()
        return 60 - now.second - now.microsecond / 1e6


def scoped(request, slug: str, may: str = "read"):
    """The token's practice, if `slug` is it (any other slug is 404, as for a practice that
    does not exist), and the token's role may do `may` (else 403)."""
    token: ApiToken = request.auth
    if slug != token.practice.slug:
        raise Http404
    if token.role not in MAY[may]:
        raise PermissionDenied(f"A {token.role} token may not do this; it needs the "
                               f"{' or '.join(MAY[may])} role.")
    return token.practice
