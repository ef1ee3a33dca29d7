"""Best Practice: actioned results read from the practice's BPSPatients database.

Where a checked result is filed decides the table it lands in: an Investigation Report is a
row of INVESTIGATIONS, Correspondence In a row of CORRESPONDENCEIN (a clinical image is a
CORRESPONDENCEIN row too, flagged CLINICALIMAGE). So `filed_under` comes from the table, not
from CORRESPONDENCEIN.CATEGORY, which is the kind of document (letter, discharge summary...)
within Correspondence In.

Column meanings (public sources: the EF scaffold of a BPSPatients database and dMeasure):
- ACTION: the doctor's code 0-7, 0 = none (not actioned); words from the profile's ACTIONS.
- CHECKDATE: when the doctor checked it, our `actioned_on`.
- ACTIONED = 1: front desk has done the follow-up, i.e. the patient was notified. Its date is
  ACTIONDATE, which is *not* `actioned_on`.
- RECORDSTATUS: 1 = active; anything else is taken as deleted (the value BP writes on
  delete is not documented). A deleted row is filed as "Deleted in Best Practice", so it no
  longer counts and its group is decided again without it.
- INTERNALID is the patient's id in the practice list, our `pms_id`.

REPORTID and DOCUMENTID are numbered apart, so result ids carry the table: INV-123, COR-45.
The SQL is one constant per query, qmark parameters (UPDATED, UPDATED, last id); see base.py.

Appointments (APPOINTMENT_TABLES, for `appointments poll`) are rows of APPOINTMENTS: RECORDID
(our appointment id, as is), INTERNALID, APPOINTMENTDATE (the date part of a datetime) and
APPOINTMENTTIME (seconds after midnight, practice-local), and APPOINTMENTCODE, whose words are
in APPOINTMENTCODES.DESCRIPTION: Booked; Waiting (arrived), With doctor, At billing, Invoiced,
Paid, Completed all mean the patient came. A DNA status is not documented for BP: the
simulator's "Did not attend" is our assumption, as is a cancelled appointment being a row with
RECORDSTATUS other than 1 (BP also lists it in CANCELLEDAPPOINTMENTS).
"""

import datetime as dt
from collections.abc import Mapping

from practicesync.connectors.profiles.bestpractice import ACTIONS

from .base import Table, _parse, date_text, datetime_text, text

INVESTIGATIONS_SQL = """
SELECT REPORTID, INTERNALID, TESTNAME, COLLECTIONDATE, REPORTDATE, CHECKDATE, ACTION, COMMENT,
       ACTIONED, RECORDSTATUS, UPDATED
FROM INVESTIGATIONS
WHERE UPDATED > ? OR (UPDATED = ? AND REPORTID > ?)
ORDER BY UPDATED, REPORTID
"""

CORRESPONDENCE_IN_SQL = """
SELECT DOCUMENTID, INTERNALID, CATEGORY, SUBJECT, CORRESPONDENCEDATE, CHECKDATE, ACTION,
       COMMENT, ACTIONED, CLINICALIMAGE, RECORDSTATUS, UPDATED
FROM CORRESPONDENCEIN
WHERE UPDATED > ? OR (UPDATED = ? AND DOCUMENTID > ?)
ORDER BY UPDATED, DOCUMENTID
"""

DELETED = "Deleted in Best Practice"


def action_text(code) -> str:
    """BP's words for an action code; '' for none. An unknown code is passed on as
    "Action N", which staff then decide on (never automatic)."""
    if code in (None, "", 0):
        return ""
    meaning = ACTIONS.get(int(code))
    return meaning.label if meaning else f"Action {code}"


def _common(row: Mapping, result_id: str, filed_under: str) -> dict[str, str]:
    return {
        "result_id": result_id,
        "pms_id": text(row["INTERNALID"]),
        "actioned_on": date_text(row["CHECKDATE"]),
        "action": action_text(row["ACTION"]),
        "comment": text(row["COMMENT"]),
        "filed_under": DELETED if row["RECORDSTATUS"] != 1 else filed_under,
        "tab": "", "location": "",
        "notified": "notified" if row["ACTIONED"] == 1 else "",
    }


def investigation(row: Mapping) -> dict[str, str]:
    return {**_common(row, f"INV-{row['REPORTID']}", "Investigation Report"),
            "test_name": text(row["TESTNAME"]),
            "performed_on": datetime_text(row["COLLECTIONDATE"]),
            "reported_on": date_text(row["REPORTDATE"])}


def correspondence_in(row: Mapping) -> dict[str, str]:
    filed_under = "Clinical Image" if row["CLINICALIMAGE"] == 1 else "Correspondence In"
    return {**_common(row, f"COR-{row['DOCUMENTID']}", filed_under),
            "test_name": text(row["SUBJECT"]) or text(row["CATEGORY"]),
            "performed_on": datetime_text(row["CORRESPONDENCEDATE"]),
            "reported_on": date_text(row["CORRESPONDENCEDATE"])}


TABLES = (
    Table("INVESTIGATIONS", INVESTIGATIONS_SQL, "REPORTID", investigation),
    Table("CORRESPONDENCEIN", CORRESPONDENCE_IN_SQL, "DOCUMENTID", correspondence_in),
)


APPOINTMENTS_SQL = """
SELECT A.RECORDID, A.INTERNALID, A.APPOINTMENTDATE, A.APPOINTMENTTIME, C.DESCRIPTION,
       A.RECORDSTATUS, A.UPDATED
FROM APPOINTMENTS A LEFT JOIN APPOINTMENTCODES C ON C.APPOINTMENTCODE = A.APPOINTMENTCODE
WHERE A.UPDATED > ? OR (A.UPDATED = ? AND A.RECORDID > ?)
ORDER BY A.UPDATED, A.RECORDID
"""

# APPOINTMENTCODES.DESCRIPTION (case-insensitive) -> appointment status. Anything else is
# passed on as written: the row check refuses it, naming it.
APPOINTMENT_STATUSES = {"booked": "booked", "waiting": "attended", "with doctor": "attended",
                        "at billing": "attended", "invoiced": "attended", "paid": "attended",
                        "completed": "attended", "did not attend": "dna", "dna": "dna",
                        "cancelled": "cancelled"}


def appointment_start(date, seconds) -> str:
    """APPOINTMENTDATE's day at APPOINTMENTTIME seconds after midnight, practice-local; the
    date as written when it cannot be read (the row check reports it)."""
    try:
        day = _parse(date)
        return (dt.datetime.combine(day.date() if isinstance(day, dt.datetime) else day,
                                    dt.time()) + dt.timedelta(seconds=int(seconds or 0))
                ).isoformat(timespec="seconds")
    except (TypeError, ValueError, AttributeError):
        return text(date)


def appointment(row: Mapping) -> dict[str, str]:
    status = text(row["DESCRIPTION"])
    return {"appointment_id": text(row["RECORDID"]), "pms_id": text(row["INTERNALID"]),
            "starts_at": appointment_start(row["APPOINTMENTDATE"], row["APPOINTMENTTIME"]),
            "status": "cancelled" if row["RECORDSTATUS"] != 1
            else APPOINTMENT_STATUSES.get(status.lower(), status or "no APPOINTMENTCODE")}


APPOINTMENT_TABLES = (Table("APPOINTMENTS", APPOINTMENTS_SQL, "RECORDID", appointment),)
