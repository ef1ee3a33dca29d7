"""Tasks that wait in the queue at most once, whichever backend holds the queue (the
database, or Redis with PRACTICESYNC_TASKS_REDIS_URL): the id of the latest run queued is kept
in QueuedTask and its status asked of the backend (Django's tasks API, get_result).

Two processes asking at the same moment may both queue one; every task queued this way is
safe to run twice (the tick claims its rows; a second sync of an unchanged list changes
nothing)."""

from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks.base import Task
from django_tasks.exceptions import TaskResultDoesNotExist

from .models import QueuedTask

WAITING = frozenset({TaskResultStatus.READY})
WAITING_OR_RUNNING = frozenset({TaskResultStatus.READY, TaskResultStatus.RUNNING})


def waiting(key: str, task: Task, statuses=WAITING) -> str | None:
    """The id of the run of `task` last queued under `key`, while its status is one of
    `statuses`; else None (also when the backend no longer knows it)."""
    task_id = QueuedTask.objects.filter(key=key).values_list("task_id", flat=True).first()
    if task_id is None:
        return None
    try:
        status = task.get_result(task_id).status
    except TaskResultDoesNotExist:
        return None
    return task_id if status in statuses else None


def enqueue_once(key: str, task: Task, *, statuses=WAITING, **kwargs) -> tuple[str, bool]:
    """Queue `task(**kwargs)` unless the run last queued under `key` is still in `statuses`.
    Returns (task id, whether it was queued now)."""
    if task_id := waiting(key, task, statuses):
        return task_id, False
    task_id = str(task.enqueue(**kwargs).id)
    QueuedTask.objects.update_or_create(key=key, defaults={"task_id": task_id,
                                                           "queued_at": timezone.now()})
    return task_id, True
