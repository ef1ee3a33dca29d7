from django.core.management.base import BaseCommand, CommandError

from practicesync.cli import FAILED, cli_actor, exit_with, practice_arg, print_json
from practicesync.connectors.csvfile.patient_list import SourceError
from practicesync.patients.accounts import import_accounts


class Command(BaseCommand):
    help = "Import digital accounts (patients who signed up themselves)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import")
        imp.add_argument("--practice", required=True)
        imp.add_argument("--source", required=True)
        imp.add_argument("--json", action="store_true")

    def handle(self, *args, practice, source, json, **_):
        try:
            report = import_accounts(practice=practice_arg(practice), source=source,
                                     actor=cli_actor())
        except SourceError as e:
            raise CommandError(str(e), returncode=FAILED) from e
        if json:
            print_json(self, {**report.counts, "errors": report.errors})
        else:
            self.stdout.write(", ".join(f"{k.replace('_', ' ')} {v}"
                                        for k, v in report.counts.items()))
            for e in report.errors:
                self.stdout.write(f"! row {e['row']} ({e['account_id']}) {e['field']}: "
                                  f"{e['message']}")
        exit_with(report.exit_code)
