from django.core.management.base import BaseCommand, CommandError

from practicesync.appointments.importer import sync_appointments
from practicesync.appointments.polling import poll_pms_appointments
from practicesync.cli import FAILED, cli_actor, practice_arg, usage_error
from practicesync.connectors.csvfile.source import SourceError
from practicesync.connectors.pmsdb import NoPmsConnector
from practicesync.imports import print_import
from practicesync.practices.access import SyncNotPermitted


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
        try:
            report = sync_appointments(practice=practice_arg(practice), source=source,
                                       actor=cli_actor(), fmt=format)
        except SyncNotPermitted as e:
            raise usage_error(str(e)) from e
        except SourceError as e:
            raise CommandError(str(e), returncode=FAILED) from e
        self._finish(report, report.as_json(), json=json)

    def poll(self, *, practice, source, json, **_):
        try:
            polled = poll_pms_appointments(practice=practice_arg(practice), source=source,
                                           actor=cli_actor())
        except (SyncNotPermitted, NoPmsConnector) as e:
            raise usage_error(str(e)) from e
        except SourceError as e:
            raise CommandError(str(e), returncode=FAILED) from e
        at = ", ".join(f"{table} {where}" for table, where in sorted(polled.cursor.items()))
        self._finish(polled.report, polled.as_json(), json=json,
                     notes=[f"cursor: {at or 'at the start'}"])

    def _finish(self, report, data, *, json, notes=()):
        print_import(self, report, data, json=json, nothing="no appointments", id_field="appointment_id",
                     notes=notes)
