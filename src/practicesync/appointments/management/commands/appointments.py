from django.core.management.base import BaseCommand

from practicesync.appointments.importer import sync_appointments
from practicesync.appointments.polling import poll_pms_appointments
from practicesync.cli import cli_actor, practice_arg
from practicesync.imports import add_import_subcommands, run_import_command

FORMATS = ("csv: appointment_id,pms_id,starts_at,status (booked, cancelled, dna, attended; "
           "starts_at ISO 8601, practice-local without an offset); hl7: SIU^S12/S13/S14/S15/S26 "
           "messages; fhir: Appointments (with their Patients) in FHIR R4 Bundles or resource files")


class Command(BaseCommand):
    help = ("Import the PMS's appointments; a booking pauses the patient's running sequences, "
            "a cancellation or did-not-attend resumes them, attending completes them.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add_import_subcommands(sub, what="appointments", formats=FORMATS)

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
