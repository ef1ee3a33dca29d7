from django.db import models
from django.db.models import Q

from practicesync.patients.models import Patient
from practicesync.practices.models import Practice
from practicesync.results.models import ResultGroup, ResultsTemplate


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    PUSH = "push", "Push notification"
    EMAIL = "email", "Email"
    # Staff tasks: nothing is sent, someone at the practice does it.
    CALL = "call", "Staff call"
    LETTER = "letter", "Letter (Remind by post)"


MESSAGE_CHANNELS = (Channel.SMS, Channel.PUSH, Channel.EMAIL)
TASK_CHANNELS = (Channel.CALL, Channel.LETTER)


class Step(models.Model):
    """One step of a Results template: what goes out, how long after the previous step."""

    class Condition(models.TextChoices):
        ALWAYS = "", "Always"
        NOT_BOOKED = "not_booked", "Only if not yet booked"

    template = models.ForeignKey(ResultsTemplate, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()  # 1, 2, 3 ...
    channel = models.CharField(max_length=10, choices=Channel.choices)
    # After the previous step was taken (the first step: after Start).
    delay = models.DurationField()
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    condition = models.CharField(max_length=20, choices=Condition.choices, blank=True)

    class Meta:
        ordering = ["template", "position"]
        constraints = [models.UniqueConstraint(fields=["template", "position"],
                                               name="one_step_per_position")]


class Sequence(models.Model):
    """A results follow-up for one group (DESIGN.md section 4): where it is in its template's
    steps and when the next one is due. The worker takes due sequences; the state machine in
    sequences.py decides every change."""

    class State(models.TextChoices):
        TO_ACTION_PAUSED = "to_action_paused", "To action – Paused"
        ACTIVE = "active"
        PAUSED_BOOKING = "paused_booking", "Paused – booked"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        OPTED_OUT = "opted_out"
        FAILED = "failed"

    LIVE = (State.TO_ACTION_PAUSED, State.ACTIVE, State.PAUSED_BOOKING)

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="sequences",
                                 db_index=False)  # sequence_due begins with it
    group = models.OneToOneField(ResultGroup, on_delete=models.PROTECT, related_name="sequence")
    template = models.ForeignKey(ResultsTemplate, on_delete=models.PROTECT)
    state = models.CharField(max_length=20, choices=State.choices)
    state_reason = models.CharField(max_length=200, blank=True)
    next_position = models.PositiveSmallIntegerField(default=1)
    # Staff Restart begins round 2, 3...: its steps are new messages with keys of their own.
    round = models.PositiveSmallIntegerField(default=1)
    # When the next step is due. Kept while paused, so a resumed sequence keeps its place
    # (a step whose time passed goes at once); null once the sequence has finished.
    due_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    started_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # The worker's queue, in the order it takes it: a batch is read from the index alone,
        # without sorting every due sequence of the practice first.
        indexes = [models.Index(fields=["practice", "state", "due_at", "id"],
                                name="sequence_due_in_practice")]


class Message(models.Model):
    """One message to one patient, recorded before any provider is called. The idempotency
    key (one per sequence step, per ad-hoc send, per bulk recipient) is unique, so however
    often a crashed worker retries, the message exists once."""

    class Kind(models.TextChoices):
        RESULTS = "results"
        ADHOC = "adhoc", "Message"
        VIDEO = "video", "Video invite"
        BULK = "bulk"

    class Status(models.TextChoices):
        QUEUED = "queued"
        SENDING = "sending"  # claimed by a worker; the provider may or may not have it yet
        SENT = "sent"
        DELIVERED = "delivered"
        READ = "read"
        FAILED = "failed"
        # A send interrupted where the provider cannot say whether it went: staff check.
        UNKNOWN = "unknown"
        # Not sent: the last check before sending found a reason (deceased, opted out...).
        SKIPPED = "skipped"

    # Few indexes on purpose (a tick writes and updates 100,000 rows): see Meta. The practice
    # and the group repeat what the patient and the sequence say, so the database does not
    # check them again for every message (no foreign-key constraint, ADR 0019); the patient
    # and the sequence it does check. PROTECT still holds in the ORM.
    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="messages",
                                 db_index=False, db_constraint=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="messages")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    group = models.ForeignKey(ResultGroup, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="messages", db_index=False, db_constraint=False)
    sequence = models.ForeignKey(Sequence, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="messages", db_index=False)
    step = models.PositiveSmallIntegerField(null=True, blank=True)
    bulk = models.ForeignKey("BulkMessage", null=True, blank=True, on_delete=models.PROTECT,
                             related_name="messages", db_index=False)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    to = models.CharField(max_length=2000)  # a number, an address, or a push endpoint
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    idempotency_key = models.CharField(max_length=100)  # unique: see Meta
    attempts = models.PositiveSmallIntegerField(default=0)
    # queued: not before this; sending: the worker's claim runs out at this time.
    not_before = models.DateTimeField()
    provider = models.CharField(max_length=20, blank=True)
    provider_ref = models.CharField(max_length=200, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        # A constraint rather than unique=True: on PostgreSQL that would add a second index
        # for LIKE queries, which nothing runs, written on every send.
        constraints = [models.UniqueConstraint(fields=["idempotency_key"],
                                               name="message_idempotency_key")]
        indexes = [
            # The work queue: a practice's queued messages by time.
            models.Index(fields=["practice", "status", "not_before"], name="message_queue"),
            # A group's messages (results page), and a step's tries (fallback) by sequence.
            models.Index(fields=["group"], name="message_group",
                         condition=Q(group__isnull=False)),
            models.Index(fields=["sequence", "step"], name="message_sequence_step",
                         condition=Q(sequence__isnull=False)),
            models.Index(fields=["bulk"], name="message_bulk", condition=Q(bulk__isnull=False)),
            # Delivery receipts find their message by the provider's id; the outbox has none.
            models.Index(fields=["provider", "provider_ref"], name="message_provider_ref",
                         condition=~Q(provider__in=["", "outbox"])),
        ]


class StaffTask(models.Model):
    """Work put in front of staff instead of a message: a call, a letter, a send to check."""

    class Kind(models.TextChoices):
        CALL = "call", "Call the patient"
        LETTER = "letter", "Remind by post"
        CHECK_SEND = "check_send", "Check whether a message went out"

    class Status(models.TextChoices):
        OPEN = "open"
        DONE = "done"

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="staff_tasks")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="staff_tasks")
    group = models.ForeignKey(ResultGroup, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="staff_tasks")
    sequence = models.ForeignKey(Sequence, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="staff_tasks")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="staff_tasks")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    reason = models.CharField(max_length=300)
    status = models.CharField(max_length=6, choices=Status.choices, default=Status.OPEN)
    idempotency_key = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    done_by = models.CharField(max_length=200, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]


