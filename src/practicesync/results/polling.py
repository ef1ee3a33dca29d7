"""`results poll`: import what doctors actioned in a PMS database since the last poll (see
imports.poll_pms for how the cursor and the import move together). The practice's PMS
decides which connector reads the database (connectors.pmsdb.CONNECTORS)."""

from practicesync.connectors.pmsdb import connector_for
from practicesync.imports import POLL_BATCH, PollReport, poll_pms, source_key
from practicesync.practices.models import Practice

from .importer import ResultsReport, import_result_rows


def poll_pms_results(*, practice: Practice, source: str, actor: str,
                     batch_size: int = POLL_BATCH) -> PollReport:
    """Import the results changed in the PMS database at `source` since the last poll."""
    return poll_pms(
        practice=practice, source=source, cursor_source=source_key(source),
        tables=connector_for(practice.pms).TABLES, id_field="result_id",
        import_rows=lambda rows: import_result_rows(practice=practice, raw_rows=rows, actor=actor),
        report=ResultsReport(), batch_size=batch_size)
