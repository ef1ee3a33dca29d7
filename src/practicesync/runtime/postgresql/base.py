"""Django's PostgreSQL backend, with error text that never holds a row's values (docs/adr/0020).

PostgreSQL's error text adds DETAIL ("Failing row contains (..., Given, Family, ...)",
"Key (pms_id)=(...) already exists") and CONTEXT (the COPY line being read, in full) to the
primary message, and that text ends up in tracebacks, logs, task results and a sync run's
failure. libpq's terse error verbosity would drop them, but psycopg 3 does not offer it, so
errors are rewritten where Django wraps them. The fields stay on `error.diag` for code.
"""

import re

from django.db.backends.postgresql import base
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

# Class 22 (data exception) messages quote the value that was refused: 'invalid input
# syntax for type date: "..."', 'value "..." is out of range for type integer'. Other
# classes quote names of constraints, columns and types, which help and hold no data.
DATA_EXCEPTION = "22"
QUOTED = re.compile(r'"[^"]*"|\'[^\']*\'')


def withhold_row_data(error: Exception) -> None:
    """Cut an error's text down to its primary message, with any refused value taken out."""
    diag = getattr(error, "diag", None)
    primary = diag.message_primary if diag else None
    if primary is None:
        # Not from the server: the driver's or libpq's own words (a lost connection, a
        # value it could not read), whose first line is the message and may quote a value.
        lines = str(error).splitlines()
        error.args = (QUOTED.sub('"…"', lines[0] if lines else ""),)
        return
    if (diag.sqlstate or "").startswith(DATA_EXCEPTION):
        primary = QUOTED.sub('"…"', primary)
    error.args = (f"{primary} (SQLSTATE {diag.sqlstate}; detail withheld: it can hold "
                  f"patient data)",)


class ErrorsWithoutRowData(DatabaseErrorWrapper):
    def __exit__(self, exc_type, exc_value, traceback):
        if exc_type is not None and issubclass(exc_type, self.wrapper.Database.Error):
            withhold_row_data(exc_value)
        super().__exit__(exc_type, exc_value, traceback)


class DatabaseWrapper(base.DatabaseWrapper):
    @cached_property
    def wrap_database_errors(self):
        return ErrorsWithoutRowData(self)
