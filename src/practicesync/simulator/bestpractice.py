"""A Best Practice (Bp Premier) clinical database in SQLite, for demos, tests and benchmarks.

BP keeps its clinical data in the SQL Server database BPSPatients. This simulator creates the
raw tables that hold patients and checked results, with BP's table and column names, so the
PMS database connector (practicesync.connectors.pmsdb.bestpractice) runs the same SQL on it.

From public sources (the EF Core scaffold of a real BPSPatients database in
github.com/2tajshariff/nrme.Booking.Api, and dMeasure's BP queries):
- table names PATIENTS, INVESTIGATIONS, CORRESPONDENCEIN and their column names used here,
  including RECORDSTATUS (1 = active) and CREATED/UPDATED on every raw row;
- INVESTIGATIONS.TESTNAME is char(80) and CATEGORYNAME char(40); text columns are fixed-width
  char, padded with trailing spaces (dMeasure trims every value it reads);
- ACTION codes 0-7 (0 none, 1 No action ... 7 Urgent appointment) and NOTATION codes 0-7
  (0 none, 1 Normal ... 7 Under specialist care), decoded by dMeasure for CORRESPONDENCEIN;
- ACTIONED flags that the front desk has done the follow-up (the patient was notified), dated
  by ACTIONDATE; CHECKDATE is when the doctor checked the result.

Our assumptions (not found in public sources):
- the widths of the other char columns (names 40, SUBJECT 100, phones 20, Medicare 12);
- CORRESPONDENCEIN.COMMENT (the BPS_CorrespondenceIn view has Comment) and PROVIDERNAME,
  CONTACTNAME as char;
- the same ACTION/NOTATION codes in INVESTIGATIONS as in CORRESPONDENCEIN;
- SEXCODE 1 = male, 2 = female; PATIENTSTATUS 1 = active, 3 = deceased;
- RECORDSTATUS 0 for a deleted row, and CLINICALIMAGE 1 for a clinical image;
- UPDATED is set on every insert and change.
Datetimes are stored as text in SQL Server's rendering, `YYYY-MM-DD HH:MM:SS.fff`.

Appointments: the raw APPOINTMENTS table (RECORDID, INTERNALID, USERID, APPOINTMENTDATE,
APPOINTMENTTIME in seconds after midnight, APPOINTMENTLENGTH in seconds, APPOINTMENTCODE,
APPOINTMENTTYPE, RECORDSTATUS) and the status words of APPOINTMENTCODES.DESCRIPTION (Booked,
Waiting, With doctor, At billing, Invoiced, Paid, Completed) are from the same public sources;
our assumptions are the code numbers, an extra "Did not attend" code (no primary source has a
DNA status), and a cancellation setting RECORDSTATUS 0 and adding a CANCELLEDAPPOINTMENTS row.
"""

import datetime as dt
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from practicesync.patients.rows import CANONICAL_COLUMNS

from .patients import FAMILY, GIVEN, synthetic_medicare_number, synthetic_mobile

INVESTIGATIONS, CORRESPONDENCEIN = "INVESTIGATIONS", "CORRESPONDENCEIN"
APPOINTMENTS = "APPOINTMENTS"
# APPOINTMENTCODES: code -> DESCRIPTION (char(20)). The numbers are ours.
BOOKED, WAITING, WITH_DOCTOR, AT_BILLING, INVOICED, PAID, COMPLETED, DID_NOT_ATTEND = range(1, 9)
APPOINTMENT_CODES = {BOOKED: "Booked", WAITING: "Waiting", WITH_DOCTOR: "With doctor",
                     AT_BILLING: "At billing", INVOICED: "Invoiced", PAID: "Paid",
                     COMPLETED: "Completed", DID_NOT_ATTEND: "Did not attend"}
NO_ACTION, RECEPTION_TO_ADVISE, NURSE_TO_ADVISE, DOCTOR_TO_ADVISE = 1, 2, 3, 4
SEND_ROUTINE_REMINDER, NON_URGENT_APPOINTMENT, URGENT_APPOINTMENT = 5, 6, 7
ACTION_CODES = range(0, 8)  # 0 = not actioned
NORMAL, ABNORMAL = 1, 2
ACTIVE, DELETED = 1, 0

