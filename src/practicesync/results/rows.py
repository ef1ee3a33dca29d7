"""One row of actioned results, checked. Pure."""

import datetime as dt
from dataclasses import dataclass

from practicesync.connectors.profiles import ResultFacts
from practicesync.patients.rows import RowError

from .grouping import NOTIFIED


@dataclass(frozen=True)
class ResultRow:
    line: int
    result_id: str
    pms_id: str
    test_name: str
    performed: dt.date | dt.datetime
    reported_on: dt.date | None
    actioned_on: dt.date | None
    notified: str
    facts: ResultFacts


def _date_or_datetime(text: str) -> dt.date | dt.datetime:
    if len(text) == 10:
        return dt.date.fromisoformat(text)
    return dt.datetime.fromisoformat(text)


def check_result_row(line: int, raw: dict[str, str]) -> tuple[ResultRow | None, list[RowError]]:
    pms_id = raw["pms_id"] or None
    errors = []

    def error(col, message):
        errors.append(RowError(line, pms_id, col, message))

    for col in ("result_id", "pms_id"):
        if not raw[col]:
            error(col, "missing")
    try:
        performed = _date_or_datetime(raw["performed_on"])
    except ValueError:
        performed = None
        error("performed_on", f"{raw['performed_on']!r} is not a date or ISO 8601 date-time")
    notified = raw["notified"].lower()
    if notified and notified not in NOTIFIED:
        # Skipped whole: guessing either way could message a patient already told, or stop
        # a follow-up that is still needed.
        error("notified", f"{raw['notified']!r} is not empty, notified, given or discussed")
    if errors:
        return None, errors
    dates = {}
    for col in ("reported_on", "actioned_on"):
        try:
            dates[col] = dt.date.fromisoformat(raw[col][:10]) if raw[col] else None
        except ValueError:
            dates[col] = None
            error(col, f"{raw[col]!r} is not a date (YYYY-MM-DD)")
    facts = ResultFacts(action=raw["action"], comment=raw["comment"],
                        filed_under=raw["filed_under"], tab=raw["tab"], location=raw["location"])
    return ResultRow(line, raw["result_id"], raw["pms_id"], raw["test_name"], performed,
                     notified=notified, facts=facts, **dates), errors
