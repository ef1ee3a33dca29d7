from django.core.management.base import BaseCommand
from rich.console import Console

from practicesync.cli import cli_actor, exit_with, practice_arg, print_json, usage_error
from practicesync.patients.report import print_report
from practicesync.patients.tasks import run_configured_sync
from practicesync.practices.access import SyncNotPermitted, require_sync_permission


class Command(BaseCommand):
    help = "Run a practice's configured Patient Sync now, instead of waiting for the night."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        now = sub.add_parser("now")
        now.add_argument("--practice", required=True)
        now.add_argument("--json", action="store_true")

    def handle(self, *args, practice, json, **_):
        practice = practice_arg(practice)
        try:
            require_sync_permission(practice)
        except SyncNotPermitted as e:
            raise usage_error(str(e)) from e
        report = run_configured_sync(practice, actor=cli_actor())
        if json:
            print_json(self, report.as_json())
        else:
            print_report(report, Console(file=self.stdout, highlight=False), dry_run=False)
        exit_with(report.exit_code)
