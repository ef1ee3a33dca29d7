"""Builders for the pure rule tests: list rows and stored records without a database."""

import datetime as dt
import itertools

from practicesync.patients.rows import PatientRecord, check_row
from tests.factories import list_row

_ids = itertools.count(100)


def row(line=2, country="GB", **fields):
    checked, errors = check_row(line, list_row(**fields), country)
    assert checked is not None, errors
    return checked


def record(**fields) -> PatientRecord:
    values = {"id": next(_ids), "given_name": "Ann", "family_name": "Lee",
              "date_of_birth": dt.date(1980, 1, 2)}
    values.update(fields)
    return PatientRecord(**values)


def account(**fields) -> PatientRecord:
    return record(digital=True, account_id=f"A{next(_ids)}", **fields)
