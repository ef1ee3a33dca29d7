"""Email through Django's email backend: SMTP, or any django-anymail ESP set by
EMAIL_BACKEND. From address: PRACTICESYNC_EMAIL_FROM (docs/adr/0012-channel-providers.md)."""

import hashlib
import re
import smtplib
from email.utils import parseaddr

from anymail.exceptions import AnymailAPIError, AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import BadHeaderError, EmailMessage, get_connection

from . import Outcome, PermanentError, Provider, TransientError

# Characters allowed in the left part of a Message-ID (RFC 5322 dot-atom-text).
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


def message_id_for(key: str, from_address: str) -> str:
    """The same idempotency key always gives the same Message-ID, so a resend after an
    interrupted send is recognisable as the same email by the receiving side."""
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "localhost"
    readable = _NOT_ATEXT.sub(".", key).strip(".")[:60]
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"<{readable}.{digest}@{domain}>"


def _esp_message_id(email: EmailMessage) -> str:
    status = getattr(email, "anymail_status", None)
    if status is None or status.message_id is None:
        return ""
    ids = status.message_id
    return ",".join(sorted(map(str, ids))) if isinstance(ids, set) else str(ids)


def _by_code(code: int, text: str) -> Exception:
    # SMTP: 4xx is "try again later", 5xx is final.
    return PermanentError(text) if 500 <= code < 600 else TransientError(text)


def classify(error: Exception) -> Exception:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(error.recipients.values()), (451, b""))
        return _by_code(code, f"smtp {code}: recipient refused: {_text(reply)}")
    if isinstance(error, smtplib.SMTPSenderRefused | smtplib.SMTPAuthenticationError):
        # Our account or From address: not this message's fault, so it waits for a fix.
        return TransientError(f"smtp {error.smtp_code}: {_text(error.smtp_error)}")
    if isinstance(error, smtplib.SMTPResponseException):
        return _by_code(error.smtp_code, f"smtp {error.smtp_code}: {_text(error.smtp_error)}")
    if isinstance(error, OSError):  # smtplib.SMTPException is an OSError too
        return TransientError(f"smtp: {type(error).__name__}: {error}")
    if isinstance(error, AnymailRecipientsRefused):
        return PermanentError(f"esp: recipient refused: {error.args[0] if error.args else ''}")
    if isinstance(error, AnymailAPIError):
        status = error.status_code
        text = f"esp {status or 'unreachable'}: {error.args[0] if error.args else type(error).__name__}"
        if status is None or status in (401, 403, 408, 429) or status >= 500:
            return TransientError(text)
        return PermanentError(text)
    if isinstance(error, BadHeaderError | ValueError):
        return PermanentError(f"email cannot be built: {error}")
    return TransientError(f"email: {type(error).__name__}: {error}")


def _text(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class EmailProvider(Provider):
    name = "email"
    # Neither SMTP nor the ESP APIs can be asked whether a Message-ID was already sent.
    can_lookup = False

    def send_many(self, messages) -> list[Outcome]:
        # One connection for the batch: the SMTP handshake is the slow part.
        try:
            self.connection = get_connection(fail_silently=False)
            self.connection.open()
        except (OSError, AnymailError, ImproperlyConfigured) as e:
            # The server, not any one message: nothing is tried, everything waits.
            reason = f"mail server unavailable: {type(e).__name__}: {e}"
            return [Outcome(m.id, transient=reason) for m in messages]
        try:
            return super().send_many(messages)
        finally:
            self._close()

    def send(self, message) -> str:
        sender = settings.PRACTICESYNC_EMAIL_FROM
        message_id = message_id_for(message.idempotency_key, sender)
        email = EmailMessage(subject=message.subject, body=message.body, from_email=sender,
                             to=[message.to], headers={"Message-ID": message_id},
                             connection=self.connection)
        try:
            email.send(fail_silently=False)
        except (OSError, AnymailError, BadHeaderError, ValueError) as e:
            if isinstance(e, smtplib.SMTPServerDisconnected | ConnectionError | TimeoutError):
                # A dead connection: the next message opens a fresh one.
                self._close()
            raise classify(e) from e
        return _esp_message_id(email) or message_id

    def _close(self) -> None:
        try:
            self.connection.close()
        except OSError:
            pass  # already gone; the server has nothing of ours to finish
