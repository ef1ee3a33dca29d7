"""`appointments poll`: import the appointments booked or changed in a PMS database since the
last poll, as `results poll` does for results (imports.poll_pms). The cursor is a PmsCursor
of its own ("<database path>#appointments"), so polling appointments and results of one
database never moves the other's position."""

from practicesync.connectors.pmsdb import connector_for
from practicesync.imports import POLL_BATCH, PollReport, poll_pms, source_key
from practicesync.practices.models import Practice

from .importer import AppointmentsReport, import_appointment_rows


def cursor_key(source: str) -> str:
    return f"{source_key(source)}#appointments"


def poll_pms_appointments(*, practice: Practice, source: str, actor: str,
                          batch_size: int = POLL_BATCH, now=None) -> PollReport:
    """Import the appointments changed in the PMS database at `source` since the last poll."""
    return poll_pms(
        practice=practice, source=source, cursor_source=cursor_key(source),
        tables=connector_for(practice.pms).APPOINTMENT_TABLES, id_field="appointment_id",
        import_rows=lambda rows: import_appointment_rows(
            practice=practice, raw_rows=rows, actor=actor, source_kind="pms", now=now),
        report=AppointmentsReport(), batch_size=batch_size)
