import json
import types

from django.core.management.base import BaseCommand

from practicesync.cli import practice_arg
from practicesync.practices.export import build_export


class Command(BaseCommand):
    help = "Print everything practicesync holds for one practice as JSON (practicesync.export/1)."

    def add_arguments(self, parser):
        parser.add_argument("--practice", required=True)
        parser.add_argument("--json", action="store_true", help="accepted; output is always JSON")

    def handle(self, *args, practice, **_):
        practice = practice_arg(practice)  # an unknown practice fails before any output
        out = self.stdout
        out.write("{", ending="")
        for n, (key, value) in enumerate(build_export(practice)):
            out.write(("," if n else "") + json.dumps(key) + ":", ending="")
            if isinstance(value, types.GeneratorType):
                # Streamed item by item: a 100,000-patient export never sits in memory whole.
                out.write("[", ending="")
                for i, item in enumerate(value):
                    out.write(("," if i else "") + json.dumps(item), ending="")
                out.write("]", ending="")
            else:
                out.write(json.dumps(value), ending="")
        out.write("}")
