from django.core.management.base import BaseCommand

from practicesync.cli import practice_arg, print_json, usage_error
from practicesync.connectors.hl7v2.inbox import reprocess_dead
from practicesync.practices.access import SyncNotPermitted, require_sync_permission


class Command(BaseCommand):
    help = "The HL7 v2 inbox of the MLLP listener."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        again = sub.add_parser("reprocess", help="process the practice's dead letters again "
                                                 "(after a fix); safe to repeat")
        again.add_argument("--practice", required=True)
        again.add_argument("--json", action="store_true")

    def handle(self, *args, action, practice, json, **_):
        found = practice_arg(practice)
        try:
            require_sync_permission(found)
        except SyncNotPermitted as e:
            raise usage_error(str(e)) from e
        data = reprocess_dead(found)
        if json:
            print_json(self, data)
        else:
            self.stdout.write(f"{data['requeued']} dead letter(s) requeued, {data['processed']} "
                              f"processed, {data['dead']} still dead, {data['waiting']} waiting")