SCHEMA = """
CREATE TABLE IF NOT EXISTS PATIENTS (
    INTERNALID INTEGER PRIMARY KEY,
    FIRSTNAME CHAR(40) NOT NULL,
    SURNAME CHAR(40) NOT NULL,
    DOB DATETIME,
    SEXCODE INTEGER NOT NULL DEFAULT 0,
    MOBILEPHONE CHAR(20) NOT NULL DEFAULT '',
    MEDICARENO CHAR(12) NOT NULL DEFAULT '',
    PATIENTSTATUS INTEGER NOT NULL DEFAULT 1,
    DATEOFDEATH DATETIME,
    RECORDSTATUS INTEGER NOT NULL DEFAULT 1,
    CREATED DATETIME NOT NULL,
    UPDATED DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS INVESTIGATIONS (
    REPORTID INTEGER PRIMARY KEY,
    INTERNALID INTEGER NOT NULL,
    USERID INTEGER NOT NULL DEFAULT 0,
    PROVIDERNAME CHAR(60) NOT NULL DEFAULT '',
    TESTNAME CHAR(80) NOT NULL,
    COLLECTIONDATE DATETIME,
    REPORTDATE DATETIME,
    CHECKDATE DATETIME,
    CHECKEDBY INTEGER NOT NULL DEFAULT 0,
    NOTATION INTEGER NOT NULL DEFAULT 0,
    ACTION INTEGER NOT NULL DEFAULT 0,
    COMMENT VARCHAR(1000) NOT NULL DEFAULT '',
    ACTIONED INTEGER NOT NULL DEFAULT 0,
    ACTIONDATE DATETIME,
    RECORDSTATUS INTEGER NOT NULL DEFAULT 1,
    CREATED DATETIME NOT NULL,
    UPDATED DATETIME NOT NULL
);
CREATE INDEX IF NOT EXISTS INVESTIGATIONS_UPDATED ON INVESTIGATIONS (UPDATED, REPORTID);
CREATE TABLE IF NOT EXISTS CORRESPONDENCEIN (
    DOCUMENTID INTEGER PRIMARY KEY,
    INTERNALID INTEGER NOT NULL,
    USERID INTEGER NOT NULL DEFAULT 0,
    CORRESPONDENCEDATE DATETIME,
    CONTACTNAME CHAR(60) NOT NULL DEFAULT '',
    CATEGORY CHAR(40) NOT NULL DEFAULT '',
    SUBJECT CHAR(100) NOT NULL DEFAULT '',
    CHECKDATE DATETIME,
    CHECKEDBY INTEGER NOT NULL DEFAULT 0,
    NOTATION INTEGER NOT NULL DEFAULT 0,
    ACTION INTEGER NOT NULL DEFAULT 0,
    COMMENT VARCHAR(1000) NOT NULL DEFAULT '',
    ACTIONED INTEGER NOT NULL DEFAULT 0,
    ACTIONDATE DATETIME,
    CLINICALIMAGE INTEGER NOT NULL DEFAULT 0,
    RECORDSTATUS INTEGER NOT NULL DEFAULT 1,
    CREATED DATETIME NOT NULL,
    UPDATED DATETIME NOT NULL
);
CREATE INDEX IF NOT EXISTS CORRESPONDENCEIN_UPDATED ON CORRESPONDENCEIN (UPDATED, DOCUMENTID);
CREATE TABLE IF NOT EXISTS APPOINTMENTCODES (
    APPOINTMENTCODE INTEGER PRIMARY KEY,
    DESCRIPTION CHAR(20) NOT NULL
);
CREATE TABLE IF NOT EXISTS APPOINTMENTS (
    RECORDID INTEGER PRIMARY KEY,
    INTERNALID INTEGER NOT NULL,
    USERID INTEGER NOT NULL DEFAULT 0,
    LOCATIONID INTEGER NOT NULL DEFAULT 0,
    APPOINTMENTDATE DATETIME NOT NULL,
    APPOINTMENTTIME INTEGER NOT NULL,
    APPOINTMENTLENGTH INTEGER NOT NULL DEFAULT 900,
    APPOINTMENTCODE INTEGER NOT NULL DEFAULT 1,
    APPOINTMENTTYPE INTEGER NOT NULL DEFAULT 0,
    URGENT INTEGER NOT NULL DEFAULT 0,
    REASON CHAR(100) NOT NULL DEFAULT '',
    ARRIVALTIME INTEGER NOT NULL DEFAULT 0,
    RECORDSTATUS INTEGER NOT NULL DEFAULT 1,
    CREATED DATETIME NOT NULL,
    UPDATED DATETIME NOT NULL
);
CREATE INDEX IF NOT EXISTS APPOINTMENTS_UPDATED ON APPOINTMENTS (UPDATED, RECORDID);
CREATE TABLE IF NOT EXISTS CANCELLEDAPPOINTMENTS (
    APPOINTMENTID INTEGER NOT NULL,
    CANCELLEDBY INTEGER NOT NULL DEFAULT 0,
    CANCELLEDDATE DATETIME NOT NULL,
    REASON CHAR(100) NOT NULL DEFAULT ''
);
""" + "".join(f"INSERT OR IGNORE INTO APPOINTMENTCODES VALUES ({code}, '{words.ljust(20)}');\n"
              for code, words in APPOINTMENT_CODES.items())

