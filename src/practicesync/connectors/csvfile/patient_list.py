"""Reading a practice list from a CSV file or URL: the canonical columns, or a PMS's export."""

import csv
import io
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from practicesync.connectors.profiles import Profile
from practicesync.patients.rows import CANONICAL_COLUMNS


class SourceError(Exception):
    """The list could not be read at all; nothing from it may be applied."""


def open_source(source: str) -> str:
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=60) as response:  # noqa: S310
                return response.read().decode("utf-8-sig")
        return Path(source).read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise SourceError(f"{source}: no such file") from e
    except UnicodeDecodeError as e:
        raise SourceError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise SourceError(f"{source}: cannot be read ({e})") from e


def read_patient_list(source: str, profile: Profile) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, canonical row). The header decides the columns: canonical CSV,
    or this practice's PMS export when the profile knows it."""
    text = open_source(source)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    if "pms_id" in header:
        missing = [c for c in ("pms_id", "given_name", "family_name", "date_of_birth")
                   if c not in header]
        mapper = None
    elif profile.map_list_row and profile.list_export_columns[0] in header:
        missing = [c for c in profile.list_export_columns if c not in header]
        mapper = profile.map_list_row
    else:
        raise SourceError(
            f"{source}: header is neither the canonical patient list "
            f"({','.join(CANONICAL_COLUMNS[:4])},...) nor a {profile.label} list export")
    if missing:
        raise SourceError(f"{source}: missing column(s) {', '.join(missing)}")
    try:
        for raw in reader:
            if any("\n" in value or "\r" in value for value in raw.values() if value):
                # No list field spans lines; one that does is an unterminated quote that has
                # swallowed the rows after it, whose patients would then look as if they left.
                raise SourceError(f"{source}: a quoted field starting before line "
                                  f"{reader.line_num} runs over several lines (unterminated "
                                  f"quote?); the list was not applied")
            yield reader.line_num, (mapper(raw) if mapper else raw)
    except csv.Error as e:
        raise SourceError(f"{source}: line {reader.line_num}: {e}") from e
