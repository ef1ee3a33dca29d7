"""Twilio's calls to us: delivery receipts and inbound SMS (STOP/START).
Every request must carry a valid X-Twilio-Signature (HMAC of the URL and the form with the
auth token); anything else gets 403. See docs/adr/0012-channel-providers.md."""

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse, HttpResponseForbidden
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator

from practicesync.audit import events
from practicesync.numbers import whole_number
from practicesync.practices.models import Practice

from .dispatch import TickReport, fall_back
from .models import Message, OptOut, StaffTask

ACTOR = "twilio"
S = Message.Status

# Twilio's MessageStatus values -> ours. Unlisted ones (receiving, received...) are ignored.
STATUSES = {
    "accepted": S.SENT, "scheduled": S.SENT, "queued": S.SENT, "sending": S.SENT, "sent": S.SENT,
    "delivered": S.DELIVERED, "read": S.READ,
    "undelivered": S.FAILED, "failed": S.FAILED, "canceled": S.FAILED,
}
# Receipts arrive out of order; a message only ever moves up this ladder. A failure can
# follow "sent" but never undo "delivered".
RANK = {S.QUEUED: 0, S.SENDING: 0, S.UNKNOWN: 0, S.SENT: 1, S.FAILED: 2, S.DELIVERED: 3, S.READ: 4}

# Twilio's default opt-out and opt-in keywords (Advanced Opt-Out off or on alike).
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
START_WORDS = {"START", "UNSTOP"}
# START lifts only what STOP set: an opt-out staff recorded for another reason stays.
STOP_SOURCE = "twilio STOP"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def signed_by_twilio(request) -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    token = settings.TWILIO_AUTH_TOKEN
    if not (token and signature):
        return False
    # The URL Twilio called, as we see it: behind a proxy that needs SECURE_PROXY_SSL_HEADER
    # and USE_X_FORWARDED_HOST so the scheme and host match.
    return RequestValidator(token).validate(request.build_absolute_uri(), request.POST, signature)


@csrf_exempt
@require_POST
def twilio_status(request):
    if not signed_by_twilio(request):
        return HttpResponseForbidden()
    sid = request.POST.get("MessageSid", "")
    reported = request.POST.get("MessageStatus", "")
    status = STATUSES.get(reported)
    if sid and status:
        with transaction.atomic():
            message = _find(sid, request.GET.get("m", ""))
            if message is not None and RANK[status] > RANK[message.status]:
                _apply(message, sid, status, reported, request.POST.get("ErrorCode", ""),
                       request.POST.get("ErrorMessage", ""))
    # Twilio wants a 2xx for every receipt, known to us or not.
    return HttpResponse(status=204)


def _find(sid: str, message_id: str) -> Message | None:
    qs = Message.objects.select_for_update().select_related("practice", "patient")
    if message := qs.filter(provider="twilio", provider_ref=sid).first():
        return message
    # A receipt ahead of the dispatcher writing the SID, or for a send it lost track of
    # (status unknown): the callback URL carries our message id.
    if (id_ := whole_number(message_id, digits=18)) is not None:
        return qs.filter(id=id_, channel="sms", provider_ref="",
                         status__in=[S.SENDING, S.UNKNOWN]).first()
    return None


def _apply(message: Message, sid: str, status: str, reported: str, error_code: str,
           error_message: str) -> None:
    now = timezone.now()
    fields = {"status": status}
    if not message.provider_ref:
        fields.update(provider="twilio", provider_ref=sid, sent_at=message.sent_at or now)
    if status in (S.DELIVERED, S.READ) and message.delivered_at is None:
        fields["delivered_at"] = now
    if status == S.FAILED:
        fields["error"] = f"twilio {error_code or '?'}: {reported} {error_message}".strip()[:500]
    previous = message.status
    Message.objects.filter(id=message.id).update(**fields)
    for k, v in fields.items():
        setattr(message, k, v)
    events.record(practice=message.practice, actor=ACTOR, action="message.delivery",
                  why=f"Twilio reported {reported}", patient=message.patient, at=now,
                  detail={"message_id": message.id, "sid": sid, "from": previous, "to": status,
                          "twilio_status": reported, "error_code": error_code})
    if previous == S.UNKNOWN:
        # The receipt answers the question staff were asked: close their check.
        StaffTask.objects.filter(message_id=message.id, kind=StaffTask.Kind.CHECK_SEND,
                                 status=StaffTask.Status.OPEN).update(
            status=StaffTask.Status.DONE, done_by=ACTOR, done_at=now)
    if status == S.FAILED and message.kind == Message.Kind.RESULTS:
        # A results follow-up never ends silently: next channel or a staff call.
        fall_back(message, now=now, report=TickReport())


@csrf_exempt
@require_POST
def twilio_inbound(request):
    if not signed_by_twilio(request):
        return HttpResponseForbidden()
    keyword = request.POST.get("Body", "").strip().upper()
    sender = request.POST.get("From", "").strip()
    if sender and keyword in STOP_WORDS:
        _opt_out(sender, keyword)
    elif sender and keyword in START_WORDS:
        _opt_in(sender, keyword)
    # Empty TwiML: Twilio sends its own STOP/START confirmation.
    return HttpResponse(EMPTY_TWIML, content_type="text/xml")


def _practices_with_mobile(number: str):
    # One number can belong to patients at several practices; each keeps its own opt-out.
    return Practice.objects.filter(patients__mobile_phone=number).distinct()


@transaction.atomic
def _opt_out(number: str, keyword: str) -> None:
    for practice in _practices_with_mobile(number):
        opt_out, created = OptOut.objects.get_or_create(
            practice=practice, channel="sms", address=number, defaults={"source": STOP_SOURCE})
        if created:
            events.record(practice=practice, actor=ACTOR, action="optout.created",
                          why=f"SMS {keyword} from the mobile", detail={
                              "channel": "sms", "keyword": keyword, "opt_out_id": opt_out.id})


@transaction.atomic
def _opt_in(number: str, keyword: str) -> None:
    for practice in _practices_with_mobile(number):
        removed, _ = OptOut.objects.filter(practice=practice, channel="sms", address=number,
                                          source=STOP_SOURCE).delete()
        if removed:
            events.record(practice=practice, actor=ACTOR, action="optout.removed",
                          why=f"SMS {keyword} from the mobile", detail={"channel": "sms",
                                                                         "keyword": keyword})
