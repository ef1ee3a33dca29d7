"""The real channel providers against local fakes of Twilio, a push service and an SMTP
server (tests/provider_fakes.py), and Twilio's webhooks. Network: 127.0.0.1 only."""

import datetime as dt
import email
import os
import socket
import stat

import pytest
from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
from django.test import Client
from twilio.request_validator import RequestValidator

from practicesync import settings as project_settings
from practicesync.audit.models import AuditEvent
from practicesync.outreach import dispatch
from practicesync.outreach.channels import PermanentError, TransientError, provider_for
from practicesync.outreach.channels import email as email_channel
from practicesync.outreach.channels import webpush as webpush_channel
from practicesync.outreach.channels.email import EmailProvider
from practicesync.outreach.channels.twilio_sms import TwilioSmsProvider
from practicesync.outreach.channels.webpush import WebPushProvider
from practicesync.outreach.models import Message, OptOut, PushSubscription
from tests.factories import make_patient, make_practice
from tests.provider_fakes import FakePushService, FakeSmtp, FakeTwilio

SID = "AC" + "0" * 32
TOKEN = "synthetic-auth-token"
MOBILE = "+447700900123"
NOW = dt.datetime(2026, 3, 3, 10, 0, tzinfo=dt.UTC)  # a Tuesday, inside any send window
PROVIDERS = {
    "sms": "practicesync.outreach.channels.twilio_sms.TwilioSmsProvider",
    "email": "practicesync.outreach.channels.email.EmailProvider",
    "push": "practicesync.outreach.channels.webpush.WebPushProvider",
}
pytestmark = pytest.mark.django_db


def make_message(practice, patient, *, channel="sms", to=MOBILE, **fields) -> Message:
    values = dict(practice=practice, patient=patient, kind=Message.Kind.ADHOC, channel=channel,
                  to=to, subject="", body="Riverside has a message for you: https://x.test/m/1",
                  idempotency_key=f"adhoc:{channel}:{Message.objects.count() + 1}:{to}",
                  not_before=NOW, created_by="test")
    values.update(fields)
    return Message.objects.create(**values)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def patient(practice):
    return make_patient(practice, mobile_phone=MOBILE, email="ann@example.test")


# --- Twilio SMS -----------------------------------------------------------------------------

@pytest.fixture
def twilio(settings):
    with FakeTwilio(SID, TOKEN) as fake:
        settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
        settings.TWILIO_FROM = "+15005550006"
        settings.TWILIO_API_BASE = fake.url
        settings.TWILIO_STATUS_CALLBACK_URL = "https://ps.example.test/webhooks/twilio/status"
        yield fake


def sms_outcome(message):
    [outcome] = TwilioSmsProvider("sms").send_many([message])
    return outcome


def test_twilio_sends_the_documented_request_and_returns_the_sid(twilio, practice, patient):
    m = make_message(practice, patient)
    outcome = sms_outcome(m)
    assert outcome.ref.startswith("SM") and len(outcome.ref) == 34
    assert not outcome.transient and not outcome.permanent
    [request] = twilio.requests
    assert request["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request["form"] == {
        "To": MOBILE, "From": "+15005550006", "Body": m.body,
        "StatusCallback": f"https://ps.example.test/webhooks/twilio/status?m={m.id}"}


def test_twilio_messaging_service_sid_goes_as_messaging_service(twilio, settings, practice, patient):
    settings.TWILIO_FROM = "MG" + "1" * 32
    settings.TWILIO_STATUS_CALLBACK_URL = ""
    m = make_message(practice, patient)
    assert sms_outcome(m).ref
    assert twilio.requests[0]["form"] == {"To": MOBILE, "MessagingServiceSid": "MG" + "1" * 32,
                                          "Body": m.body}


@pytest.mark.parametrize("to, code", [("+15005550001", 21211), ("+15005550004", 21610),
                                      ("+15005550009", 21614)])
def test_twilio_refusals_of_the_recipient_are_permanent(twilio, practice, patient, to, code):
    outcome = sms_outcome(make_message(practice, patient, to=to))
    assert not outcome.ref and not outcome.transient
    assert outcome.permanent.startswith(f"twilio {code}: ")


