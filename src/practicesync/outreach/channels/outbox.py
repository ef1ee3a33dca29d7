from django.db import transaction
from django.utils import timezone

from practicesync.bulk import insert_rows

from ..models import OutboxEntry
from . import Outcome, Provider

REF = "outbox"
COLUMNS = ["practice_id", "idempotency_key", "channel", "to", "subject", "body", "created_at"]


class OutboxProvider(Provider):
    """Stores exactly what would have been sent; the default for demo and tests. Its rows
    commit on their own, as a real provider's would, apart from the message's state."""

    name = "outbox"
    can_lookup = True
    chunk = 5000

    def send_many(self, messages) -> list[Outcome]:
        now = timezone.now()
        with transaction.atomic():
            insert_rows(OutboxEntry, ({"practice_id": m.practice_id,
                                       "idempotency_key": m.idempotency_key, "channel": m.channel,
                                       "to": m.to, "subject": m.subject, "body": m.body,
                                       "created_at": now} for m in messages), COLUMNS)
        # The outbox keeps each entry under its idempotency key: that is the reference.
        return [Outcome(m.id, ref=REF) for m in messages]

    def send(self, message) -> str:
        return self.send_many([message])[0].ref

    def lookup(self, keys: list[str]) -> dict[str, str]:
        return {key: REF for key in
                OutboxEntry.objects.filter(idempotency_key__in=keys, channel=self.channel)
                .values_list("idempotency_key", flat=True)}
