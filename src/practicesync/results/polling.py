"""`results poll`: import what doctors actioned in a PMS database since the last poll.

Each batch is read after the practice's cursor for that database, imported, and the cursor
moved past it, all in one transaction: a crash rolls back both, so the next poll reads the
same rows again and no change is ever skipped; a row read twice for any other reason is
harmless, since re-importing a result id is idempotent. The practice's PMS decides which
connector reads the database (connectors.pmsdb.CONNECTORS).
"""

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from practicesync.connectors.csvfile.source import SourceError
from practicesync.connectors.pmsdb import DatabaseError, connector_for, open_database, read_batch
from practicesync.practices.access import require_sync_permission
from practicesync.practices.models import Practice

from .importer import ResultsReport, import_result_rows
from .models import PmsCursor

BATCH_SIZE = 500  # rows per table per transaction


@dataclass
class PollReport:
    results: ResultsReport = field(default_factory=ResultsReport)
    cursor: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.results.exit_code

    def as_json(self) -> dict:
        return {**self.results.as_json(), "cursor": self.cursor}


def source_key(source: str) -> str:
    """The same database however the path was written."""
    return str(Path(source).resolve())


def poll_pms_results(*, practice: Practice, source: str, actor: str,
                     batch_size: int = BATCH_SIZE) -> PollReport:
    """Import the results changed in the PMS database at `source` since the last poll."""
    require_sync_permission(practice)
    tables = connector_for(practice.pms).TABLES
    key = source_key(source)
    report = PollReport()
    line = 1
    with closing(open_database(source)) as connection:
        while True:
            try:
                with transaction.atomic():
                    cursor, _ = PmsCursor.objects.select_for_update().get_or_create(
                        practice=practice, source=key)
                    batch = read_batch(connection, tables, cursor.position, limit=batch_size,
                                       first_line=line)
                    if batch.rows:
                        imported = import_result_rows(practice=practice, raw_rows=batch.rows,
                                                      actor=actor)
                        cursor.position = batch.position
                        cursor.save()
            except DatabaseError as e:
                raise SourceError(f"{source}: {e}") from e
            report.cursor = cursor.position
            if not batch.rows:
                return report
            _add(report.results, imported, dict(batch.rows))
            line += len(batch.rows)
            if not batch.more:
                return report


def _add(total: ResultsReport, part: ResultsReport, rows: dict[int, dict]) -> None:
    total.counts.update(part.counts)
    for error in part.errors:
        # The line is the row's place in this poll; the result id is what finds it in the PMS.
        total.errors.append({**error, "result_id": rows[error["row"]]["result_id"]})