@pytest.mark.parametrize("status, code", [(429, 20429), (500, 20500), (503, 20500)])
def test_twilio_rate_limits_and_server_errors_are_transient(twilio, practice, patient, status, code):
    twilio.fail_next = [status]
    outcome = sms_outcome(make_message(practice, patient))
    assert not outcome.ref and not outcome.permanent
    assert outcome.transient.startswith(f"twilio {code}: ")


def test_twilio_unreachable_or_unconfigured_is_transient(twilio, settings, practice, patient):
    settings.TWILIO_API_BASE = f"http://127.0.0.1:{closed_port()}"
    assert sms_outcome(make_message(practice, patient)).transient == "twilio unreachable: ConnectionError"
    settings.TWILIO_AUTH_TOKEN = ""
    assert "not configured" in sms_outcome(make_message(practice, patient)).transient


def test_twilio_wrong_credentials_wait_for_a_fix_rather_than_fail_the_message(twilio, settings,
                                                                              practice, patient):
    settings.TWILIO_AUTH_TOKEN = "wrong"
    assert sms_outcome(make_message(practice, patient)).transient.startswith("twilio 20003")


def test_twilio_cannot_look_up_interrupted_sends():
    assert TwilioSmsProvider.can_lookup is False


# --- Email ----------------------------------------------------------------------------------

@pytest.fixture
def smtp(settings):
    with FakeSmtp() as fake:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", fake.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_TIMEOUT = 5
        settings.PRACTICESYNC_EMAIL_FROM = "Riverside Surgery <noreply@riverside.example.test>"
        yield fake


def email_message(practice, patient, **fields):
    return make_message(practice, patient, channel="email", to="ann@example.test",
                        subject="A message from Riverside", **fields)


def test_email_goes_over_smtp_with_a_message_id_from_the_idempotency_key(smtp, practice, patient):
    m = email_message(practice, patient, idempotency_key="results:7:2")
    [outcome] = EmailProvider("email").send_many([m])
    assert outcome.ref == email_channel.message_id_for("results:7:2", "noreply@riverside.example.test")
    assert outcome.ref.startswith("<results.7.2.") and outcome.ref.endswith("@riverside.example.test>")
    [sent] = smtp.messages
    assert sent["from"] == "noreply@riverside.example.test" and sent["to"] == ["ann@example.test"]
    parsed = email.message_from_bytes(sent["data"])
    assert parsed["Message-ID"] == outcome.ref
    assert parsed["Subject"] == "A message from Riverside"
    assert parsed.get_payload(decode=True).decode().strip() == m.body


def test_email_batch_shares_one_connection_and_keeps_going_after_a_refusal(smtp, practice, patient):
    messages = [email_message(practice, patient) for _ in range(3)]
    outcomes = EmailProvider("email").send_many(messages)
    assert all(o.ref for o in outcomes) and len(smtp.messages) == 3
    assert len({o.ref for o in outcomes}) == 3


@pytest.mark.parametrize("command, reply, kind", [
    ("RCPT", "550 5.1.1 No such user", "permanent"),
    ("RCPT", "451 4.3.0 Try again later", "transient"),
    ("DATA", "554 5.7.1 Rejected", "permanent"),
    ("DATA", "451 4.3.0 Local error", "transient"),
])
def test_email_smtp_replies_map_to_outcomes(smtp, practice, patient, command, reply, kind):
    smtp.replies[command] = reply
    [outcome] = EmailProvider("email").send_many([email_message(practice, patient)])
    assert not outcome.ref
    assert getattr(outcome, kind).startswith(f"smtp {reply[:3]}")
    assert not getattr(outcome, "transient" if kind == "permanent" else "permanent")


def test_email_server_unreachable_is_transient_for_the_whole_batch(smtp, settings, practice, patient):
    settings.EMAIL_PORT = closed_port()
    outcomes = EmailProvider("email").send_many([email_message(practice, patient) for _ in range(2)])
    assert all(o.transient.startswith("mail server unavailable: ConnectionRefusedError") for o in outcomes)


def test_email_through_anymail_uses_the_esp_message_id(settings, practice, patient):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    [outcome] = EmailProvider("email").send_many([email_message(practice, patient)])
    assert outcome.ref == "0"  # the test ESP's id: the message's place in its outbox


