"""Reading the canonical actioned-results CSV (DESIGN.md section 5)."""

import csv
import io
from collections.abc import Iterator

from .patient_list import SourceError, open_source

RESULT_COLUMNS = ("result_id", "pms_id", "test_name", "performed_on", "reported_on",
                  "actioned_on", "action", "comment", "filed_under", "tab", "location", "notified")
REQUIRED = ("result_id", "pms_id", "performed_on", "action")


def read_results(source: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(open_source(source), newline=""))
    if missing := [c for c in REQUIRED if c not in (reader.fieldnames or [])]:
        raise SourceError(f"{source}: missing column(s) {', '.join(missing)}")
    for raw in reader:
        yield reader.line_num, {c: (raw.get(c) or "").strip() for c in RESULT_COLUMNS}
