"""A MedicalDirector (MD3 Clinical) results database in SQLite, for demos, tests and benchmarks.

MD keeps its clinical data in the SQL Server database HCN, but no public description of its
results tables exists. This simulator therefore models what MD's help pages describe, in
tables and columns of **our own naming**; a real deployment maps them onto MD's.

From public sources (MD help: Checking-Off New Results, Holding File, Managing New Results,
Actioned Items; an FHT integration naming the HCN database and MD_UPDOWN_CONFIG):
- a result arrives in the Holding File; the doctor must record an action before it is saved
  to the record: No Action, Discuss, Return Urgently, or one the practice added to the list;
  a comment may go with it;
- the item is filed under a tab, Results, Documents or Letters ("Move Location"); a test
  named Letter, Summary or Correspondence, or with no name, goes to Letters, everything else
  to Results;
- checked items show in the Actioned Items list with their Date Created and Date Checked;
- staff record that the patient was told (we store "Discussed" or "Given", the words of
  DESIGN.md section 3; Helix, MD's cloud product, has a "Discussed" status);
- HCN marks a deleted row with STAMP_ACTION_CODE 'D' (seen on MD_UPDOWN_CONFIG).

Appointments (MD's appointment book is in Pracsoft, also without a public schema): our table
APPOINTMENTS with APPOINTMENT_ID, PATIENT_ID, START_TIME (practice-local), STATUS in words
(Booked, Arrived, With Doctor, Completed, Did Not Attend, Cancelled) and STAMP_ACTION_CODE.

Our assumptions: the table names PATIENTS, ACTIONED_ITEMS and APPOINTMENTS and every column name
and width;
one ACTIONED_ITEMS row per item from its arrival in the Holding File (ACTION empty) until it is
told; LOCATION as the singular of the tab unless set otherwise; char columns padded as in
BP (SQL Server char); UPDATED set on every change. Datetimes are text as in bestpractice.py,
which also holds the machinery both simulators share (SimulatedDatabase, SteppingClock).
"""

import datetime as dt
import random
from pathlib import Path

from practicesync.patients.rows import CANONICAL_COLUMNS

from .bestpractice import COMMENTS, TESTS, Item, SimulatedDatabase, SteppingClock
from .patients import FAMILY, GIVEN, synthetic_medicare_number, synthetic_mobile

