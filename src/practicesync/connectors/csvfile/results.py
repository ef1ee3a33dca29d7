"""Reading the canonical actioned-results CSV (DESIGN.md section 5)."""

from collections.abc import Iterator

from .source import CsvSource

RESULT_COLUMNS = ("result_id", "pms_id", "test_name", "performed_on", "reported_on",
                  "actioned_on", "action", "comment", "filed_under", "tab", "location", "notified")
REQUIRED = ("result_id", "pms_id", "performed_on", "action")


def read_results(source: str) -> Iterator[tuple[int, dict[str, str]]]:
    csv_source = CsvSource(source)
    csv_source.require(REQUIRED, RESULT_COLUMNS)
    for line, raw in csv_source:
        yield line, {c: (raw.get(c) or "").strip() for c in RESULT_COLUMNS}
