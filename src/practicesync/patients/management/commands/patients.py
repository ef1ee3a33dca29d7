import sys

from django.core.management.base import BaseCommand
from rich.console import Console
from rich.progress import Progress

from practicesync.cli import FAILED, cli_actor, exit_with, practice_arg, print_json, usage_error
from practicesync.patients.actions import NotFound, record_not_same_person
from practicesync.patients.erasure import ErasureRefused, erase_patient
from practicesync.patients.report import print_report
from practicesync.patients.sync import sync_patient_list
from practicesync.practices.access import SyncNotPermitted


class Command(BaseCommand):
    help = "Mirror a practice's patient list (Patient Sync)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sync = sub.add_parser("sync", help="reconcile the practice list with practicesync")
        sync.add_argument("--practice", required=True)
        sync.add_argument("--source", required=True, help="path or http(s) URL; for hl7 a file "
                                                          "or a folder of *.hl7/*.txt/*.msg files; "
                                                          "for fhir a file or a folder of *.json, "
                                                          "or a FHIR server base URL (pulls what "
                                                          "changed since the last pull)")
        sync.add_argument("--format", default="csv", choices=["csv", "hl7", "fhir"],
                          help="csv: the canonical list, or the practice's PMS list export; "
                               "hl7: ADT^A04/A08/A28/A31 patients and A40 merges (a feed of "
                               "changes: nobody is marked as left); fhir: Patient resources "
                               "of FHIR R4 Bundles or resource files (also: nobody is marked "
                               "as left)")
        sync.add_argument("--dry-run", action="store_true", help="report the diff, write nothing")
        sync.add_argument("--allow-drop", metavar="REASON",
                          help="apply a list that drops more than the practice's limit; the "
                               "reason is recorded with the run")
        sync.add_argument("--json", action="store_true")

        not_same = sub.add_parser("not-same", help="record that a list row and a patient record "
                                                   "are different people")
        not_same.add_argument("--practice", required=True)
        not_same.add_argument("--pms-id", required=True, help="the list row's PMS id")
        not_same.add_argument("--patient-id", required=True, type=int,
                              help="practicesync's id of the other record")
        not_same.add_argument("--json", action="store_true")

        erase = sub.add_parser("erase", help="erase a non-digital patient's personal data on "
                                             "request (left or deceased patients only)")
        erase.add_argument("--practice", required=True)
        erase.add_argument("--pms-id", required=True)
        erase.add_argument("--reason", required=True, help="the request it answers (audited)")
        erase.add_argument("--json", action="store_true")

    def handle(self, *args, action, **opts):
        getattr(self, action.replace("-", "_"))(**opts)

    def not_same(self, *, practice, pms_id, patient_id, json, **_):
        try:
            pair = record_not_same_person(actor=cli_actor(), practice=practice_arg(practice),
                                          pms_id=pms_id, patient_id=patient_id)
        except NotFound as e:
            raise usage_error(str(e)) from e
        if json:
            print_json(self, {"pms_id": pair.pms_id, "patient_id": pair.patient_id})
        else:
            self.stdout.write(f"recorded: {pms_id} is not patient #{patient_id}")

    def erase(self, *, practice, pms_id, reason, json, **_):
        try:
            counts = erase_patient(actor=cli_actor(), practice=practice_arg(practice),
                                   pms_id=pms_id, reason=reason)
        except NotFound as e:
            raise usage_error(str(e)) from e
        except ErasureRefused as e:
            if json:
                print_json(self, {"erased": False, "pms_id": pms_id, "error": str(e)})
            else:
                self.stdout.write(f"not erased: {e}")
            exit_with(FAILED)
        if json:
            print_json(self, {"erased": True, "pms_id": pms_id, **counts})
        else:
            self.stdout.write(f"erased: {pms_id}")

    def sync(self, *, practice, source, dry_run, allow_drop, json, format="csv", **_):
        if allow_drop is not None and not allow_drop.strip():
            raise usage_error("--allow-drop needs a reason")
        practice = practice_arg(practice)
        show_progress = not json and sys.stderr.isatty()
        with Progress(console=Console(stderr=True), disable=not show_progress) as bar:
            task = bar.add_task("Patient Sync", total=None)

            def progress(stage: str, done: int, total: int) -> None:
                bar.update(task, description=f"Patient Sync: {stage}", completed=done,
                           total=total)

            try:
                report = sync_patient_list(practice=practice, source=source, actor=cli_actor(),
                                           dry_run=dry_run, allow_drop_reason=allow_drop or "",
                                           progress=progress, fmt=format)
            except SyncNotPermitted as e:
                raise usage_error(str(e)) from e
        if json:
            print_json(self, report.as_json())
        else:
            print_report(report, Console(file=self.stdout, highlight=False), dry_run=dry_run)
        exit_with(report.exit_code)
