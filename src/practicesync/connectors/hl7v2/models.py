"""The MLLP inbox: every frame the listener received, raw, keyed by its MSH.

A row is written (and committed) before the sender gets its ACK ("commit accept"), then parsed
and mapped by `inbox.process_inbox`. Dead letters are inbox rows in state `dead`: refused on
arrival (bad or unsupported MSH) or failed when processed; they keep their raw bytes so they can
be processed again after a fix.
"""

from django.db import models
from django.utils import timezone

from practicesync.practices.models import Practice


class InboundMessage(models.Model):
    class State(models.TextChoices):
        ACCEPTED = "accepted"        # committed, ACKed (commit mode), not yet applied
        PROCESSING = "processing"    # claimed by one worker
        PROCESSED = "processed"
        DEAD = "dead"

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT,
                                 related_name="inbound_messages")
    received_at = models.DateTimeField(default=timezone.now)
    # The MSH key as written: MSH-3, MSH-4, MSH-10. control_id is null for a frame whose MSH
    # could not be read (so such dead letters never collide with each other).
    sending_application = models.CharField(max_length=227, blank=True, default="")
    sending_facility = models.CharField(max_length=227, blank=True, default="")
    control_id = models.CharField(max_length=199, null=True, blank=True)
    message_type = models.CharField(max_length=40, blank=True, default="")
    raw = models.BinaryField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.ACCEPTED)
    error = models.TextField(blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    # "host:pid:start" of the process applying it (runtime/processes.py): a claim of a
    # process that was killed is taken over without waiting for STALE_CLAIM.
    claimed_by = models.CharField(max_length=300, blank=True, default="", db_default="")
    processed_at = models.DateTimeField(null=True, blank=True)
    # Dead letters: the incident is the id of its first dead letter; one alert per incident.
    incident = models.BigIntegerField(null=True, blank=True)
    alerted = models.BooleanField(default=False)
    # Refused on arrival (answered AR): kept as a dead letter but never holding its MSH key,
    # so the sender's corrected message with the same key is still taken.
    refused = models.BooleanField(default=False)
    # SHA-256 of the raw bytes: a reused key with other content is not a duplicate.
    digest = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["practice", "sending_application", "sending_facility", "control_id"],
                condition=models.Q(refused=False),
                name="one_inbound_message_per_msh_key"),
        ]
        indexes = [models.Index(fields=["practice", "state", "id"],
                                name="hl7v2_inbox_pick"),
                   # The hourly dead-letter cap counts refused rows; partial, so the hot
                   # path's inserts of accepted rows do not pay for it.
                   models.Index(fields=["practice", "received_at"],
                                condition=models.Q(refused=True),
                                name="hl7v2_inbox_refused")]

    def __str__(self) -> str:
        return f"{self.message_type} {self.control_id} ({self.state})"


class DeadLetterOverflow(models.Model):
    """Refused frames beyond the hourly dead-letter cap (PRACTICESYNC_DEAD_LETTER_CAP) of one
    practice: answered AR as usual, but only counted here, one row per clock hour, so a
    sender spewing garbage cannot fill the disk. Their bodies are not kept."""

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT,
                                 related_name="dead_letter_overflows")
    hour = models.DateTimeField()        # start of the clock hour (UTC)
    dropped = models.PositiveIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    last_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["practice", "hour"],
                                               name="one_dead_letter_overflow_per_hour")]

    def __str__(self) -> str:
        return f"{self.dropped} dropped from {self.hour:%Y-%m-%d %H}:00"
