"""A practice list row, checked and normalised, and the stored record it is compared with.

`check_row` turns one canonical CSV row (a dict of strings) into a `ListRow` plus the row's
errors. Pure: no database, so the rules are tested row by row.
"""

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field, fields, replace

from .identifiers import (
    clean_email,
    clean_ihi,
    clean_medicare_number,
    clean_nhs_number,
    clean_phone,
    digits_only,
)
from .models import IDENTIFIER_FIELDS, SYNCED_FIELDS
from .names import normalise_name

CANONICAL_COLUMNS = (
    "pms_id", "nhs_number", "medicare_number", "ihi", "title", "given_name", "family_name",
    "date_of_birth", "sex", "mobile_phone", "home_phone", "email", "address_line1",
    "address_line2", "locality", "postcode", "registration_status", "date_of_death",
)
SEXES = {"m": "M", "male": "M", "f": "F", "female": "F", "x": "X", "other": "X",
         "indeterminate": "X", "u": "U", "unknown": "U", "not stated": "U"}
STATUSES = {"": "active", "active": "active", "left": "left", "deceased": "deceased"}


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    pms_id: str | None
    field: str
    message: str

    def as_dict(self) -> dict:
        return {"row": self.row, "pms_id": self.pms_id, "field": self.field, "message": self.message}


@dataclass(slots=True)
class PatientRecord:
    """The synced fields of a patient, as stored (or as a list row would create them)."""

    id: int | None = None
    pms_id: str | None = None
    account_id: str | None = None
    digital: bool = False
    nhs_number: str | None = None
    medicare_number: str | None = None
    ihi: str | None = None
    title: str = ""
    given_name: str = ""
    family_name: str = ""
    date_of_birth: dt.date | None = None
    sex: str = ""
    mobile_phone: str | None = None
    home_phone: str | None = None
    email: str | None = None
    address_line1: str = ""
    address_line2: str = ""
    locality: str = ""
    postcode: str = ""
    status: str = "active"
    date_of_death: dt.date | None = None
    list_fingerprint: str = ""

    @property
    def name_key(self) -> tuple[str, str, dt.date | None]:
        return normalise_name(self.family_name), normalise_name(self.given_name), self.date_of_birth

    def state(self) -> tuple:
        return (self.digital, self.account_id, *(getattr(self, f) for f in SYNCED_FIELDS))


RECORD_FIELDS = tuple(f.name for f in fields(PatientRecord))


@dataclass(slots=True)
class ListRow:
    """One patient of the PMS list, validated. `status` None means the list's value was unusable."""

    line: int
    record: PatientRecord
    status: str | None
    raw_digest: str = field(default="")
    # No row error: only a clean row's fingerprint is stored, so a bad row is checked and
    # reported on every run until the PMS fixes it.
    clean: bool = True
    # Same row as last time on a record the last sync left as it is: only the keys that
    # other rows are counted against are read from it (see docs/adr/0004).
    unchanged: bool = False

    @property
    def pms_id(self) -> str:
        return self.record.pms_id


def _date(raw: str) -> dt.date:
    return dt.date.fromisoformat(raw.strip())


def check_row(line: int, raw: dict[str, str], country: str) -> tuple[ListRow | None, list[RowError]]:
    """Validate one row. Returns (None, errors) when the row cannot identify a patient at all."""
    get = lambda col: (raw.get(col) or "").strip()  # noqa: E731
    pms_id = get("pms_id") or None
    errors: list[RowError] = []

    def error(col: str, message: str) -> None:
        errors.append(RowError(line, pms_id, col, message))

    if not pms_id:
        error("pms_id", "missing: every list row needs the PMS's own patient id")
    if not get("family_name"):
        error("family_name", "missing")
    if not get("given_name"):
        error("given_name", "missing")
    try:
        dob = _date(get("date_of_birth"))
    except ValueError:
        dob = None
        error("date_of_birth", f"{get('date_of_birth')!r} is not a date (YYYY-MM-DD)")
    if errors:
        return None, errors
    if dob > dt.date.today():
        error("date_of_birth", f"{dob.isoformat()} is in the future")
        return None, errors

    values: dict = {"pms_id": pms_id, "given_name": get("given_name"),
                    "family_name": get("family_name"), "title": get("title"),
                    "date_of_birth": dob}
    for col, clean in (("nhs_number", clean_nhs_number), ("medicare_number", clean_medicare_number),
                       ("ihi", clean_ihi), ("email", clean_email)):
        values[col], message = clean(get(col))
        if message:
            error(col, message)
    for col in ("mobile_phone", "home_phone"):
        values[col], message = clean_phone(get(col), country)
        if message:
            error(col, message)
    for col in ("address_line1", "address_line2", "locality", "postcode"):
        values[col] = get(col)

    sex = get("sex")
    values["sex"] = SEXES.get(sex.lower(), "")
    if sex and not values["sex"]:
        error("sex", f"{sex!r} is not one of M, F, X, U")

    date_of_death = None
    if get("date_of_death"):
        try:
            date_of_death = _date(get("date_of_death"))
        except ValueError:
            error("date_of_death", f"{get('date_of_death')!r} is not a date (YYYY-MM-DD)")
    status = STATUSES.get(get("registration_status").lower())
    if status is None:
        error("registration_status", f"{get('registration_status')!r} is not active, left or deceased")
    if get("date_of_death") or get("registration_status").lower() == "deceased":
        # Any date of death, even one we cannot read, is enough: when in doubt, no message
        # goes out.
        status = "deceased"
    values["date_of_death"] = date_of_death
    values["status"] = status or "active"

    return ListRow(line=line, record=PatientRecord(**values), status=status,
                   raw_digest=raw_digest(raw), clean=not errors), errors


