from django.db import models
from django.db.models import Q

from practicesync.practices.models import Membership, Practice

# The fields a practice list row carries, in the canonical CSV's order (DESIGN.md section 5).
IDENTIFIER_FIELDS = ("nhs_number", "medicare_number", "ihi")
DEMOGRAPHIC_FIELDS = ("title", "given_name", "family_name", "date_of_birth", "sex")
CONTACT_FIELDS = (
    "mobile_phone",
    "home_phone",
    "email",
    "address_line1",
    "address_line2",
    "locality",
    "postcode",
)
STATUS_FIELDS = ("status", "date_of_death")
SYNCED_FIELDS = ("pms_id", *IDENTIFIER_FIELDS, *DEMOGRAPHIC_FIELDS, *CONTACT_FIELDS, *STATUS_FIELDS)


class Patient(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        LEFT = "left"
        DECEASED = "deceased"
        # Linked by staff into another record (the review queue's Link): kept for its
        # history, never matched, listed or messaged again.
        MERGED = "merged"

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="patients")
    # pms_id is set once the patient has been linked to a row of the PMS practice list;
    # account_id once the patient signed up themselves (a "digital" patient).
    pms_id = models.CharField(max_length=64, null=True, blank=True)
    account_id = models.CharField(max_length=64, null=True, blank=True)
    digital = models.BooleanField(default=False)
    link_reason = models.CharField(max_length=32, blank=True)

    nhs_number = models.CharField(max_length=10, null=True, blank=True)
    medicare_number = models.CharField(max_length=11, null=True, blank=True)
    ihi = models.CharField(max_length=16, null=True, blank=True)

    title = models.CharField(max_length=30, blank=True)
    given_name = models.CharField(max_length=100)
    family_name = models.CharField(max_length=100)
    date_of_birth = models.DateField()
    sex = models.CharField(max_length=1, blank=True)

    mobile_phone = models.CharField(max_length=20, null=True, blank=True)
    home_phone = models.CharField(max_length=20, null=True, blank=True)
    email = models.CharField(max_length=254, null=True, blank=True)
    address_line1 = models.CharField(max_length=200, blank=True)
    address_line2 = models.CharField(max_length=200, blank=True)
    locality = models.CharField(max_length=100, blank=True)
    postcode = models.CharField(max_length=12, blank=True)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    date_of_death = models.DateField(null=True, blank=True)

    # Hash of the list row and the record as the last sync left them: a row whose
    # fingerprint still matches is known to change nothing and is not merged again.
    list_fingerprint = models.CharField(max_length=32, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["practice", "pms_id"],
                condition=Q(pms_id__isnull=False),
                name="unique_pms_id_per_practice",
            ),
            models.UniqueConstraint(
                fields=["practice", "account_id"],
                condition=Q(account_id__isnull=False),
                name="unique_account_per_practice",
            ),
        ]
        indexes = [models.Index(fields=["practice", "family_name", "given_name"])]

    def __str__(self) -> str:
        return f"{self.given_name} {self.family_name} ({self.pms_id or self.account_id or self.pk})"

    @property
    def contactable(self) -> bool:
        return self.status == self.Status.ACTIVE


class SyncRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        COMPLETED_WITH_ERRORS = "completed_with_errors"
        REFUSED_TRUNCATED = "refused_truncated"
        FAILED = "failed"

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="sync_runs")
    kind = models.CharField(max_length=20, default="patients")
    source = models.CharField(max_length=1000)
    status = models.CharField(max_length=30, choices=Status.choices, default=Status.RUNNING)
    triggered_by = models.CharField(max_length=200)
    allow_drop_reason = models.TextField(blank=True)
    counts = models.JSONField(default=dict)
    errors = models.JSONField(default=list)
    failure = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # "host:pid:start" of the process applying it (runtime/processes.py): a run whose process
    # is gone was interrupted (sync.close_interrupted_runs).
    owner = models.CharField(max_length=300, blank=True, default="", db_default="")

    class Meta:
        ordering = ["-started_at"]

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class ReviewItem(models.Model):
    """Something a person must decide: the sync never guesses when a record might be wrong."""

    class Status(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"
        DISMISSED = "dismissed"

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="review_items")
    kind = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    detail = models.TextField()
    pms_ids = models.JSONField(default=list)
    account_ids = models.JSONField(default=list)
    patients = models.ManyToManyField(Patient, related_name="review_items", blank=True)
    sync_run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.PROTECT)
    # Identifies the same finding on a later run, so a nightly re-run does not raise it again.
    key = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)
    # How staff settled it (the audit event has the same): linked | not_same | ignored.
    resolution = models.CharField(max_length=20, blank=True)
    resolution_note = models.TextField(blank=True)
    resolved_by = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Linking records whose dates of birth differ needs this ticked: "checked with the patient".
    dob_checked = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["practice", "key"], name="one_review_item_per_finding")
        ]


class NotSamePerson(models.Model):
    """Staff decided a list row and a patient record are different people: never propose again."""

    practice = models.ForeignKey(Practice, on_delete=models.CASCADE)
    pms_id = models.CharField(max_length=64)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE)
    recorded_by = models.CharField(max_length=200)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["practice", "pms_id", "patient"], name="not_same_once")
        ]


class PatientRequest(models.Model):
    """A non-digital request: the patient phoned or came to the desk, and staff logged what
    they asked for so that someone at the practice does it (DESIGN.md section 1)."""

    class Status(models.TextChoices):
        OPEN = "open"
        DONE = "done"

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT,
                                 related_name="patient_requests")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="requests")
    reason = models.CharField(max_length=200)
    notes = models.TextField(blank=True)
    # A membership, not a user: only staff of this practice can be given the work, and a
    # request whose assignee left the practice stays, unassigned.
    assigned_to = models.ForeignKey(Membership, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="assigned_requests")
    due_on = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=6, choices=Status.choices, default=Status.OPEN)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    done_by = models.CharField(max_length=200, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["practice", "status"], name="patient_request_status")]
