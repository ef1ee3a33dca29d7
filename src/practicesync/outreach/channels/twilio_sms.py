"""SMS through Twilio's Programmable Messaging API (docs/adr/0012-channel-providers.md).

Settings: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM (a number, or a Messaging
Service SID starting "MG"), TWILIO_STATUS_CALLBACK_URL (optional; delivery receipts, see
outreach/webhooks.py) and TWILIO_API_BASE (optional; another base URL for the API, e.g. a
local fake in tests).
"""

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from . import PermanentError, Provider, TransientError, UncertainError

# The library waits forever by default; a hung call would hold the whole batch.
TIMEOUT = 30


class RebasedHttpClient(TwilioHttpClient):
    """The library's HTTP client with every API URL moved to another base. Twilio's own
    edge/region options only choose among *.twilio.com hosts; a custom `http_client` is the
    library's supported extension point for anything else."""

    def __init__(self, base: str, **kwargs):
        super().__init__(**kwargs)
        self.base = urlsplit(base)

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        url = urlunsplit((self.base.scheme, self.base.netloc,
                          self.base.path.rstrip("/") + parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)


def twilio_client() -> Client:
    base = settings.TWILIO_API_BASE
    http = RebasedHttpClient(base, timeout=TIMEOUT) if base else TwilioHttpClient(timeout=TIMEOUT)
    return Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http)


def status_callback_url(message) -> str:
    """The configured callback URL with the message id added: a receipt can arrive before
    the dispatcher has stored the Message SID (it writes outcomes after the whole batch), and
    the id still finds the message then. Twilio signs the full URL, query included."""
    base = settings.TWILIO_STATUS_CALLBACK_URL
    if not base:
        return ""
    parts = urlsplit(base)
    query = urlencode([*parse_qsl(parts.query), ("m", str(message.id))])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def classify(error: Exception) -> Exception:
    """A Twilio API error as TransientError or PermanentError, with the code in the text."""
    status = getattr(error, "status", None)
    code = getattr(error, "code", None)
    if isinstance(error, TwilioServiceException):
        text = error.detail or error.title
    else:
        text = getattr(error, "msg", "") or str(error)
    reason = f"twilio {code or status}: {text}"
    # 401: our credentials, not this message; retrying gives time to fix the settings.
    if status is None or status in (401, 408, 429) or status >= 500:
        return TransientError(reason)
    # 4xx: this message will never go (21211 invalid To, 21610 STOPped, 21614 not a mobile...).
    return PermanentError(reason)


class TwilioSmsProvider(Provider):
    name = "twilio"
    # Twilio takes no idempotency key and cannot be asked "did you get this one?": a send
    # interrupted by a crash goes to staff to check rather than risk a second SMS.
    can_lookup = False

    def __init__(self, channel: str):
        super().__init__(channel)
        self._client = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = twilio_client()
        return self._client

    def send(self, message) -> str:
        if not (settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN and settings.TWILIO_FROM):
            raise TransientError("Twilio is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, "
                                 "TWILIO_FROM)")
        params = {"to": message.to, "body": message.body}
        sender = settings.TWILIO_FROM
        if sender.startswith("MG"):
            params["messaging_service_sid"] = sender
        else:
            params["from_"] = sender
        if callback := status_callback_url(message):
            params["status_callback"] = callback
        try:
            return self.client.messages.create(**params).sid
        except (TwilioRestException, TwilioServiceException) as e:
            raise classify(e) from e
        except (requests.ReadTimeout, requests.exceptions.ChunkedEncodingError) as e:
            # The request went; Twilio may have taken it. A retry could send it twice.
            raise UncertainError(f"twilio did not answer in time: {type(e).__name__}") from e
        except requests.RequestException as e:
            raise TransientError(f"twilio unreachable: {type(e).__name__}") from e
        except TwilioException as e:
            raise TransientError(f"twilio: {e}") from e
