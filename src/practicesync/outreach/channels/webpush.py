"""Web Push (RFC 8030, aes128gcm payloads, VAPID RFC 8292) to patients' browsers and apps
(docs/adr/0012-channel-providers.md). `message.to` is the subscription endpoint.

VAPID key: env VAPID_PRIVATE_KEY (base64url raw or DER, or PEM), else generated once and
kept in PRACTICESYNC_HOME/vapid_private_key.pem (owner-only). Claims `sub`: VAPID_SUBJECT.
"""

import json
import os
import tempfile
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from py_vapid import Vapid
from py_vapid.utils import b64urlencode
from pywebpush import WebPushException, webpush

from ..models import PushSubscription
from . import PermanentError, Provider, TransientError

KEY_FILE = "vapid_private_key.pem"
# How long a push service keeps a message for an offline device; past a day the SMS
# fallback is the better route anyway.
TTL = 24 * 60 * 60
TIMEOUT = 30


def vapid_key() -> Vapid:
    if key := settings.VAPID_PRIVATE_KEY:
        key = key.strip()
        return Vapid.from_pem(key.encode()) if key.startswith("-----BEGIN") else Vapid.from_string(key)
    path = Path(settings.HOME) / KEY_FILE
    if not path.exists():
        _generate(path)
    return Vapid.from_pem(path.read_bytes())


def _generate(path: Path) -> None:
    """Written once with owner-only permissions. Browsers subscribe against the public key,
    so a new key would orphan every subscription: a second worker racing us keeps ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vapid = Vapid()
    vapid.generate_keys()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".vapid-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(vapid.private_pem())
        os.link(tmp, path)  # atomic, and fails if another process got there first
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def application_server_key() -> str:
    """The public key a browser needs for PushManager.subscribe (base64url, uncompressed)."""
    raw = vapid_key().public_key.public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
    return b64urlencode(raw)


class WebPushProvider(Provider):
    name = "webpush"
    # Push services keep no record a sender could query.
    can_lookup = False

    def __init__(self, channel: str):
        super().__init__(channel)
        self._vapid = None
        self.session = requests.Session()

    def send(self, message) -> str:
        subscription = (PushSubscription.objects.select_related("practice")
                        .filter(practice_id=message.practice_id, endpoint=message.to).first())
        if subscription is None or not subscription.active:
            raise PermanentError("no active push subscription for this endpoint")
        if self._vapid is None:
            self._vapid = vapid_key()
        payload = json.dumps({"title": message.subject or subscription.practice.name,
                              "body": message.body})
        try:
            response = webpush(
                {"endpoint": subscription.endpoint,
                 "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}},
                data=payload, vapid_private_key=self._vapid,
                # A fresh dict each time: webpush fills in `aud` from the endpoint.
                vapid_claims={"sub": settings.VAPID_SUBJECT},
                ttl=TTL, timeout=TIMEOUT, requests_session=self.session)
        except WebPushException as e:
            raise self._classify(e, subscription) from e
        except requests.RequestException as e:
            raise TransientError(f"push service unreachable: {type(e).__name__}") from e
        # 201 Created carries the message's URL at the push service; no body to speak of.
        return (response.headers.get("Location") or f"webpush:{message.idempotency_key}")[:200]

    def _classify(self, error: WebPushException, subscription) -> Exception:
        status = error.response.status_code if error.response is not None else None
        reason = f"push service {status or 'error'}: {_reason(error)}"
        if status in (404, 410):
            # The browser unsubscribed or the subscription expired: it never comes back.
            PushSubscription.objects.filter(id=subscription.id).update(active=False)
            return PermanentError(reason + " (subscription ended)")
        if status is None or status == 429 or status >= 500:
            return TransientError(reason)
        return PermanentError(reason)


def _reason(error: WebPushException) -> str:
    if error.response is not None:
        return error.response.reason or ""
    return str(error)[:200]
