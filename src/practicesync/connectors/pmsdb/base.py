"""What every PMS database connector shares: opening the database read-only, reading the rows
changed after a position, and the position itself.

A table is read in (UPDATED, id) order from just after the last row already imported:

    WHERE UPDATED > ? OR (UPDATED = ? AND <id> > ?) ORDER BY UPDATED, <id>

so rows sharing one UPDATED value are neither skipped nor read twice across batches. Batches
are cut with `fetchmany`, not LIMIT/TOP, so the SQL text stays the same in every dialect.

A position is `"<UPDATED as the database holds it>|<last id>"`, one per table, e.g.
`{"INVESTIGATIONS": "2026-11-20 09:14:03.250|1042"}`. The simulators hold UPDATED as text in
SQL Server's own rendering (`YYYY-MM-DD HH:MM:SS.fff`, fixed width, so text order is time
order) and the position passes it back unchanged.

Limits of reading by UPDATED (apply to the real PMS, not the simulators):
- a row whose UPDATED is NULL is never read;
- a row written with an UPDATED older than rows already read (a workstation clock behind the
  others, or a transaction committing after a later one) is missed until it changes again.
  The fix, if a PMS shows this, is to re-read a short overlap before the position: re-imports
  are idempotent, so only the `unchanged` count grows.
"""

import datetime as dt
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from practicesync.connectors.csvfile.source import SourceError

# The DB-API driver of the simulators. A SQL Server deployment would open a pyodbc connection
# here (its paramstyle is also qmark), catch pyodbc.Error, and bind the position's timestamp as
# `datetime.fromisoformat(...)` rather than text, since SQL Server compares datetime columns
# with a datetime parameter exactly.
DatabaseError = sqlite3.Error
START = "1900-01-01 00:00:00.000"  # before any row; also the earliest SQL Server datetime


@dataclass(frozen=True)
class Table:
    """One PMS table that holds actioned results."""

    name: str                                      # its key in the position
    sql: str                                       # parameters: UPDATED, UPDATED, last id
    id_column: str
    to_result: Callable[[Mapping], dict[str, str]]  # a row (column name -> value) to the
                                                    # canonical actioned-results row


@dataclass(frozen=True)
class Batch:
    rows: list[tuple[int, dict[str, str]]]  # (line, canonical row) for import_result_rows
    position: dict[str, str]                # where the next batch starts
    more: bool                              # some table may have more rows after this batch


def open_database(source: str) -> sqlite3.Connection:
    """The PMS database at `source`, read-only: a connector never writes to the PMS."""
    path = Path(source)
    if not path.is_file():
        raise SourceError(f"{source}: no such file")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        raise SourceError(f"{source}: not a readable database ({e})") from e
    return connection


def split_position(text: str | None) -> tuple[str, int]:
    if not text:
        return START, 0
    updated, _, last_id = text.rpartition("|")
    return updated, int(last_id)


def timestamp_text(value) -> str:
    """UPDATED as the position keeps it: the database's own text, or ISO 8601 when the
    driver returns a datetime."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    return str(value)


def read_batch(connection, tables: tuple[Table, ...], position: Mapping[str, str], *,
               limit: int, first_line: int = 1) -> Batch:
    """Up to `limit` changed rows from each table after `position`, as canonical rows."""
    rows: list[dict[str, str]] = []
    new_position = dict(position)
    more = False
    for table in tables:
        updated, last_id = split_position(position.get(table.name))
        cursor = connection.cursor()
        try:
            cursor.execute(table.sql, (updated, updated, last_id))
            names = [d[0].upper() for d in cursor.description]
            fetched = cursor.fetchmany(limit)
        finally:
            cursor.close()
        for values in fetched:
            record = dict(zip(names, values, strict=True))
            rows.append(table.to_result(record))
        if fetched:
            new_position[table.name] = (f"{timestamp_text(record['UPDATED'])}|"
                                        f"{record[table.id_column]}")
        more = more or len(fetched) == limit
    return Batch([(first_line + n, row) for n, row in enumerate(rows)], new_position, more)


# Mapping helpers: PMS values to the canonical row's strings.

def text(value) -> str:
    """A char/varchar value without the padding of a fixed-width char column."""
    return "" if value is None else str(value).strip()


def _parse(value) -> dt.datetime | dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    value = str(value).strip()
    return dt.datetime.fromisoformat(value) if value else None


def date_text(value) -> str:
    """A PMS date or datetime as an ISO date; '' when empty. An unparseable value is passed
    on as it is, for the row check to report."""
    try:
        parsed = _parse(value)
    except ValueError:
        return text(value)
    if parsed is None:
        return ""
    return (parsed.date() if isinstance(parsed, dt.datetime) else parsed).isoformat()


def datetime_text(value) -> str:
    """A PMS datetime as ISO 8601 without offset (practice-local, as the PMS keeps it); a
    bare date stays a date."""
    try:
        parsed = _parse(value)
    except ValueError:
        return text(value)
    if parsed is None:
        return ""
    if isinstance(parsed, dt.datetime):
        return parsed.isoformat(timespec="seconds")
    return parsed.isoformat()
