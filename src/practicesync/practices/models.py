import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import models


class Practice(models.Model):
    """A tenant. Every other row in practicesync belongs to exactly one practice."""

    class PMS(models.TextChoices):
        BEST_PRACTICE = "bestpractice", "Best Practice"
        MEDICAL_DIRECTOR = "medicaldirector", "Medical Director"
        DOCMAN10 = "docman10", "Docman 10"

    class Country(models.TextChoices):
        AU = "AU", "Australia"
        GB = "GB", "United Kingdom"

    class Hl7AckMode(models.TextChoices):
        COMMIT = "commit", "ACK once stored (commit accept)"
        ORIGINAL = "original", "ACK once applied (original mode)"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    pms = models.CharField(max_length=20, choices=PMS.choices)
    country = models.CharField(max_length=2, choices=Country.choices)
    timezone = models.CharField(max_length=64)

    # Patient Sync is off until the data controller's permission and DPIA are on record.
    permission_granted_by = models.CharField(max_length=200, blank=True)
    permission_granted_at = models.DateTimeField(null=True, blank=True)
    dpia_ref = models.CharField(max_length=200, blank=True)

    # Nightly sync: where the practice list is read from and when (practice-local time).
    list_source = models.CharField(max_length=1000, blank=True)
    list_format = models.CharField(max_length=20, default="csv")
    nightly_sync_at = models.TimeField(default=dt.time(2, 0))
    next_sync_due = models.DateTimeField(null=True, blank=True)
    # A list dropping more than this share of the practice's listed patients is refused.
    max_drop_share = models.DecimalField(max_digits=4, decimal_places=3, default=0.05)

    # Outreach policy (DESIGN.md section 4). Sends wait for the window, which can never
    # reach into 20:00-08:00; days are ISO weekdays, "12345" = Monday to Friday.
    send_days = models.CharField(max_length=7, default="12345")
    send_from = models.TimeField(default=dt.time(9, 0))
    send_until = models.TimeField(default=dt.time(18, 0))
    sends_per_hour = models.PositiveIntegerField(default=2000)
    # No SMS/push below this age; up to teen_until only generic wording (often a parent's mobile).
    min_age_sms = models.PositiveSmallIntegerField(default=12)
    teen_until = models.PositiveSmallIntegerField(default=17)
    stop_all = models.BooleanField(default=False)  # the global stop-all switch
    # The hourly send budget as spent so far: the clock hour (UTC) and messages claimed in it.
    # Kept here, under the practice row's lock, so every worker spends the same budget.
    sends_hour = models.DateTimeField(null=True, blank=True)
    sends_in_hour = models.PositiveIntegerField(default=0)
    booking_url = models.URLField(max_length=500, blank=True)
    video_base_url = models.URLField(max_length=500, default="https://video.example.org/room/")

    # HL7 v2 / FHIR feeds (docs/adr/0010): when `practicesync mllp` answers, unless --mode says;
    # and the identifier system (PID-3 assigning authority, Patient.identifier.system) that is
    # the PMS's record number. Empty: picked by identifier type (PI, then MR), as before.
    hl7_ack_mode = models.CharField(max_length=8, choices=Hl7AckMode.choices,
                                    default=Hl7AckMode.COMMIT)
    pms_id_system = models.CharField(max_length=200, blank=True, default="")

    # Retention (docs/adr/0017): raw inbound HL7/FHIR messages and outreach message texts are
    # kept this many days, then purged by the daily run (`next_purge_due`, claimed by workers).
    retain_raw_messages_days = models.PositiveIntegerField(default=90)
    retain_message_bodies_days = models.PositiveIntegerField(default=365)
    next_purge_due = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def sync_permitted(self) -> bool:
        return bool(self.permission_granted_at and self.permission_granted_by and self.dpia_ref)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin"
        CLINICIAN = "clinician"
        RECEPTION = "reception"

    practice = models.ForeignKey(Practice, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["practice", "user"], name="one_membership_per_practice")
        ]
