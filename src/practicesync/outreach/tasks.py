"""Background work for outreach: the tick runs as a Django task, queued by the worker."""

from django_tasks import task

from practicesync.runtime.queue import enqueue_once

from .dispatch import tick


@task()
def outreach_tick() -> dict:
    return tick().as_json()


def enqueue_tick() -> bool:
    """Queue a tick unless one is already waiting: an idle worker queues one per pass, a
    busy one does not pile them up. A second tick at the same time is harmless (claims)."""
    return enqueue_once("outreach_tick", outreach_tick)[1]