class OptOut(models.Model):
    """STOP or unsubscribe from one address on one channel. Kept by address because a
    STOP comes from a number, which may be shared by a family."""

    practice = models.ForeignKey(Practice, on_delete=models.CASCADE, related_name="opt_outs")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    address = models.CharField(max_length=2000)
    source = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["practice", "channel", "address"],
                                               name="one_opt_out_per_address")]


class PushSubscription(models.Model):
    """A Web Push subscription of a digital patient's browser or app."""

    practice = models.ForeignKey(Practice, on_delete=models.CASCADE,
                                 related_name="push_subscriptions")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE,
                                related_name="push_subscriptions")
    endpoint = models.URLField(max_length=2000)
    p256dh = models.CharField(max_length=200)
    auth = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["practice", "endpoint"],
                                               name="one_subscription_per_endpoint")]


class OutboxEntry(models.Model):
    """The local outbox provider: exactly what would have been sent, one row per provider
    call (never deduplicated here, so a double send would show as two rows)."""

    # A provider's record, kept as the provider would: the practice as a plain id (ADR 0019).
    practice = models.ForeignKey(Practice, on_delete=models.CASCADE, related_name="outbox",
                                 db_constraint=False)
    idempotency_key = models.CharField(max_length=100)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    to = models.CharField(max_length=2000)
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        # Not db_index=True, which on PostgreSQL adds a LIKE index as well.
        indexes = [models.Index(fields=["idempotency_key"], name="outbox_key")]


BULK_CHANNELS = (Channel.SMS, Channel.EMAIL)


class MessageTemplate(models.Model):
    """A saved, scanned text for bulk messages (DESIGN.md section 2, bulk-send rails). A bulk
    never takes text typed at the moment of sending: that is how a clinical note reached
    ~8,000 patients at Askern."""

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT,
                                 related_name="message_templates")
    name = models.CharField(max_length=100)
    channel = models.CharField(max_length=10, choices=[(c.value, c.label) for c in BULK_CHANNELS])
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["practice", "name"]
        constraints = [models.UniqueConstraint(fields=["practice", "name"],
                                               name="one_message_template_per_name")]


class BulkMessage(models.Model):
    """One message to every patient a filter selects (or, for a correction, to the patients
    an earlier bulk reached), confirmed by staff after a preview."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        CONFIRMED = "confirmed"
        CANCELLED = "cancelled"

    class Phase(models.TextChoices):
        """Where the bulk is on the rails. `status` above stays the coarse answer (was it
        confirmed, was it stopped); the phase says which rail it waits at."""
        DRAFT = "draft"  # created; waits for a second staff member when approval_needed
        APPROVED = "approved"  # approved; the first batch is queued in the same step
        FIRST_BATCH = "first_batch"  # the first batch is queued; the rest wait for a release
        RELEASED = "released"  # everyone is queued
        HALTED = "halted"  # stopped: nothing more is queued or sent

    practice = models.ForeignKey(Practice, on_delete=models.PROTECT, related_name="bulk_messages")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    recipient_filter = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_by = models.CharField(max_length=200, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    phase = models.CharField(max_length=12, choices=Phase.choices, default=Phase.DRAFT)
    # Null only on bulks written before bulk text had to come from a saved template.
    template = models.ForeignKey(MessageTemplate, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="bulk_messages")
    corrects = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="corrections")
    # A correction goes to exactly these patients (ids), not to whoever a filter selects.
    recipient_ids = models.JSONField(null=True, blank=True)
    # How many patients would get it, counted when it was created: what an approver sees.
    recipient_count = models.PositiveIntegerField(default=0)
    approval_needed = models.BooleanField(default=False)
    approved_by = models.CharField(max_length=200, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    # Patient ids: the first batch (what a correction of "the first batch" reaches), and the
    # recipients decided at confirm who wait for the release. Ids and not messages, so a
    # halted bulk has nothing left that a worker could send.
    first_batch = models.JSONField(default=list)
    waiting = models.JSONField(default=list)
    released_by = models.CharField(max_length=200, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    halted_by = models.CharField(max_length=200, blank=True)
    halted_at = models.DateTimeField(null=True, blank=True)
