"""Plain INSERTs for the large writes of a sync run (see docs/adr/0006).

`bulk_create` spends most of a 100,000-patient run preparing each value through the field
machinery; here each column gets one converter chosen once from its field, and the rows go
to the database driver's `executemany` in batches.
"""

from collections.abc import Callable, Iterable
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
        return lambda value: ops.adapt_json_value(value, field.encoder)
    if isinstance(field, models.DecimalField):
        return lambda value: field.get_db_prep_save(value, connection)
    return None


def insert_rows(model: type[models.Model], rows: Iterable[dict], columns: list[str]) -> int:
    """INSERT `rows` (dicts keyed by field attname) into `model`'s table; returns the count."""
    fields = [model._meta.get_field(name) for name in columns]
    convert = [_converter(f) for f in fields]
    quote = connection.ops.quote_name
    sql = (f"INSERT INTO {quote(model._meta.db_table)} "
           f"({', '.join(quote(f.column) for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))})")
    values_of = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    converted = [(i, c) for i, c in enumerate(convert) if c is not None]
    count, batch = 0, []
    with connection.cursor() as cursor:
        for row in rows:
            values = values_of(row)
            if converted:
                values = list(values)
                for i, c in converted:
                    values[i] = c(values[i])
            batch.append(values)
            if len(batch) == BATCH:
                cursor.executemany(sql, batch)
                count, batch = count + len(batch), []
        if batch:
            cursor.executemany(sql, batch)
            count += len(batch)
    return count
