"""Reading the canonical appointments CSV (DESIGN.md section 5):
`appointment_id,pms_id,starts_at,status`, extra columns ignored."""

from collections.abc import Iterator

from .source import CsvSource

APPOINTMENT_COLUMNS = ("appointment_id", "pms_id", "starts_at", "status")


def read_appointments(source: str) -> Iterator[tuple[int, dict[str, str]]]:
    csv_source = CsvSource(source)
    csv_source.require(APPOINTMENT_COLUMNS)
    for line, raw in csv_source:
        yield line, {c: (raw.get(c) or "").strip() for c in APPOINTMENT_COLUMNS}
