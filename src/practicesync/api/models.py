from django.db import models
from django.db.models import Q

from practicesync.practices.models import Membership, Practice


class ApiToken(models.Model):
    """A bearer token for one practice's REST API (docs/adr/0015-rest-api.md). Only the
    SHA-256 of its secret is kept: the secret is shown once, when the token is made."""

    practice = models.ForeignKey(Practice, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    # Public part of the token, `psk_<prefix>_<secret>`: finds the row without the secret.
    prefix = models.CharField(max_length=16, unique=True)
    secret_sha256 = models.CharField(max_length=64)
    # What the token may do, as a staff member of that role may.
    role = models.CharField(max_length=20, choices=Membership.Role.choices)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=200, blank=True)
    # The rate limit's fixed window: its minute (UTC) and the requests counted in it. Kept
    # on the row and moved by one conditional UPDATE, so every worker counts the same.
    window_start = models.DateTimeField(null=True, blank=True)
    window_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["practice", "created_at", "id"]
        constraints = [
            # The token's name is its actor in the audit log (`api:<name>`): one live each.
            models.UniqueConstraint(fields=["practice", "name"], condition=Q(revoked_at__isnull=True),
                                    name="one_live_api_token_per_name"),
        ]

    @property
    def actor(self) -> str:
        return f"api:{self.name}"
