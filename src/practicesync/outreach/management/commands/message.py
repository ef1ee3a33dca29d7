from django.core.management.base import BaseCommand

from practicesync.cli import USAGE, cli_actor, exit_with, practice_arg, print_json, usage_error
from practicesync.outreach.messaging import DIRECT_CHANNELS, Refused, send_message
from practicesync.patients.models import Patient


def patient_arg(practice, pms_id: str) -> Patient:
    """The patient with this PMS id at this practice only: a patient of another practice is
    as unknown here as one that does not exist."""
    found = Patient.objects.filter(practice=practice, pms_id=pms_id).select_related("practice").first()
    if found is None:
        raise usage_error(f"no patient with PMS id {pms_id!r} at {practice.slug}")
    return found


def refuse(command: BaseCommand, *, json: bool, error: Refused, pms_id: str) -> None:
    """A refusal is a usage error (exit 2) naming the reason, in JSON when asked."""
    message = f"not sent to {pms_id}: {error.reason}"
    if json:
        print_json(command, {"sent": False, "pms_id": pms_id, "error": message,
                             "reason": error.reason, "code": error.code, "problems": error.problems})
        exit_with(USAGE)
    raise usage_error(message)


def queued_json(message, **extra) -> dict:
    return {"sent": True, "message_id": message.id, "kind": message.kind,
            "channel": message.channel, "to": message.to, "status": message.status,
            "not_before": message.not_before.isoformat(), **extra}


def direct_arguments(parser) -> None:
    parser.add_argument("--practice", required=True)
    parser.add_argument("--patient", required=True, metavar="PMS_ID",
                        help="the patient's PMS id at this practice")
    parser.add_argument("--channel", required=True, choices=DIRECT_CHANNELS)
    parser.add_argument("--json", action="store_true")


class Command(BaseCommand):
    help = "Send staff's own SMS or email to one patient (goes out in the practice's send window)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        send = sub.add_parser("send", help="queue a message to one patient")
        direct_arguments(send)
        send.add_argument("--body", required=True,
                          help="the text; may use {first_name}, {practice_name}, {booking_link}")
        send.add_argument("--subject", default="", help="email subject")

    def handle(self, *args, action, practice, patient, channel, body, subject, json, **_):
        found = patient_arg(practice_arg(practice), patient)
        try:
            message = send_message(actor=cli_actor(), patient=found, channel=channel, body=body,
                                   subject=subject)
        except Refused as e:
            return refuse(self, json=json, error=e, pms_id=patient)
        if json:
            print_json(self, queued_json(message, pms_id=patient))
        else:
            local = message.not_before.astimezone(found.practice.tz)
            self.stdout.write(f"{channel} to {patient} queued (message {message.id}), "
                              f"goes out from {local:%Y-%m-%d %H:%M %Z}")