@pytest.mark.parametrize("error, expected", [
    (AnymailRecipientsRefused(), PermanentError),
    (AnymailAPIError("bad request", status_code=400), PermanentError),
    (AnymailAPIError("slow down", status_code=429), TransientError),
    (AnymailAPIError("down", status_code=502), TransientError),
    (AnymailAPIError("network"), TransientError),
])
def test_email_esp_errors_map_to_outcomes(error, expected):
    assert type(email_channel.classify(error)) is expected


# --- Web Push -------------------------------------------------------------------------------

@pytest.fixture
def push(settings, tmp_path):
    settings.HOME = tmp_path
    settings.VAPID_PRIVATE_KEY = ""
    settings.VAPID_SUBJECT = "mailto:practicesync@example.test"
    with FakePushService() as fake:
        yield fake


def subscribe(push, practice, patient, answer=201) -> PushSubscription:
    return PushSubscription.objects.create(practice=practice, patient=patient,
                                           **push.subscribe(answer=answer))


def push_outcome(message):
    [outcome] = WebPushProvider("push").send_many([message])
    return outcome


def test_push_is_encrypted_signed_and_delivered(push, practice, patient):
    sub = subscribe(push, practice, patient)
    outcome = push_outcome(make_message(practice, patient, channel="push", to=sub.endpoint))
    assert outcome.ref.startswith(push.url + "/message/")
    # The fake checked TTL, aes128gcm, the VAPID JWT (aud, sub, exp) and decrypted this:
    assert push.received == [{"title": practice.name, "body": make_message(
        practice, patient).body}]
    assert int(push.requests[0]["headers"]["ttl"]) == webpush_channel.TTL


def test_push_gone_is_permanent_and_ends_the_subscription(push, practice, patient):
    sub = subscribe(push, practice, patient, answer=410)
    outcome = push_outcome(make_message(practice, patient, channel="push", to=sub.endpoint))
    assert outcome.permanent.startswith("push service 410")
    sub.refresh_from_db()
    assert sub.active is False
    # and nothing more goes to it
    assert push_outcome(make_message(practice, patient, channel="push", to=sub.endpoint)).permanent
    assert len(push.requests) == 1


def test_push_rate_limit_is_transient_and_keeps_the_subscription(push, practice, patient):
    sub = subscribe(push, practice, patient, answer=429)
    assert push_outcome(make_message(practice, patient, channel="push", to=sub.endpoint)).transient
    sub.refresh_from_db()
    assert sub.active is True


def test_push_without_a_subscription_is_permanent(push, practice, patient):
    outcome = push_outcome(make_message(practice, patient, channel="push", to=push.url + "/push/x"))
    assert outcome.permanent == "no active push subscription for this endpoint"


def test_vapid_key_is_generated_once_owner_only(push, settings, tmp_path):
    first = webpush_channel.application_server_key()
    path = tmp_path / webpush_channel.KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert webpush_channel.application_server_key() == first
    assert [p.name for p in tmp_path.iterdir()] == [webpush_channel.KEY_FILE]


def test_vapid_key_from_the_environment_wins(push, settings, tmp_path):
    from py_vapid import Vapid
    from py_vapid.utils import b64urlencode

    vapid = Vapid()
    vapid.generate_keys()
    settings.VAPID_PRIVATE_KEY = b64urlencode(vapid.private_key.private_numbers()
                                              .private_value.to_bytes(32, "big"))
    assert webpush_channel.vapid_key().private_pem() == vapid.private_pem()
    assert not (tmp_path / webpush_channel.KEY_FILE).exists()


# --- the dispatcher through each provider ----------------------------------------------------

def test_dispatcher_sends_through_every_real_provider(twilio, smtp, push, settings, practice, patient):
    settings.PRACTICESYNC_PROVIDERS = PROVIDERS
    sub = subscribe(push, practice, patient)
    sms = make_message(practice, patient)
    mail = email_message(practice, patient)
    web = make_message(practice, patient, channel="push", to=sub.endpoint)
    report = dispatch.tick(now=NOW)
    assert report.counts["sent"] == 3
    for m, provider in ((sms, "twilio"), (mail, "email"), (web, "webpush")):
        m.refresh_from_db()
        assert (m.status, m.provider, m.sent_at) == (Message.Status.SENT, provider, NOW)
        assert m.provider_ref
    assert sms.provider_ref.startswith("SM") and twilio.requests[0]["form"]["To"] == MOBILE
    assert len(smtp.messages) == 1 and len(push.received) == 1


