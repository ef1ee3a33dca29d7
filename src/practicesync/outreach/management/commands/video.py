from django.core.management.base import BaseCommand

from practicesync.cli import cli_actor, practice_arg, print_json
from practicesync.outreach.messaging import Refused, invite_to_video

from .message import direct_arguments, patient_arg, queued_json, refuse


class Command(BaseCommand):
    help = "Invite one patient to a video consultation (a room link of its own, by SMS or email)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        direct_arguments(sub.add_parser("invite", help="send a video consultation invite"))

    def handle(self, *args, action, practice, patient, channel, json, **_):
        found = patient_arg(practice_arg(practice), patient)
        try:
            message = invite_to_video(actor=cli_actor(), patient=found, channel=channel)
        except Refused as e:
            return refuse(self, json=json, error=e, pms_id=patient)
        link = message.body.rsplit(" ", 1)[-1]
        if json:
            print_json(self, queued_json(message, pms_id=patient, link=link))
        else:
            self.stdout.write(f"video invite to {patient} by {channel} queued (message {message.id}): "
                              f"{link}")
