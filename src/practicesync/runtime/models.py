from django.db import models


class QueuedTask(models.Model):
    """The latest queued run of a task that should wait in the queue at most once: the
    outreach tick, each practice's "Sync now". Kept here rather than read from the task
    backend's own table, so the check is the same with the database queue and with Redis
    (runtime/queue.py)."""

    key = models.CharField(max_length=100, unique=True)
    task_id = models.CharField(max_length=64)
    queued_at = models.DateTimeField()
