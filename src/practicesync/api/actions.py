"""API actions: keyword-only, one transaction each, audited."""

from django.db import transaction
from django.utils import timezone

from practicesync.audit import events
from practicesync.practices.models import Membership, Practice

from .models import ApiToken
from .tokens import digest, new_token


class TokenError(ValueError):
    pass


@transaction.atomic
def create_token(*, actor: str, practice: Practice, name: str, role: str) -> tuple[ApiToken, str]:
    """A new token and its secret, which is returned here once and stored nowhere."""
    name = name.strip()
    if not name:
        raise TokenError("the token needs a name")
    if role not in Membership.Role.values:
        raise TokenError(f"role {role!r}: use {', '.join(Membership.Role.values)}")
    if ApiToken.objects.filter(practice=practice, name=name, revoked_at__isnull=True).exists():
        raise TokenError(f"{practice.slug} already has a token named {name!r}; revoke it first")
    prefix, secret, whole = new_token()
    token = ApiToken.objects.create(practice=practice, name=name, prefix=prefix, role=role,
                                    secret_sha256=digest(secret), created_by=actor)
    events.record(practice=practice, actor=actor, action="api_token.created", why=name,
                  detail={"token_id": token.id, "name": name, "prefix": prefix, "role": role})
    return token, whole


@transaction.atomic
def revoke_token(*, actor: str, practice: Practice, prefix: str) -> ApiToken:
    token = ApiToken.objects.select_for_update().filter(practice=practice, prefix=prefix).first()
    if token is None:
        raise TokenError(f"{practice.slug} has no token with prefix {prefix!r}")
    if token.revoked_at is None:
        token.revoked_at, token.revoked_by = timezone.now(), actor
        token.save(update_fields=["revoked_at", "revoked_by"])
        events.record(practice=practice, actor=actor, action="api_token.revoked", why=token.name,
                      detail={"token_id": token.id, "name": token.name, "prefix": prefix})
    return token


@transaction.atomic
def list_tokens(*, actor: str, practice: Practice) -> list[ApiToken]:
    """Who holds keys to the practice's data is itself worth a record of who asked."""
    tokens = list(ApiToken.objects.filter(practice=practice))
    events.record(practice=practice, actor=actor, action="api_token.listed",
                  detail={"tokens": len(tokens)})
    return tokens
