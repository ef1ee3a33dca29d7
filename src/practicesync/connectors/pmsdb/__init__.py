"""Actioned results and appointments read straight from a PMS's own database through the
DB-API.

One module per PMS profile holds its SQL and the mapping of a row to the canonical
actioned-results row (TABLES) or appointments row (APPOINTMENT_TABLES); `connector_for` finds
it by the practice's PMS. Adding a PMS means adding a module here and a line to CONNECTORS.

The simulators are SQLite files read with the stdlib sqlite3 driver. Every query is one
constant of plain SQL with qmark (`?`) parameters and no LIMIT/TOP, so a deployment can point
the same SQL at the PMS's SQL Server through another DB-API driver with that paramstyle
(pyodbc): only `base.open_database`, `base.DatabaseError` and the binding of the position's
timestamp change (see base.py).
"""

from types import ModuleType

from . import bestpractice, medicaldirector
from .base import Batch, DatabaseError, Table, open_database, read_batch

__all__ = ["CONNECTORS", "Batch", "DatabaseError", "NoPmsConnector", "Table", "connector_for",
           "open_database", "read_batch"]

# Profile name -> module defining TABLES.
CONNECTORS: dict[str, ModuleType] = {
    "bestpractice": bestpractice,
    "medicaldirector": medicaldirector,
}


class NoPmsConnector(LookupError):
    pass


def connector_for(pms: str) -> ModuleType:
    try:
        return CONNECTORS[pms]
    except KeyError:
        raise NoPmsConnector(f"no PMS database connector for {pms!r}; there is one for "
                             f"{', '.join(sorted(CONNECTORS))}") from None
