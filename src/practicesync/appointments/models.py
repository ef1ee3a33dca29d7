from django.db import models

from practicesync.patients.models import Patient
from practicesync.practices.models import Practice


class Appointment(models.Model):
    """An appointment as the PMS (or a booking link) last reported it. Pause on Booking reads
    a patient's appointments as a whole, so their order of arrival does not matter."""

    class Status(models.TextChoices):
        BOOKED = "booked"
        CANCELLED = "cancelled"
        DNA = "dna", "Did not attend"
        ATTENDED = "attended"

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="appointments")
    appointment_id = models.CharField(max_length=100)
    pms_id = models.CharField(max_length=64)
    patient = models.ForeignKey(Patient, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="appointments")
    starts_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices)
    source = models.CharField(max_length=20)  # csv, hl7, fhir, pms, booking_link
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["practice", "appointment_id"],
                                               name="one_appointment_per_source_id")]
        indexes = [models.Index(fields=["practice", "patient", "starts_at"])]
