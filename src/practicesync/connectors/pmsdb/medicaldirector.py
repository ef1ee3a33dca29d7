"""Medical Director: actioned results read from the practice's clinical database (HCN).

No public schema of MD's results tables exists (see the simulator's docstring): the table and
column names below are the ones of our simulator, practicesync.simulator.medicaldirector, and
a real deployment must map them onto MD's own. What they stand for is public (MD help): an
item arrives in the Holding File, the doctor records an action (No Action, Discuss, Return
Urgently or a practice's own) and optionally a comment, the item then shows in the Actioned
Items list under a tab (Results, Documents, Letters) and a Location, and staff record that the
patient was told (Discussed, Given).

STAMP_ACTION_CODE 'D' marks a deleted row (MD's soft-delete convention, seen on
MD_UPDOWN_CONFIG); it is given the Location "Deleted" so it no longer counts.
The SQL is one constant per query, qmark parameters (UPDATED, UPDATED, last id); see base.py.

Appointments (APPOINTMENT_TABLES, for `appointments poll`): MD's appointment book lives in
Pracsoft, also without a public schema; APPOINTMENTS here is again the simulator's own naming
(APPOINTMENT_ID, PATIENT_ID, START_TIME practice-local, STATUS in words, STAMP_ACTION_CODE 'D'
for a deleted appointment, which counts as cancelled).
"""

from collections.abc import Mapping

from .base import Table, date_text, datetime_text, text

ACTIONED_ITEMS_SQL = """
SELECT ITEM_ID, PATIENT_ID, TEST_NAME, COLLECTED, DATE_CREATED, DATE_CHECKED, TAB, LOCATION,
       ACTION, COMMENT, NOTIFIED, STAMP_ACTION_CODE, UPDATED
FROM ACTIONED_ITEMS
WHERE UPDATED > ? OR (UPDATED = ? AND ITEM_ID > ?)
ORDER BY UPDATED, ITEM_ID
"""

DELETED = "Deleted"


def actioned_item(row: Mapping) -> dict[str, str]:
    deleted = text(row["STAMP_ACTION_CODE"]).upper() == "D"
    return {
        "result_id": f"ITEM-{row['ITEM_ID']}",
        "pms_id": text(row["PATIENT_ID"]),
        "test_name": text(row["TEST_NAME"]),
        "performed_on": datetime_text(row["COLLECTED"]),
        "reported_on": date_text(row["DATE_CREATED"]),
        "actioned_on": date_text(row["DATE_CHECKED"]),
        "action": text(row["ACTION"]),
        "comment": text(row["COMMENT"]),
        "filed_under": "",
        "tab": text(row["TAB"]),
        "location": DELETED if deleted else text(row["LOCATION"]),
        "notified": text(row["NOTIFIED"]).lower(),
    }


TABLES = (Table("ACTIONED_ITEMS", ACTIONED_ITEMS_SQL, "ITEM_ID", actioned_item),)


APPOINTMENTS_SQL = """
SELECT APPOINTMENT_ID, PATIENT_ID, START_TIME, STATUS, STAMP_ACTION_CODE, UPDATED
FROM APPOINTMENTS
WHERE UPDATED > ? OR (UPDATED = ? AND APPOINTMENT_ID > ?)
ORDER BY UPDATED, APPOINTMENT_ID
"""

# STATUS (case-insensitive) -> appointment status; anything else is passed on for the row
# check to refuse, naming it.
APPOINTMENT_STATUSES = {"booked": "booked", "arrived": "attended", "with doctor": "attended",
                        "completed": "attended", "did not attend": "dna",
                        "cancelled": "cancelled"}


def appointment(row: Mapping) -> dict[str, str]:
    status = text(row["STATUS"])
    deleted = text(row["STAMP_ACTION_CODE"]).upper() == "D"
    return {"appointment_id": text(row["APPOINTMENT_ID"]), "pms_id": text(row["PATIENT_ID"]),
            "starts_at": datetime_text(row["START_TIME"]),
            "status": "cancelled" if deleted else APPOINTMENT_STATUSES.get(status.lower(), status)}


APPOINTMENT_TABLES = (Table("APPOINTMENTS", APPOINTMENTS_SQL, "APPOINTMENT_ID", appointment),)