def test_dispatcher_retries_transient_and_fails_permanent_twilio_errors(twilio, settings, practice,
                                                                        patient):
    settings.PRACTICESYNC_PROVIDERS = PROVIDERS
    twilio.fail_next = [429]
    retried = make_message(practice, patient)
    refused = make_message(practice, patient, to="+15005550004")
    report = dispatch.tick(now=NOW)
    assert (report.counts["retried"], report.counts["failed"]) == (1, 1)
    retried.refresh_from_db()
    refused.refresh_from_db()
    assert retried.status == Message.Status.QUEUED and retried.error.startswith("twilio 20429")
    assert retried.not_before == NOW + dispatch.backoff(1)
    assert refused.status == Message.Status.FAILED and refused.error.startswith("twilio 21610")


def test_interrupted_twilio_send_goes_to_staff(twilio, settings, practice, patient):
    settings.PRACTICESYNC_PROVIDERS = PROVIDERS
    m = make_message(practice, patient, status=Message.Status.SENDING, not_before=NOW - dt.timedelta(1))
    assert dispatch.tick(now=NOW).counts["recovered_unknown"] == 1
    m.refresh_from_db()
    assert m.status == Message.Status.UNKNOWN and twilio.requests == []


def test_provider_settings_from_the_environment():
    assert project_settings._providers({}) == {
        c: "practicesync.outreach.channels.outbox.OutboxProvider" for c in ("sms", "email", "push")}
    assert project_settings._providers({"PRACTICESYNC_SMS_PROVIDER": "twilio",
                                        "PRACTICESYNC_EMAIL_PROVIDER": "django",
                                        "PRACTICESYNC_PUSH_PROVIDER": "WebPush"}) == PROVIDERS
    for bad in ({"PRACTICESYNC_SMS_PROVIDER": "twillio"}, {"PRACTICESYNC_PUSH_PROVIDER": "twilio"}):
        with pytest.raises(ValueError):
            project_settings._providers(bad)


def test_configured_provider_classes_are_the_real_ones(settings):
    settings.PRACTICESYNC_PROVIDERS = PROVIDERS
    assert [type(provider_for(c)).__name__ for c in ("sms", "email", "push")] == [
        "TwilioSmsProvider", "EmailProvider", "WebPushProvider"]


# --- Twilio webhooks ------------------------------------------------------------------------