def raw_digest(raw: dict[str, str]) -> str:
    return hashlib.md5("\x1f".join((raw.get(c) or "").strip() for c in CANONICAL_COLUMNS)
                       .encode()).hexdigest()


def _unchanged_row(line: int, raw: dict[str, str], digest: str) -> ListRow:
    """The keys of a row that was checked clean before: names, DOB and identifiers."""
    get = lambda col: (raw.get(col) or "").strip()  # noqa: E731
    record = PatientRecord(
        pms_id=get("pms_id"), given_name=get("given_name"), family_name=get("family_name"),
        date_of_birth=_date(get("date_of_birth")),
        **{name: digits_only(get(name)) or None for name in IDENTIFIER_FIELDS})
    return ListRow(line=line, record=record, status=None, raw_digest=digest, unchanged=True)


def check_rows(raw_rows, country: str, known: dict[str, PatientRecord] | None = None
               ) -> tuple[list[ListRow], list[RowError], set[str]]:
    """Every row checked; returns the rows, all errors, and every PMS id seen (broken rows
    included, so their patients are not taken for having left).

    `known` maps PMS ids to stored records: a row identical to the one that produced the
    record's fingerprint is not checked again but passed on as `unchanged`."""
    known = known or {}
    rows, errors, present = [], [], set()
    for line, raw in raw_rows:
        pms_id = (raw.get("pms_id") or "").strip()
        if pms_id in present:
            errors.append(RowError(line, pms_id, "pms_id",
                                   "appears twice in the list; only the first row is used"))
            continue
        if pms_id:
            present.add(pms_id)
        record = known.get(pms_id)
        if record is not None and record.list_fingerprint:
            digest = raw_digest(raw)
            if record.list_fingerprint == fingerprint_of(digest, record):
                rows.append(_unchanged_row(line, raw, digest))
                continue
        row, row_errors = check_row(line, raw, country)
        errors += row_errors
        if row is not None:
            rows.append(row)
    errors += drop_shared_identifiers(rows)
    return rows, sorted(errors, key=lambda e: e.row), present


def drop_shared_identifiers(rows: list[ListRow]) -> list[RowError]:
    """An identifier on two rows of one list cannot tell them apart: neither row keeps it."""
    errors = []
    for name in ("nhs_number", "medicare_number", "ihi"):
        lines = defaultdict(list)
        for row in rows:
            if value := getattr(row.record, name):
                lines[value].append(row)
        for value, shared in lines.items():
            if len(shared) < 2:
                continue
            where = ", ".join(str(r.line) for r in shared)
            for row in shared:
                setattr(row.record, name, None)
                # An unchanged row is not merged; marking it unclean clears its fingerprint
                # so the next run checks it in full.
                row.clean = False
                errors.append(RowError(row.line, row.pms_id, name,
                                       f"{value} is on rows {where} of this list; not used"))
    return errors


RULES_VERSION = "1"


def fingerprint_of(digest: str, record: PatientRecord) -> str:
    """Row and resulting record together: equal on a later run means nothing to do."""
    return hashlib.md5(repr((RULES_VERSION, digest, record.state())).encode()).hexdigest()


def fingerprint(row: ListRow, record: PatientRecord) -> str:
    return fingerprint_of(row.raw_digest, record) if row.clean else ""


def copy_record(record: PatientRecord, **changes) -> PatientRecord:
    return replace(record, **changes)
