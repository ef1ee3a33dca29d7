"""Background work for the retention policy: each practice's daily purge."""

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_tasks import task

from .actions import next_nightly_run, purge_expired
from .models import Practice
from .retention import PURGE_AT

RETENTION = "system:retention"


@task()
def retention_purge(practice_id: int) -> dict:
    return purge_expired(practice=Practice.objects.get(id=practice_id), actor=RETENTION)


def enqueue_due_purges(now=None) -> list[int]:
    """Queue the daily purge of every practice that is due (a practice never purged yet is
    due at once). Each day is claimed with a conditional UPDATE, so two workers never queue
    the same practice's purge twice."""
    now = now or timezone.now()
    queued = []
    for practice in Practice.objects.filter(Q(next_purge_due__lte=now)
                                            | Q(next_purge_due__isnull=True)):
        claim = (Q(next_purge_due__isnull=True) if practice.next_purge_due is None
                 else Q(next_purge_due=practice.next_purge_due))
        # Claim and queue together: a crash between them must not lose the day.
        with transaction.atomic():
            if Practice.objects.filter(claim, id=practice.id).update(
                    next_purge_due=next_nightly_run(practice, now, at=PURGE_AT)):
                retention_purge.enqueue(practice.id)
                queued.append(practice.id)
    return queued
