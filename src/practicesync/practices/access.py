"""Fetch-and-authorise helpers: every practice-scoped lookup goes through one of these."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Membership, Practice


class UnknownPractice(LookupError):
    pass


class SyncNotPermitted(PermissionError):
    """Patient data may not be read until the practice's permission and DPIA are recorded."""


def practice_by_slug(slug: str) -> Practice:
    try:
        return Practice.objects.get(slug=slug)
    except Practice.DoesNotExist as e:
        raise UnknownPractice(f"no practice with slug {slug!r}") from e


def require_sync_permission(practice: Practice) -> None:
    if not practice.sync_permitted:
        raise SyncNotPermitted(
            f"Patient Sync is off for {practice.slug}: record the practice's permission and "
            f"DPIA reference first with `practicesync practice permit --practice {practice.slug} "
            f"--granted-by NAME --dpia-ref REF`.")


def access_practice(user, slug: str, *, roles: tuple[str, ...] = ()) -> tuple[Practice, Membership]:
    """The practice `slug` and the user's membership of it, or 404 (never reveal others).
    With `roles`, a member whose role is not among them gets 403: they know the practice,
    they just may not do this (export, bulk and settings are for admins)."""
    if not user.is_authenticated:
        raise PermissionDenied
    membership = (Membership.objects.select_related("practice")
                  .filter(user=user, practice__slug=slug).first())
    if membership is None:
        raise Http404("No such practice")
    if roles and membership.role not in roles:
        raise PermissionDenied(f"This needs the {' or '.join(roles)} role")
    return membership.practice, membership
