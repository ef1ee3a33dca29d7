"""Background work for Patient Sync: the nightly run of each practice."""

import datetime as dt
import logging

from django.db import connection, transaction
from django.utils import timezone
from django_tasks import task

from practicesync.practices.access import SyncNotPermitted
from practicesync.practices.actions import next_nightly_run
from practicesync.practices.models import Practice
from practicesync.runtime.queue import WAITING_OR_RUNNING, enqueue_once, waiting

from .models import SyncRun
from .sync import SyncReport, record_failed_run, sync_patient_list

log = logging.getLogger(__name__)
NIGHTLY = "system:nightly"


# A nightly run that fails (the export not there yet, the PMS database down) is tried again
# after these waits, then not until the next night; every try is a run staff can see.
NIGHTLY_RETRIES = (dt.timedelta(minutes=15), dt.timedelta(hours=1), dt.timedelta(hours=4))
RETRY_WINDOW = dt.timedelta(hours=12)


@task()
def nightly_patient_sync(practice_id: int) -> dict:
    practice = Practice.objects.get(id=practice_id)
    try:
        report = run_configured_sync(practice, actor=NIGHTLY)
    except Exception:
        # Its run is recorded failed. The retry is best effort: the error may have been the
        # database itself; the task then reports that error, not the retry's.
        try:
            connection.close_if_unusable_or_obsolete()
            retry_failed_night(practice, now=timezone.now())
        except Exception:  # noqa: BLE001
            log.warning("practice=%s nightly sync failed and its retry could not be set",
                        practice.id)
        raise
    if report.status == SyncRun.Status.FAILED:
        retry_failed_night(practice, now=timezone.now())
    return report.as_json()


def retry_after(failures_in_a_row: int) -> dt.timedelta | None:
    """How long after the latest of `failures_in_a_row` failed nightly runs to try again;
    None: wait for the next night."""
    if 1 <= failures_in_a_row <= len(NIGHTLY_RETRIES):
        return NIGHTLY_RETRIES[failures_in_a_row - 1]
    return None


def retry_failed_night(practice: Practice, *, now) -> dt.datetime | None:
    """Bring the practice's next sync forward for a retry (never later than its next night).
    Returns when, or None when the retries are used up."""
    # This night's runs only: the window ends well before the night before.
    latest = SyncRun.objects.filter(practice=practice, triggered_by=NIGHTLY,
                                    started_at__gte=now - RETRY_WINDOW).order_by(
        "-started_at", "-id").values_list("status", flat=True)[:len(NIGHTLY_RETRIES) + 2]
    failures = 0
    for status in latest:
        if status != SyncRun.Status.FAILED:
            break
        failures += 1
    wait = retry_after(failures)
    if wait is None:
        return None
    when = now + wait
    moved = Practice.objects.filter(id=practice.id, next_sync_due__gt=when).update(
        next_sync_due=when)
    if moved:
        log.info("practice=%s nightly sync failed %s time(s); retry at %s", practice.id,
                 failures, when.isoformat())
    return when if moved else None


@task()
def patient_sync_now(practice_id: int, actor: str) -> dict:
    """"Sync now" from the dashboard: what `practicesync sync now` does, run by the worker."""
    return run_configured_sync(Practice.objects.get(id=practice_id), actor=actor).as_json()


def sync_now_key(practice: Practice) -> str:
    return f"sync_now:{practice.id}"


def sync_now_waiting(practice: Practice) -> str | None:
    """The task id of a "Sync now" of the practice that is queued or running, or None."""
    return waiting(sync_now_key(practice), patient_sync_now, WAITING_OR_RUNNING)


def queue_sync_now_task(practice: Practice, *, actor: str) -> tuple[str, bool]:
    """(task id, queued now): a "Sync now" already queued or running is not queued again."""
    return enqueue_once(sync_now_key(practice), patient_sync_now, statuses=WAITING_OR_RUNNING,
                        practice_id=practice.id, actor=actor)


def run_configured_sync(practice: Practice, *, actor: str) -> SyncReport:
    """Sync from the practice's configured source. No source, or no permission, is a failed
    run that staff can see; nothing else is changed."""
    if not practice.list_source:
        return record_failed_run(practice=practice, source="", actor=actor, failure=(
            "no practice list source configured (practicesync practice schedule)"))
    try:
        report = sync_patient_list(practice=practice, source=practice.list_source, actor=actor,
                                   fmt=practice.list_format)
    except SyncNotPermitted as e:
        return record_failed_run(practice=practice, source=practice.list_source, actor=actor,
                                 failure=str(e))
    log.info("practice=%s nightly sync run=%s status=%s", practice.id, report.run_id,
             report.status)
    return report


def enqueue_due_syncs(now=None) -> list[int]:
    """Queue the nightly sync of every practice that is due. Each due slot is claimed with a
    conditional UPDATE, so two workers never queue the same night twice."""
    now = now or timezone.now()
    queued = []
    due = Practice.objects.filter(next_sync_due__lte=now).exclude(list_source="")
    for practice in due:
        # Claim and queue together: a crash between them must not lose the night.
        with transaction.atomic():
            claimed = Practice.objects.filter(
                id=practice.id, next_sync_due=practice.next_sync_due
            ).update(next_sync_due=next_nightly_run(practice, now))
            if claimed:
                nightly_patient_sync.enqueue(practice.id)
                queued.append(practice.id)
    return queued
