import sys

from django.core.management.base import BaseCommand
from rich.console import Console
from rich.progress import Progress

from practicesync.cli import cli_actor, exit_with, practice_arg, print_json, usage_error
from practicesync.patients.report import print_report
from practicesync.patients.sync import sync_patient_list
from practicesync.practices.access import SyncNotPermitted


class Command(BaseCommand):
    help = "Mirror a practice's patient list (Patient Sync)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sync = sub.add_parser("sync", help="reconcile the practice list with practicesync")
        sync.add_argument("--practice", required=True)
        sync.add_argument("--source", required=True, help="path or http(s) URL")
        sync.add_argument("--format", default="csv", choices=["csv"],
                          help="csv: the canonical list, or the practice's PMS list export")
        sync.add_argument("--dry-run", action="store_true", help="report the diff, write nothing")
        sync.add_argument("--allow-drop", metavar="REASON",
                          help="apply a list that drops more than the practice's limit; the "
                               "reason is recorded with the run")
        sync.add_argument("--json", action="store_true")

    def handle(self, *args, practice, source, dry_run, allow_drop, json, **_):
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
                                           progress=progress)
            except SyncNotPermitted as e:
                raise usage_error(str(e)) from e
        if json:
            print_json(self, report.as_json())
        else:
            print_report(report, Console(file=self.stdout, highlight=False), dry_run=dry_run)
        exit_with(report.exit_code)
