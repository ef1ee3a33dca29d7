from django.db import models

from practicesync.patients.models import Patient
from practicesync.practices.models import Practice


class ResultsTemplate(models.Model):
    """The practice's follow-up for one automatic action ("Non-urgent results")."""

    practice = models.ForeignKey(Practice, on_delete=models.CASCADE, related_name="results_templates")
    action_key = models.CharField(max_length=40)
    name = models.CharField(max_length=100)
    # Off by default: groups wait as "To action – Paused" until staff press Start.
    auto_start = models.BooleanField(default=False)
    # Pause on Booking: a booking pauses the sequence, a cancellation or did-not-attend resumes it.
    pause_on_booking = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["practice", "action_key"],
                                               name="one_template_per_action")]

    def __str__(self) -> str:
        return self.name


class ResultGroup(models.Model):
    """A patient's results performed on one day: at most one sequence or checklist item."""

    class Disposition(models.TextChoices):
        TEMPLATE = "template"
        CHECKLIST = "checklist"
        IGNORED = "ignored"

    class State(models.TextChoices):
        OPEN = "open"
        DONE = "done"

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="result_groups")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="result_groups")
    performed_on = models.DateField()
    action = models.CharField(max_length=100)
    action_key = models.CharField(max_length=40)
    priority = models.PositiveSmallIntegerField()
    disposition = models.CharField(max_length=10, choices=Disposition.choices)
    template = models.ForeignKey(ResultsTemplate, null=True, blank=True, on_delete=models.PROTECT)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    # Recalls > Summary: staff tick a checklist group done.
    checklist_done_by = models.CharField(max_length=200, blank=True)
    checklist_done_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["practice", "patient", "performed_on"],
                                               name="one_group_per_patient_per_day")]
        ordering = ["-performed_on", "id"]


class Result(models.Model):
    """One result as the PMS reported it, whether or not it counts (and why not)."""

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="results")
    result_id = models.CharField(max_length=100)
    pms_id = models.CharField(max_length=64)
    patient = models.ForeignKey(Patient, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="results")
    test_name = models.CharField(max_length=200)
    performed_on = models.DateField()
    performed_at = models.DateTimeField(null=True, blank=True)
    reported_on = models.DateField(null=True, blank=True)
    actioned_on = models.DateField(null=True, blank=True)
    action = models.CharField(max_length=100, blank=True)
    action_key = models.CharField(max_length=40, blank=True)
    action_kind = models.CharField(max_length=10, blank=True)
    comment = models.TextField(blank=True)
    filed_under = models.CharField(max_length=100, blank=True)
    tab = models.CharField(max_length=50, blank=True)
    location = models.CharField(max_length=50, blank=True)
    notified = models.CharField(max_length=10, blank=True)
    eligible = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    group = models.ForeignKey(ResultGroup, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="results")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["practice", "result_id"],
                                               name="one_result_per_source_id")]


class PmsCursor(models.Model):
    """How far `results poll` has imported a PMS database: per table, the (UPDATED, id) of
    the last row imported, e.g. {"INVESTIGATIONS": "2026-11-20 09:14:03.250|1042"}. Moved in
    the same transaction as the import of the rows before it."""

    practice = models.ForeignKey(Practice, on_delete=models.CASCADE, related_name="pms_cursors")
    source = models.CharField(max_length=1000)  # the database polled, as an absolute path
    position = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["practice", "source"],
                                               name="one_cursor_per_pms_source")]

    def __str__(self) -> str:
        return f"{self.source} at {self.position}"
