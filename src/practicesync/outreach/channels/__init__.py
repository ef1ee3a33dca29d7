"""Channel providers behind one interface. The dispatcher records a message (status
`sending`) before it calls a provider; a provider only delivers and reports.

Settings PRACTICESYNC_PROVIDERS maps a channel (sms, email, push) to a provider class;
the default is the local outbox for every channel.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass

from django.conf import settings
from django.utils.module_loading import import_string

DEFAULT_PROVIDERS = {
    "sms": "practicesync.outreach.channels.outbox.OutboxProvider",
    "email": "practicesync.outreach.channels.outbox.OutboxProvider",
    "push": "practicesync.outreach.channels.outbox.OutboxProvider",
}


class TransientError(Exception):
    """Try again later (timeouts, 429, 5xx)."""


class PermanentError(Exception):
    """This message will never go this way (invalid number, unsubscribed, 4xx)."""


class UncertainError(Exception):
    """The provider may have taken the message (a read timeout after the request went):
    sending again could send twice, so staff check instead."""


@dataclass(frozen=True)
class Outcome:
    message_id: int
    ref: str = ""  # the provider's id for a sent message
    transient: str = ""
    permanent: str = ""
    uncertain: str = ""


class Provider(ABC):
    """One provider for one channel. Subclasses implement `send` (and may batch in
    `send_many`). `can_lookup`: the provider can say which idempotency keys it already
    has, so a send interrupted by a crash is resolved without asking staff."""

    name = "provider"
    can_lookup = False
    # How many messages go to `send_many` before their outcomes are written. A provider that
    # cannot look up what it has sends one at a time, so a crash leaves at most one message
    # for staff to check.
    chunk = 1

    def __init__(self, channel: str):
        self.channel = channel

    @abstractmethod
    def send(self, message) -> str:
        """Send one message; the provider's reference for it, or TransientError,
        PermanentError, UncertainError."""

    def send_many(self, messages) -> list[Outcome]:
        outcomes = []
        for message in messages:
            try:
                outcomes.append(Outcome(message.id, ref=self.send(message)))
            except TransientError as e:
                outcomes.append(Outcome(message.id, transient=str(e) or type(e).__name__))
            except PermanentError as e:
                outcomes.append(Outcome(message.id, permanent=str(e) or type(e).__name__))
            except UncertainError as e:
                outcomes.append(Outcome(message.id, uncertain=str(e) or type(e).__name__))
        return outcomes

    def lookup(self, keys: list[str]) -> dict[str, str]:
        """{idempotency key: provider ref} for the keys the provider already has. Only asked
        of a provider that `can_lookup`; one that cannot knows none."""
        return {}


def provider_for(channel: str) -> Provider:
    configured = {**DEFAULT_PROVIDERS, **getattr(settings, "PRACTICESYNC_PROVIDERS", {})}
    return import_string(configured[channel])(channel)
