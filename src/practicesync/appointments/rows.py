"""One appointment row (canonical `appointment_id,pms_id,starts_at,status`), checked. Pure."""

import datetime as dt
from dataclasses import dataclass

from practicesync.patients.rows import RowError

COLUMNS = ("appointment_id", "pms_id", "starts_at", "status")
STATUSES = ("booked", "cancelled", "dna", "attended")
# The stored lengths (appointments.models.Appointment): a longer value is refused, not cut,
# since a cut id could merge two appointments.
MAX_LENGTHS = {"appointment_id": 100, "pms_id": 64}


@dataclass(frozen=True)
class AppointmentRow:
    line: int
    appointment_id: str
    pms_id: str
    starts_at: dt.datetime   # aware
    status: str


def parse_starts_at(text: str, tz: dt.tzinfo) -> dt.datetime:
    """ISO 8601 with an offset, or without one in the practice's time (a PMS keeps local
    times). A bare date is refused: Pause on Booking compares the time with now."""
    text = text.strip()
    if len(text) <= 10:
        raise ValueError(f"{text!r} is not an ISO 8601 date-time (YYYY-MM-DDTHH:MM[+HH:MM])")
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date-time (YYYY-MM-DDTHH:MM[+HH:MM])"
                         ) from None
    return value if value.tzinfo else value.replace(tzinfo=tz)


def check_appointment_row(line: int, raw: dict[str, str], tz: dt.tzinfo
                          ) -> tuple[AppointmentRow | None, list[RowError]]:
    """The row, or None and why (every problem of the row, by column). A row with an
    unknown pms_id is still a good row here: whether the patient exists is the import's."""
    values = {c: (raw.get(c) or "").strip() for c in COLUMNS}
    pms_id = values["pms_id"] or None
    errors: list[RowError] = []

    def error(column: str, message: str) -> None:
        errors.append(RowError(line, pms_id, column, message))

    for column in COLUMNS:
        if not values[column]:
            error(column, "missing")
    for column, limit in MAX_LENGTHS.items():
        if len(values[column]) > limit:
            error(column, f"longer than {limit} characters")
    starts_at = None
    if values["starts_at"]:
        try:
            starts_at = parse_starts_at(values["starts_at"], tz)
        except ValueError as e:
            error("starts_at", str(e))
    status = values["status"].lower()
    if status and status not in STATUSES:
        # Skipped rather than guessed: a wrong guess pauses or resumes someone's follow-up.
        error("status", f"{values['status']!r} is not booked, cancelled, dna or attended")
    if errors:
        return None, errors
    return AppointmentRow(line, values["appointment_id"], values["pms_id"], starts_at,
                          status), []
