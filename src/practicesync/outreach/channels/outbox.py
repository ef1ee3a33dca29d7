from django.db import transaction

from ..models import OutboxEntry
from . import Outcome, Provider


class OutboxProvider(Provider):
    """Stores exactly what would have been sent; the default for demo and tests. Its rows
    commit on their own, as a real provider's would, apart from the message's state."""

    name = "outbox"
    can_lookup = True

    def send_many(self, messages) -> list[Outcome]:
        with transaction.atomic():
            entries = OutboxEntry.objects.bulk_create([
                OutboxEntry(practice_id=m.practice_id, idempotency_key=m.idempotency_key,
                            channel=m.channel, to=m.to, subject=m.subject, body=m.body)
                for m in messages])
        return [Outcome(m.id, ref=f"outbox:{e.id}") for m, e in zip(messages, entries, strict=True)]

    def send(self, message) -> str:
        return self.send_many([message])[0].ref

    def lookup(self, keys: list[str]) -> dict[str, str]:
        return {key: f"outbox:{id_}" for id_, key in
                OutboxEntry.objects.filter(idempotency_key__in=keys, channel=self.channel)
                .values_list("id", "idempotency_key")}
