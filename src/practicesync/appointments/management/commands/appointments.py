from django.core.management.base import BaseCommand

from practicesync.appointments.importer import sync_appointments
from practicesync.appointments.polling import poll_pms_appointments
from practicesync.cli import cli_actor, practice_arg
from practicesync.imports import run_import_command


class Command(BaseCommand):
    help = ("Import the PMS's appointments; a booking pauses the patient's running sequences, "
            "a cancellation or did-not-attend resumes them, attending completes them.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sync = sub.add_parser("sync", help="import appointments from a file, folder or URL")
        sync.add_argument("--practice", required=True)
        sync.add_argument("--source", required=True,
                          help="csv: a file or URL; hl7: a file or folder of messages; fhir: a "
                               "file or folder of JSON, or a FHIR server base URL (pulls what "
                               "changed since the last pull)")
        sync.add_argument("--format", default="csv", choices=["csv", "hl7", "fhir"],
                          help="csv: appointment_id,pms_id,starts_at,status (booked, cancelled, "
                               "dna, attended; starts_at ISO 8601, practice-local without an "
                               "offset); hl7: SIU^S12/S13/S14/S15/S26 messages; fhir: "
                               "Appointments (with their Patients) in FHIR R4 Bundles or "
                               "resource files")
        sync.add_argument("--json", action="store_true")

        poll = sub.add_parser("poll", help="import appointments booked or changed in the PMS "
                                           "database since the last poll")
        poll.add_argument("--practice", required=True)
        poll.add_argument("--source", required=True,
                          help="the PMS database (a simulator's SQLite file)")
        poll.add_argument("--json", action="store_true")

    def handle(self, *args, action, **opts):
        getattr(self, action)(**opts)

    def sync(self, *, practice, source, json, format="csv", **_):
        run_import_command(self, lambda: sync_appointments(
            practice=practice_arg(practice), source=source, actor=cli_actor(), fmt=format),
            json=json, nothing="no appointments", id_field="appointment_id")

    def poll(self, *, practice, source, json, **_):
        run_import_command(self, lambda: poll_pms_appointments(
            practice=practice_arg(practice), source=source, actor=cli_actor()),
            json=json, nothing="no appointments", id_field="appointment_id")