ACTIONED_ITEMS, APPOINTMENTS = "ACTIONED_ITEMS", "APPOINTMENTS"
BOOKED, ARRIVED, WITH_DOCTOR, COMPLETED = "Booked", "Arrived", "With Doctor", "Completed"
DID_NOT_ATTEND, CANCELLED = "Did Not Attend", "Cancelled"
NO_ACTION, DISCUSS, RETURN_URGENTLY = "No Action", "Discuss", "Return Urgently"
DISCUSSED, GIVEN_ = "Discussed", "Given"
RESULTS, DOCUMENTS, LETTERS = "Results", "Documents", "Letters"
LOCATIONS = {RESULTS: "Result", DOCUMENTS: "Document", LETTERS: "Letter"}
LETTER_NAMES = {"", "letter", "summary", "correspondence"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS PATIENTS (
    PATIENT_ID INTEGER PRIMARY KEY,
    FIRST_NAME CHAR(40) NOT NULL,
    SURNAME CHAR(40) NOT NULL,
    DOB DATETIME,
    SEX CHAR(1) NOT NULL DEFAULT '',
    MOBILE CHAR(20) NOT NULL DEFAULT '',
    MEDICARE_NO CHAR(12) NOT NULL DEFAULT '',
    STAMP_ACTION_CODE CHAR(1) NOT NULL DEFAULT '',
    CREATED DATETIME NOT NULL,
    UPDATED DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS ACTIONED_ITEMS (
    ITEM_ID INTEGER PRIMARY KEY,
    PATIENT_ID INTEGER NOT NULL,
    TEST_NAME CHAR(80) NOT NULL DEFAULT '',
    COLLECTED DATETIME,
    DATE_CREATED DATETIME,
    DATE_CHECKED DATETIME,
    TAB CHAR(20) NOT NULL DEFAULT '',
    LOCATION CHAR(20) NOT NULL DEFAULT '',
    ACTION CHAR(40) NOT NULL DEFAULT '',
    COMMENT VARCHAR(1000) NOT NULL DEFAULT '',
    NOTIFIED CHAR(12) NOT NULL DEFAULT '',
    STAMP_ACTION_CODE CHAR(1) NOT NULL DEFAULT '',
    CREATED DATETIME NOT NULL,
    UPDATED DATETIME NOT NULL
);
CREATE INDEX IF NOT EXISTS ACTIONED_ITEMS_UPDATED ON ACTIONED_ITEMS (UPDATED, ITEM_ID);
CREATE TABLE IF NOT EXISTS APPOINTMENTS (
    APPOINTMENT_ID INTEGER PRIMARY KEY,
    PATIENT_ID INTEGER NOT NULL,
    START_TIME DATETIME NOT NULL,
    DURATION_MINUTES INTEGER NOT NULL DEFAULT 15,
    STATUS CHAR(20) NOT NULL DEFAULT 'Booked',
    STAMP_ACTION_CODE CHAR(1) NOT NULL DEFAULT '',
    CREATED DATETIME NOT NULL,
    UPDATED DATETIME NOT NULL
);
CREATE INDEX IF NOT EXISTS APPOINTMENTS_UPDATED ON APPOINTMENTS (UPDATED, APPOINTMENT_ID);
"""
WIDTHS = {"FIRST_NAME": 40, "SURNAME": 40, "SEX": 1, "MOBILE": 20, "MEDICARE_NO": 12,
          "TEST_NAME": 80, "TAB": 20, "LOCATION": 20, "ACTION": 40, "NOTIFIED": 12,
          "STAMP_ACTION_CODE": 1, "STATUS": 20}


def auto_tab(test_name: str) -> str:
    """Where MD files a new item by its test name."""
    return LETTERS if test_name.strip().casefold() in LETTER_NAMES else RESULTS


class MedicalDirectorSimulator(SimulatedDatabase):
    """A practice's MD clinical database: patients, the Holding File and Actioned Items."""

    SCHEMA = SCHEMA
    WIDTHS = WIDTHS
    ID_COLUMNS = {ACTIONED_ITEMS: "ITEM_ID", APPOINTMENTS: "APPOINTMENT_ID"}

    def add_patient(self, *, first_name: str, surname: str, dob: dt.date, sex: str = "F",
                    mobile: str = "", medicare: str = "") -> int:
        """A patient; the PATIENT_ID returned is the `pms_id` of the practice list."""
        return self._insert("PATIENTS", {"FIRST_NAME": first_name, "SURNAME": surname,
                                         "DOB": dob, "SEX": sex, "MOBILE": mobile,
                                         "MEDICARE_NO": medicare})

    def add_result(self, patient_id: int, test_name: str, *, collected: dt.datetime,
                   created: dt.datetime | None = None, action: str = "", comment: str = "",
                   checked: dt.datetime | None = None, tab: str | None = None) -> Item:
        """A result arriving in the Holding File, filed by MD's auto-location unless `tab`
        is given; with `action` the doctor has already checked it."""
        tab = tab or auto_tab(test_name)
        if action and checked is None:
            checked = self.clock()
        return Item(ACTIONED_ITEMS, self._insert(ACTIONED_ITEMS, {
            "PATIENT_ID": patient_id, "TEST_NAME": test_name, "COLLECTED": collected,
            "DATE_CREATED": created or collected, "DATE_CHECKED": checked, "TAB": tab,
            "LOCATION": LOCATIONS.get(tab, tab), "ACTION": action, "COMMENT": comment}))

    def check(self, item: Item, action: str, *, comment: str = "",
              checked: dt.datetime | None = None) -> None:
        """The doctor checks the item off: an action (MD's or the practice's own) and an
        optional comment. It moves from the Holding File to Actioned Items."""
        self.update(item, ACTION=action, COMMENT=comment, DATE_CHECKED=checked or self.clock())

    def move_location(self, item: Item, tab: str, *, location: str | None = None) -> None:
        self.update(item, TAB=tab, LOCATION=location or LOCATIONS.get(tab, tab))

    def mark_notified(self, item: Item, how: str = GIVEN_) -> None:
        """Staff record that the patient was told: Discussed or Given."""
        self.update(item, NOTIFIED=how)

    def delete(self, item: Item) -> None:
        self.update(item, STAMP_ACTION_CODE="D")

    def add_appointment(self, patient_id: int, starts: dt.datetime, *, status: str = BOOKED,
                        minutes: int = 15) -> Item:
        """An appointment at `starts` (practice-local)."""
        return Item(APPOINTMENTS, self._insert(APPOINTMENTS, {
            "PATIENT_ID": patient_id, "START_TIME": starts, "DURATION_MINUTES": minutes,
            "STATUS": status}))

    def set_appointment_status(self, item: Item, status: str) -> None:
        """Arrived, With Doctor, Completed, Did Not Attend or Cancelled."""
        self.update(item, STATUS=status)

    def patient_list_rows(self) -> list[dict[str, str]]:
        """The patients as canonical practice-list rows (for `patients sync`)."""
        rows = []
        for p in self.connection.execute("SELECT * FROM PATIENTS WHERE STAMP_ACTION_CODE <> 'D' "
                                         "ORDER BY PATIENT_ID"):
            row = dict.fromkeys(CANONICAL_COLUMNS, "")
            row.update(pms_id=str(p["PATIENT_ID"]), given_name=p["FIRST_NAME"].strip(),
                       family_name=p["SURNAME"].strip(), date_of_birth=(p["DOB"] or "")[:10],
                       sex=p["SEX"].strip(), mobile_phone=p["MOBILE"].strip(),
                       medicare_number=p["MEDICARE_NO"].strip(), registration_status="active")
            rows.append(row)
        return rows


CUSTOM_ACTIONS = ["Recall 3 months", "Book GP appointment"]


def generate(path: str | Path, *, seed: int = 1, patients: int = 40,
             start: dt.datetime = dt.datetime(2026, 11, 16, 8, 0)) -> MedicalDirectorSimulator:
    """A practice with `patients` synthetic patients and a week of items from `start`: each
    action (Discuss with and without a comment, No Action, Return Urgently, custom), items
    still in the Holding File, letters and documents, items already told, one deleted.
    Deterministic by seed; the caller closes the simulator (it is a context manager)."""
    rng = random.Random(seed)
    clock = SteppingClock(start)
    sim = MedicalDirectorSimulator(path, clock=clock)
    ids = [sim.add_patient(first_name=rng.choice(GIVEN), surname=rng.choice(FAMILY),
                           sex=rng.choice("MF"),
                           dob=dt.date(1940, 1, 1) + dt.timedelta(days=rng.randint(0, 30000)),
                           mobile=synthetic_mobile(rng, "AU") if rng.random() < 0.85 else "",
                           medicare=synthetic_medicare_number(rng, irn=rng.randint(1, 5)))
           for _ in range(patients)]
    # (action, comment); the first patients get each in turn, so every kind is present.
    kinds = [("", ""), (NO_ACTION, ""), (DISCUSS, ""), (DISCUSS, "see me about the dose"),
             (RETURN_URGENTLY, ""), (CUSTOM_ACTIONS[0], "")]
    chosen = kinds + [rng.choice(kinds + [(DISCUSS, ""), (DISCUSS, rng.choice(COMMENTS)),
                                          (CUSTOM_ACTIONS[1], "")])
                      for _ in range(len(ids) - len(kinds))]
    visits = sorted((start + dt.timedelta(days=rng.randint(0, 5), hours=rng.randint(0, 9)),
                     patient_id, kind) for patient_id, kind in zip(ids, chosen, strict=False))
    items = []
    for collected, patient_id, (action, comment) in visits:
        created = collected + dt.timedelta(hours=rng.randint(4, 30))
        clock.advance_to(created + dt.timedelta(hours=2))  # the doctor checks it then
        for test in rng.sample(TESTS, rng.randint(1, 3)):
            items.append(sim.add_result(patient_id, test, collected=collected, created=created,
                                        action=action, comment=comment))
        if rng.random() < 0.2:
            sim.add_result(patient_id, "Letter", collected=collected, created=created,
                           action=DISCUSS)
        if rng.random() < 0.1:
            sim.add_result(patient_id, "Echocardiogram", collected=collected, created=created,
                           action=DISCUSS, tab=DOCUMENTS)
    clock.advance_to(clock.now + dt.timedelta(days=1))  # staff tell the patients
    for item in rng.sample(items, len(items) // 5):
        if sim.row(item)["ACTION"].strip():
            sim.mark_notified(item, rng.choice([DISCUSSED, GIVEN_]))
    sim.delete(items[-1])
    return sim
