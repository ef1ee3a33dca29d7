"""Plain INSERTs (COPY on PostgreSQL) for the large writes of a sync run (docs/adr/0006).

`bulk_create` spends most of a 100,000-patient run preparing each value through the field
machinery; here each column gets one converter chosen once from its field, and the rows go
to the database driver's `executemany` in batches.
"""

import json
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from operator import itemgetter

from django.db import connection, models

BATCH = 2000


def _repeating(convert: Callable) -> Callable:
    """Large writes stamp one `now` on every row: convert a value once while it repeats."""
    last = [object(), None]

    def converted(value):
        if value is not last[0]:
            last[0], last[1] = value, convert(value)
        return last[1]

    return converted


def _converter(field: models.Field) -> Callable | None:
    """How a column's value goes to the driver; None: as it is."""
    ops = connection.ops
    if isinstance(field, models.DateTimeField):
        return _repeating(ops.adapt_datetimefield_value)
    if isinstance(field, models.DateField):
        return ops.adapt_datefield_value
    if isinstance(field, models.JSONField):
        # The JSON text itself: what SQLite stores, and what COPY reads into jsonb, without
        # the driver's per-value wrapper and dumper on PostgreSQL.
        return (field.encoder or json.JSONEncoder)().encode
    if isinstance(field, models.DecimalField):
        return lambda value: field.get_db_prep_save(value, connection)
    return None


def insert_rows(model: type[models.Model], rows: Iterable[dict], columns: list[str]) -> int:
    """INSERT `rows` (dicts keyed by field attname) into `model`'s table; returns the count."""
    fields = [model._meta.get_field(name) for name in columns]
    quote = connection.ops.quote_name
    table, names = quote(model._meta.db_table), ", ".join(quote(f.column) for f in fields)
    values = _driver_values(rows, columns, fields)
    count = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY: several times faster than executemany's round trip a row. The driver's
            # own cursor is outside Django's error wrapping, so it is wrapped here.
            with (connection.wrap_database_errors,
                  cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy):
                for row in values:
                    copy.write_row(row)
                    count += 1
            return count
        sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(fields))})"
        while batch := list(islice(values, BATCH)):
            cursor.executemany(sql, batch)
            count += len(batch)
    return count


def allocate_ids(model: type[models.Model], count: int) -> list[int]:
    """Primary keys for `count` rows this transaction is about to insert with insert_rows, so
    the caller knows them without reading the rows back (COPY and executemany return none)."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) "
                           "FROM generate_series(1, %s)", [table, count])
            return [row[0] for row in cursor.fetchall()]
        # SQLite: transactions begin IMMEDIATE, so this one holds the only write lock and no
        # one else takes ids before its INSERT; AUTOINCREMENT never hands out a deleted id again.
        cursor.execute(
            f"SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = %s), 0), "
            f"COALESCE((SELECT MAX(id) FROM {connection.ops.quote_name(table)}), 0))", [table])
        start = cursor.fetchone()[0] + 1
    return list(range(start, start + count))


def _driver_values(rows: Iterable[dict], columns: list[str], fields) -> Iterator[tuple | list]:
    values_of = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    converted = [(i, c) for i, c in enumerate(map(_converter, fields)) if c is not None]
    for row in rows:
        values = values_of(row)
        if converted:
            values = list(values)
            for i, c in converted:
                values[i] = c(values[i])
        yield values
