from django.db import models

from practicesync.practices.models import Practice
from practicesync.results.models import ResultGroup, ResultsTemplate


class Sequence(models.Model):
    """A results follow-up for one group (DESIGN.md section 4). The steps and sending come
    with the outreach engine; results sync creates, cancels and completes sequences."""

    class State(models.TextChoices):
        TO_ACTION_PAUSED = "to_action_paused", "To action – Paused"
        ACTIVE = "active"
        PAUSED_BOOKING = "paused_booking", "Paused – booked"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        OPTED_OUT = "opted_out"
        FAILED = "failed"

    LIVE = (State.TO_ACTION_PAUSED, State.ACTIVE, State.PAUSED_BOOKING)

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="sequences")
    group = models.OneToOneField(ResultGroup, on_delete=models.PROTECT, related_name="sequence")
    template = models.ForeignKey(ResultsTemplate, on_delete=models.PROTECT)
    state = models.CharField(max_length=20, choices=State.choices)
    state_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