# Widths of the char columns this simulator writes: values are padded to them.
WIDTHS = {"FIRSTNAME": 40, "SURNAME": 40, "MOBILEPHONE": 20, "MEDICARENO": 12,
          "PROVIDERNAME": 60, "TESTNAME": 80, "CONTACTNAME": 60, "CATEGORY": 40, "SUBJECT": 100,
          "REASON": 100}
ID_COLUMNS = {INVESTIGATIONS: "REPORTID", CORRESPONDENCEIN: "DOCUMENTID", APPOINTMENTS: "RECORDID"}


def pad(value: str, width: int) -> str:
    """A value as a SQL Server char(width) column holds it."""
    if len(value) > width:
        raise ValueError(f"{value!r} does not fit char({width})")
    return value.ljust(width)


def sql_datetime(value: dt.date | dt.datetime | None) -> str | None:
    """SQL Server's rendering of a datetime: fixed width, so text order is time order."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    return value.isoformat(sep=" ", timespec="milliseconds")


class SteppingClock:
    """A deterministic clock: each reading is `step` after the previous one."""

    def __init__(self, start: dt.datetime, step: dt.timedelta = dt.timedelta(seconds=7)):
        self.now, self.step = start, step

    def __call__(self) -> dt.datetime:
        self.now += self.step
        return self.now

    def advance_to(self, when: dt.datetime) -> None:
        """Jump ahead to `when` (never back: UPDATED only grows)."""
        self.now = max(self.now, when)


def wall_clock() -> dt.datetime:
    return dt.datetime.now()


@dataclass(frozen=True)
class Item:
    """A result in the simulated PMS: the table it is filed in and its id there."""

    table: str
    id: int


class SimulatedDatabase:
    """What both PMS simulators share: a SQLite file, a clock for UPDATED, padded writes."""

    SCHEMA = ""
    WIDTHS: dict[str, int] = {}
    ID_COLUMNS: dict[str, str] = {}

    def __init__(self, path: str | Path, *, clock: Callable[[], dt.datetime] = wall_clock):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.connection = sqlite3.connect(self.path)
        self.connection.row_factory = sqlite3.Row
        self.connection.executescript(self.SCHEMA)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    def _values(self, values: dict) -> dict:
        out = {}
        for column, value in values.items():
            if column in self.WIDTHS:
                value = pad(value or "", self.WIDTHS[column])
            elif isinstance(value, dt.date):
                value = sql_datetime(value)
            out[column] = value
        return out

    def _insert(self, table: str, values: dict) -> int:
        now = sql_datetime(self.clock())
        values = self._values(values) | {"CREATED": now, "UPDATED": now}
        with self.connection:
            cursor = self.connection.execute(
                f"INSERT INTO {table} ({', '.join(values)}) "
                f"VALUES ({', '.join('?' * len(values))})", tuple(values.values()))
        return cursor.lastrowid

    def update(self, item: Item, **values) -> None:
        """Change columns of a result as the PMS would, bumping UPDATED."""
        values = self._values(values) | {"UPDATED": sql_datetime(self.clock())}
        with self.connection:
            changed = self.connection.execute(
                f"UPDATE {item.table} SET {', '.join(f'{c} = ?' for c in values)} "
                f"WHERE {self.ID_COLUMNS[item.table]} = ?", (*values.values(), item.id)).rowcount
        if not changed:
            raise LookupError(f"no {item.table} row {item.id}")

    def row(self, item: Item) -> dict:
        """The raw row, padding and all."""
        found = self.connection.execute(
            f"SELECT * FROM {item.table} WHERE {self.ID_COLUMNS[item.table]} = ?",
            (item.id,)).fetchone()
        if found is None:
            raise LookupError(f"no {item.table} row {item.id}")
        return dict(found)


class BestPracticeSimulator(SimulatedDatabase):
    """A practice's BPSPatients database: patients, filed results, the doctor's actions."""

    SCHEMA = SCHEMA
    WIDTHS = WIDTHS
    ID_COLUMNS = ID_COLUMNS

    def add_patient(self, *, firstname: str, surname: str, dob: dt.date, sex: str = "F",
                    mobile: str = "", medicare: str = "",
                    died: dt.date | None = None) -> int:
        """A patient; the INTERNALID returned is the `pms_id` of the practice list."""
        return self._insert("PATIENTS", {
            "FIRSTNAME": firstname, "SURNAME": surname, "DOB": dob,
            "SEXCODE": {"M": 1, "F": 2}.get(sex, 0), "MOBILEPHONE": mobile,
            "MEDICARENO": medicare, "PATIENTSTATUS": 3 if died else 1, "DATEOFDEATH": died})

    def add_investigation(self, internal_id: int, test_name: str, *, collected: dt.datetime,
                          reported: dt.datetime | None = None, lab: str = "Example Pathology",
                          action: int = 0, notation: int = 0, comment: str = "",
                          checked: dt.datetime | None = None) -> Item:
        """A result filed as an Investigation Report. With `action` 0 no doctor has actioned
        it yet; otherwise it was checked at `checked` (default: now)."""
        if action and checked is None:
            checked = self.clock()
        return Item(INVESTIGATIONS, self._insert(INVESTIGATIONS, {
            "INTERNALID": internal_id, "PROVIDERNAME": lab, "TESTNAME": test_name,
            "COLLECTIONDATE": collected, "REPORTDATE": reported or collected,
            "CHECKDATE": checked, "CHECKEDBY": 1 if checked else 0, "NOTATION": notation,
            "ACTION": action, "COMMENT": comment}))

    def add_correspondence(self, internal_id: int, subject: str, *, dated: dt.datetime,
                           category: str = "Letter", contact: str = "", action: int = 0,
                           notation: int = 0, comment: str = "",
                           checked: dt.datetime | None = None,
                           clinical_image: bool = False) -> Item:
        """A document filed as Correspondence In (or, with `clinical_image`, a clinical
        image, which BP keeps in the same table)."""
        if action and checked is None:
            checked = self.clock()
        return Item(CORRESPONDENCEIN, self._insert(CORRESPONDENCEIN, {
            "INTERNALID": internal_id, "CORRESPONDENCEDATE": dated, "CONTACTNAME": contact,
            "CATEGORY": category, "SUBJECT": subject, "CHECKDATE": checked,
            "CHECKEDBY": 1 if checked else 0, "NOTATION": notation, "ACTION": action,
            "COMMENT": comment, "CLINICALIMAGE": int(clinical_image)}))

    def action(self, item: Item, action: int, *, notation: int | None = None,
               comment: str = "", checked: dt.datetime | None = None) -> None:
        """The doctor checks the result: notation, action code and comment."""
        values = {"ACTION": action, "COMMENT": comment, "CHECKDATE": checked or self.clock(),
                  "CHECKEDBY": 1}
        if notation is not None:
            values["NOTATION"] = notation
        self.update(item, **values)

    def mark_notified(self, item: Item, when: dt.datetime | None = None) -> None:
        """Front desk has done the follow-up: the patient was told."""
        self.update(item, ACTIONED=1, ACTIONDATE=when or self.clock())

    def delete(self, item: Item) -> None:
        """Deleted in BP (a result filed to the wrong patient): the row stays, inactive."""
        self.update(item, RECORDSTATUS=DELETED)

    def add_appointment(self, internal_id: int, starts: dt.datetime, *, code: int = BOOKED,
                        length: int = 900, reason: str = "") -> Item:
        """An appointment at `starts` (practice-local), as BP_AddAppointmentEx books it:
        the day in APPOINTMENTDATE, the time as seconds after midnight."""
        midnight = dt.datetime.combine(starts.date(), dt.time())
        return Item(APPOINTMENTS, self._insert(APPOINTMENTS, {
            "INTERNALID": internal_id, "APPOINTMENTDATE": midnight,
            "APPOINTMENTTIME": int((starts - midnight).total_seconds()),
            "APPOINTMENTLENGTH": length, "APPOINTMENTCODE": code, "REASON": reason}))

    def set_appointment_code(self, item: Item, code: int) -> None:
        """Reception moves the appointment on: Waiting (arrived) ... Completed, or DNA."""
        self.update(item, APPOINTMENTCODE=code, **(
            {"ARRIVALTIME": 1} if code not in (BOOKED, DID_NOT_ATTEND) else {}))

    def cancel_appointment(self, item: Item, reason: str = "") -> None:
        """Cancelled: the row goes inactive and is listed in CANCELLEDAPPOINTMENTS."""
        self.update(item, RECORDSTATUS=DELETED)
        with self.connection:
            self.connection.execute(
                "INSERT INTO CANCELLEDAPPOINTMENTS (APPOINTMENTID, CANCELLEDDATE, REASON) "
                "VALUES (?, ?, ?)", (item.id, sql_datetime(self.clock()), pad(reason, 100)))

    def patient_list_rows(self) -> list[dict[str, str]]:
        """The patients as canonical practice-list rows (for `patients sync`)."""
        rows = []
        for p in self.connection.execute("SELECT * FROM PATIENTS WHERE RECORDSTATUS = 1 "
                                         "ORDER BY INTERNALID"):
            row = dict.fromkeys(CANONICAL_COLUMNS, "")
            row.update(pms_id=str(p["INTERNALID"]), given_name=p["FIRSTNAME"].strip(),
                       family_name=p["SURNAME"].strip(),
                       date_of_birth=(p["DOB"] or "")[:10],
                       sex={1: "M", 2: "F"}.get(p["SEXCODE"], ""),
                       mobile_phone=p["MOBILEPHONE"].strip(),
                       medicare_number=p["MEDICARENO"].strip(),
                       registration_status="deceased" if p["DATEOFDEATH"] else "active",
                       date_of_death=(p["DATEOFDEATH"] or "")[:10])
            rows.append(row)
        return rows


TESTS = ["FBC", "EUC", "LFT", "HbA1c", "Lipids", "TSH", "Iron studies", "Vitamin D", "CRP",
         "Urine MCS", "PSA", "INR", "Ferritin", "Chest X-ray", "Pelvic ultrasound"]
LETTERS = [("Discharge summary", "Discharge Summary"), ("Letter", "Cardiology review"),
           ("Letter", "Dermatology opinion"), ("Result", "Sleep study report")]
COMMENTS = ["", "", "", "Please book to discuss.", "Repeat in 3 months.", "Low iron."]


def generate(path: str | Path, *, seed: int = 1, patients: int = 40,
             start: dt.datetime = dt.datetime(2026, 11, 16, 8, 0)) -> BestPracticeSimulator:
    """A practice with `patients` synthetic patients and a week of results from `start`:
    every action code (0 = not yet actioned) on Investigation Reports, actioned Correspondence
    In, clinical images, results already notified, and one deleted. Deterministic by seed;
    the caller closes the simulator (it is a context manager)."""
    rng = random.Random(seed)
    clock = SteppingClock(start)
    sim = BestPracticeSimulator(path, clock=clock)
    ids = []
    for _ in range(patients):
        ids.append(sim.add_patient(
            firstname=rng.choice(GIVEN), surname=rng.choice(FAMILY), sex=rng.choice("MF"),
            dob=dt.date(1940, 1, 1) + dt.timedelta(days=rng.randint(0, 30000)),
            mobile=synthetic_mobile(rng, "AU") if rng.random() < 0.85 else "",
            medicare=synthetic_medicare_number(rng, irn=rng.randint(1, 5))))
    # The first patients get each action code in turn, so every code is present.
    codes = [*ACTION_CODES] + [rng.choice([0, 1, 1, 2, 3, 4, 5, 6, 6, 6, 7])
                               for _ in range(len(ids) - len(ACTION_CODES))]
    visits = sorted((start + dt.timedelta(days=rng.randint(0, 5), hours=rng.randint(0, 9)),
                     internal_id, code) for internal_id, code in zip(ids, codes, strict=False))
    items = []
    for collected, internal_id, code in visits:
        reported = collected + dt.timedelta(hours=rng.randint(4, 30))
        clock.advance_to(reported + dt.timedelta(hours=2))  # the doctor checks it then
        for test in rng.sample(TESTS, rng.randint(1, 3)):
            items.append(sim.add_investigation(
                internal_id, test, collected=collected, reported=reported, action=code,
                notation=NORMAL if code == NO_ACTION else ABNORMAL if code else 0,
                comment=rng.choice(COMMENTS) if code else ""))
        if rng.random() < 0.25:
            category, subject = rng.choice(LETTERS)
            items.append(sim.add_correspondence(
                internal_id, subject, category=category, dated=collected,
                action=rng.choice([1, 4, 6]), contact="Dr R. Specialist"))
        if rng.random() < 0.05:
            sim.add_correspondence(internal_id, "Skin lesion", category="Clinical photo",
                                   dated=collected, action=6, clinical_image=True)
    clock.advance_to(clock.now + dt.timedelta(days=1))  # front desk follows up
    for item in rng.sample(items, len(items) // 5):
        if sim.row(item)["ACTION"]:
            sim.mark_notified(item)
    sim.delete(items[-1])
    return sim