@pytest.fixture
def signed(settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    client = Client()

    def post(path, data, *, token=TOKEN):
        signature = RequestValidator(token).compute_signature(f"http://testserver{path}", data)
        return client.post(path, data, HTTP_X_TWILIO_SIGNATURE=signature)
    return post


def sent_sms(practice, patient, sid="SM" + "a" * 32, **fields):
    return make_message(practice, patient, status=Message.Status.SENT, provider="twilio",
                        provider_ref=sid, sent_at=NOW, **fields)


def receipt(m, status, **extra):
    return {"MessageSid": m.provider_ref or "SM" + "b" * 32, "MessageStatus": status,
            "AccountSid": SID, "To": m.to, "From": "+15005550006", **extra}


def test_webhooks_refuse_unsigned_wrongly_signed_and_get(signed, practice, patient):
    m = sent_sms(practice, patient)
    path = "/webhooks/twilio/status"
    assert Client().post(path, receipt(m, "delivered")).status_code == 403
    assert signed(path, receipt(m, "delivered"), token="not-the-token").status_code == 403
    assert signed("/webhooks/twilio/inbound", {"From": MOBILE, "Body": "STOP"},
                  token="x").status_code == 403
    assert Client().get(path).status_code == 405
    m.refresh_from_db()
    assert m.status == Message.Status.SENT and not OptOut.objects.exists()


def test_delivery_receipt_moves_the_message_and_is_audited(signed, practice, patient):
    m = sent_sms(practice, patient)
    assert signed("/webhooks/twilio/status", receipt(m, "delivered")).status_code == 204
    m.refresh_from_db()
    assert m.status == Message.Status.DELIVERED and m.delivered_at is not None
    event = AuditEvent.objects.get(action="message.delivery")
    assert (event.actor, event.practice, event.patient) == ("twilio", practice, patient)
    assert event.detail["to"] == "delivered" and event.detail["message_id"] == m.id


def test_receipts_never_move_a_message_backwards(signed, practice, patient):
    m = sent_sms(practice, patient)
    for status in ("delivered", "sent", "queued", "undelivered"):
        signed("/webhooks/twilio/status", receipt(m, status, ErrorCode="30003"))
    m.refresh_from_db()
    assert m.status == Message.Status.DELIVERED and m.error == ""
    signed("/webhooks/twilio/status", receipt(m, "read"))
    m.refresh_from_db()
    assert m.status == Message.Status.READ
    assert AuditEvent.objects.filter(action="message.delivery").count() == 2


def test_undelivered_receipt_fails_the_message_with_the_error_code(signed, practice, patient):
    m = sent_sms(practice, patient)
    signed("/webhooks/twilio/status", receipt(m, "undelivered", ErrorCode="30005"))
    m.refresh_from_db()
    assert m.status == Message.Status.FAILED and m.error.startswith("twilio 30005: undelivered")


def test_receipt_ahead_of_the_stored_sid_finds_the_message_by_id(signed, practice, patient):
    m = make_message(practice, patient, status=Message.Status.SENDING)
    other = make_message(practice, patient, status=Message.Status.SENDING)
    data = {**receipt(m, "delivered"), "MessageSid": "SM" + "c" * 32}
    signed(f"/webhooks/twilio/status?m={m.id}", data)
    m.refresh_from_db()
    other.refresh_from_db()
    assert (m.status, m.provider, m.provider_ref) == (Message.Status.DELIVERED, "twilio", "SM" + "c" * 32)
    assert other.status == Message.Status.SENDING
    # the dispatcher's late "sent" outcome does not undo it
    dispatch._apply_outcomes([m], {m.id: dispatch.Outcome(m.id, ref="SM" + "c" * 32)},
                             provider="twilio", now=NOW, report=dispatch.TickReport())
    m.refresh_from_db()
    assert m.status == Message.Status.DELIVERED


def test_unknown_sid_is_acknowledged_and_ignored(signed, practice, patient):
    m = sent_sms(practice, patient)
    response = signed("/webhooks/twilio/status", {**receipt(m, "delivered"), "MessageSid": "SM" + "d" * 32})
    assert response.status_code == 204
    m.refresh_from_db()
    assert m.status == Message.Status.SENT


def test_stop_opts_the_number_out_at_every_practice_that_has_it(signed, practice, patient):
    other = make_practice(slug="hillside")
    make_patient(other, mobile_phone=MOBILE)
    unrelated = make_practice(slug="lakeside")
    make_patient(unrelated, mobile_phone="+447700900999")
    response = signed("/webhooks/twilio/inbound", {"From": MOBILE, "Body": "  stop ", "To": "+15005550006"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert response.content.decode().endswith("<Response/>")
    assert set(OptOut.objects.values_list("practice__slug", "channel", "address", "source")) == {
        ("riverside", "sms", MOBILE, "twilio STOP"), ("hillside", "sms", MOBILE, "twilio STOP")}
    signed("/webhooks/twilio/inbound", {"From": MOBILE, "Body": "UNSUBSCRIBE"})
    assert OptOut.objects.count() == 2
    assert AuditEvent.objects.filter(action="optout.created", actor="twilio").count() == 2


def test_start_lifts_only_the_stop_opt_outs(signed, practice, patient):
    other = make_practice(slug="hillside")
    OptOut.objects.create(practice=other, channel="sms", address=MOBILE, source="staff: by phone")
    make_patient(other, mobile_phone=MOBILE)
    signed("/webhooks/twilio/inbound", {"From": MOBILE, "Body": "STOP"})
    signed("/webhooks/twilio/inbound", {"From": MOBILE, "Body": "Start"})
    assert list(OptOut.objects.values_list("practice__slug", "source")) == [("hillside", "staff: by phone")]
    assert AuditEvent.objects.filter(action="optout.removed").count() == 1


def test_other_replies_change_nothing(signed, practice, patient):
    response = signed("/webhooks/twilio/inbound", {"From": MOBILE, "Body": "please stop texting me"})
    assert response.status_code == 200 and not OptOut.objects.exists()
