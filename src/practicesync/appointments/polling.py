"""`appointments poll`: import the appointments booked or changed in a PMS database since the
last poll, as `results poll` does for results (results/polling.py): each batch read after the
practice's cursor, imported, and the cursor moved past it, in one transaction. The cursor is
a PmsCursor of its own ("<database path>#appointments"), so polling appointments and results
of one database never moves the other's position."""

from contextlib import closing
from dataclasses import dataclass, field

from django.db import transaction

from practicesync.connectors.csvfile.source import SourceError
from practicesync.connectors.pmsdb import DatabaseError, connector_for, open_database, read_batch
from practicesync.practices.access import require_sync_permission
from practicesync.practices.models import Practice
from practicesync.results.models import PmsCursor
from practicesync.results.polling import source_key

from .importer import AppointmentsReport, import_appointment_rows

BATCH_SIZE = 500  # rows per table per transaction


@dataclass
class PollReport:
    appointments: AppointmentsReport = field(default_factory=AppointmentsReport)
    cursor: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.appointments.exit_code

    def as_json(self) -> dict:
        return {**self.appointments.as_json(), "cursor": self.cursor}


def cursor_key(source: str) -> str:
    return f"{source_key(source)}#appointments"


def poll_pms_appointments(*, practice: Practice, source: str, actor: str,
                          batch_size: int = BATCH_SIZE, now=None) -> PollReport:
    """Import the appointments changed in the PMS database at `source` since the last poll."""
    require_sync_permission(practice)
    tables = connector_for(practice.pms).APPOINTMENT_TABLES
    key = cursor_key(source)
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
                        imported = import_appointment_rows(
                            practice=practice, raw_rows=batch.rows, actor=actor,
                            source_kind="pms", now=now)
                        cursor.position = batch.position
                        cursor.save()
            except DatabaseError as e:
                raise SourceError(f"{source}: {e}") from e
            report.cursor = cursor.position
            if not batch.rows:
                return report
            rows = dict(batch.rows)
            report.appointments.counts.update(imported.counts)
            # The line is the row's place in this poll; the appointment id finds it in the PMS.
            report.appointments.errors += [
                {**e, "appointment_id": rows[e["row"]]["appointment_id"]} for e in imported.errors]
            line += len(batch.rows)
            if not batch.more:
                return report
