"""What row imports share (results, appointments): a report of counts and row errors, the
PMS database poll behind `results poll` and `appointments poll`, and the command's output."""

from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from django.core.management.base import CommandError
from django.db import transaction

from practicesync.cli import FAILED, exit_with, print_json, usage_error
from practicesync.connectors.csvfile.source import SourceError
from practicesync.connectors.pmsdb import DatabaseError, open_database, read_batch
from practicesync.practices.access import require_sync_permission

POLL_BATCH = 500  # rows per table per transaction


@dataclass
class ImportReport:
    """Counts and row errors ({row, pms_id, field, message}) of one import. A subclass
    names its counters; JSON always carries every one of them, zero or not."""

    COUNTERS: ClassVar[tuple[str, ...]] = ()
    counts: Counter = field(default_factory=Counter)
    errors: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def as_json(self) -> dict:
        return {**{name: self.counts[name] for name in self.COUNTERS}, "errors": self.errors}

    def add(self, other: "ImportReport", *, row_ids: dict[int, str] | None = None,
            id_field: str = "") -> None:
        """Fold a batch's report in; `row_ids` gives each error the source's own id."""
        self.counts.update(other.counts)
        self.errors += [{**e, id_field: row_ids[e["row"]]} if row_ids else e for e in other.errors]


@dataclass
class PollReport:
    report: ImportReport
    cursor: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    def as_json(self) -> dict:
        return {**self.report.as_json(), "cursor": self.cursor}


def source_key(source: str) -> str:
    """The same database however the path was written."""
    return str(Path(source).resolve())


def poll_pms(*, practice, source: str, cursor_source: str, tables, id_field: str,
             import_rows: Callable, report: ImportReport, batch_size: int = POLL_BATCH
             ) -> PollReport:
    """Import what changed in the PMS database at `source` since the practice's cursor.

    Each batch is read after the cursor, imported, and the cursor moved past it, all in one
    transaction: a crash rolls back both, so the next poll reads the same rows again and no
    change is ever skipped; a row read twice for any other reason is harmless, since
    re-importing an id is idempotent."""
    from practicesync.results.models import PmsCursor  # the cursor table lives with results

    require_sync_permission(practice)
    polled = PollReport(report)
    line = 1
    with closing(open_database(source)) as connection:
        while True:
            try:
                with transaction.atomic():
                    cursor, _ = PmsCursor.objects.select_for_update().get_or_create(
                        practice=practice, source=cursor_source)
                    batch = read_batch(connection, tables, cursor.position, limit=batch_size,
                                       first_line=line)
                    if batch.rows:
                        imported = import_rows(batch.rows)
                        cursor.position = batch.position
                        cursor.save()
            except DatabaseError as e:
                raise SourceError(f"{source}: {e}") from e
            polled.cursor = cursor.position
            if not batch.rows:
                return polled
            # The line is the row's place in this poll; the source's id is what finds it.
            report.add(imported, row_ids={n: row[id_field] for n, row in batch.rows},
                       id_field=id_field)
            line += len(batch.rows)
            if not batch.more:
                return polled


def add_import_subcommands(sub, *, what: str, formats: str) -> None:
    """The `sync` and `poll` subcommands of an import command (results, appointments)."""
    sync = sub.add_parser("sync", help=f"import {what} from a file, folder or URL")
    sync.add_argument("--practice", required=True)
    sync.add_argument("--source", required=True,
                      help="csv: a file or URL; hl7: a file or folder of messages; fhir: a "
                           "file or folder of JSON, or a FHIR server base URL (pulls what "
                           "changed since the last pull)")
    sync.add_argument("--format", default="csv", choices=["csv", "hl7", "fhir"], help=formats)
    sync.add_argument("--json", action="store_true")
    poll = sub.add_parser("poll", help=f"import {what} changed in the PMS database since the "
                                       f"last poll")
    poll.add_argument("--practice", required=True)
    poll.add_argument("--source", required=True, help="the PMS database (a simulator's SQLite file)")
    poll.add_argument("--json", action="store_true")


def run_import_command(command, do_import: Callable, *, json: bool, nothing: str,
                       id_field: str) -> None:
    """A sync or poll command: run the import, map refusals to exit 2 and unreadable sources
    to exit 1, print the report (a poll adds its cursor) and exit 0, or 1 with row errors."""
    from practicesync.connectors.pmsdb import NoPmsConnector
    from practicesync.practices.access import SyncNotPermitted

    try:
        done = do_import()
    except (SyncNotPermitted, NoPmsConnector) as e:
        raise usage_error(str(e)) from e
    except SourceError as e:
        raise CommandError(str(e), returncode=FAILED) from e
    report, notes = done, ()
    if isinstance(done, PollReport):
        at = ", ".join(f"{table} {where}" for table, where in sorted(done.cursor.items()))
        report, notes = done.report, [f"cursor: {at or 'at the start'}"]
    print_import(command, report, done.as_json(), json=json, nothing=nothing, id_field=id_field,
                 notes=notes)


def print_import(command, report: ImportReport, data: dict, *, json: bool, nothing: str,
                 id_field: str, notes=()) -> None:
    """A sync or poll command's output and exit code (0, or 1 with row errors)."""
    if json:
        print_json(command, data)
    else:
        command.stdout.write(", ".join(f"{k.replace('_', ' ')} {report.counts[k]}"
                                       for k in report.COUNTERS if report.counts[k]) or nothing)
        for e in report.errors:
            where = f"row {e['row']}" + (f" {e[id_field]}" if id_field in e else "")
            command.stdout.write(f"! {where} ({e['pms_id']}) {e['field']}: {e['message']}")
        for note in notes:
            command.stdout.write(note)
    exit_with(report.exit_code)
