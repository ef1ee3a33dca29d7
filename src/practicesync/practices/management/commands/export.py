from django.core.management.base import BaseCommand

from practicesync.cli import cli_actor, practice_arg
from practicesync.outreach.management.commands.message import patient_arg
from practicesync.practices.actions import record_export
from practicesync.practices.export import export_json


class Command(BaseCommand):
    help = "Print everything practicesync holds for one practice as JSON (practicesync.export/1)."

    def add_arguments(self, parser):
        parser.add_argument("--practice", required=True)
        parser.add_argument("--patient", metavar="PMS_ID",
                            help="only what concerns this patient (a subject access request), "
                                 "with their audit events")
        parser.add_argument("--json", action="store_true", help="accepted; output is always JSON")

    def handle(self, *args, practice, patient, **_):
        practice = practice_arg(practice)  # an unknown practice fails before any output
        patient = patient_arg(practice, patient) if patient is not None else None
        record_export(actor=cli_actor(), practice=practice, via="cli", patient=patient)
        for piece in export_json(practice, patient):
            self.stdout.write(piece, ending="")
        self.stdout.write("")
