from django.core.management.base import BaseCommand, CommandError

from practicesync.cli import FAILED, cli_actor, exit_with, practice_arg, print_json, usage_error
from practicesync.connectors.csvfile.patient_list import SourceError
from practicesync.practices.access import SyncNotPermitted
from practicesync.results.importer import COUNTERS, sync_results


class Command(BaseCommand):
    help = "Import doctor-actioned results and decide each patient's group for the day."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sync = sub.add_parser("sync", help="import the actioned-results CSV")
        sync.add_argument("--practice", required=True)
        sync.add_argument("--source", required=True)
        sync.add_argument("--format", default="csv", choices=["csv"])
        sync.add_argument("--json", action="store_true")

    def handle(self, *args, practice, source, json, **_):
        try:
            report = sync_results(practice=practice_arg(practice), source=source,
                                  actor=cli_actor())
        except SyncNotPermitted as e:
            raise usage_error(str(e)) from e
        except SourceError as e:
            raise CommandError(str(e), returncode=FAILED) from e
        if json:
            print_json(self, report.as_json())
        else:
            self.stdout.write(", ".join(f"{k.replace('_', ' ')} {report.counts[k]}"
                                        for k in COUNTERS if report.counts[k]) or "no results")
            for e in report.errors:
                self.stdout.write(f"! row {e['row']} ({e['pms_id']}) {e['field']}: {e['message']}")
        exit_with(report.exit_code)
