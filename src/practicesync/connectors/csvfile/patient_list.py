"""Reading a practice list: the canonical columns, or a PMS's own export."""

from collections.abc import Iterator

from practicesync.connectors.profiles import Profile
from practicesync.patients.rows import CANONICAL_COLUMNS

from .source import CsvSource, SourceError

__all__ = ["SourceError", "read_patient_list"]


def read_patient_list(source: str, profile: Profile) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, canonical row). The header decides the columns: canonical CSV,
    or this practice's PMS export when the profile knows it."""
    csv_source = CsvSource(source)
    if "pms_id" in csv_source.header:
        csv_source.require(("pms_id", "given_name", "family_name", "date_of_birth"),
                           CANONICAL_COLUMNS)
        yield from csv_source
    elif profile.map_list_row and profile.list_export_columns[0] in csv_source.header:
        csv_source.require(profile.list_export_columns)
        for line, raw in csv_source:
            yield line, profile.map_list_row(raw)
    else:
        raise SourceError(
            f"{source}: header is neither the canonical patient list "
            f"({','.join(CANONICAL_COLUMNS[:4])},...) nor a {profile.label} list export")
