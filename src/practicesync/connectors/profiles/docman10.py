"""Docman 10 (UK): the practice list export that Patient Sync reads every night.

Docman publishes no schema for its demographics export (see docs/adr/0003), so this
profile reads the columns of the export as practices see it: UK dates (DD/MM/YYYY),
"Male"/"Female", and registration status in the clinical system's words.
"""

import datetime as dt

from . import Profile

COLUMNS = {
    "Local Patient ID": "pms_id",
    "NHS Number": "nhs_number",
    "Title": "title",
    "Forename": "given_name",
    "Surname": "family_name",
    "Date of Birth": "date_of_birth",
    "Gender": "sex",
    "Mobile Number": "mobile_phone",
    "Home Telephone": "home_phone",
    "Email Address": "email",
    "Address Line 1": "address_line1",
    "Address Line 2": "address_line2",
    "Town": "locality",
    "Postcode": "postcode",
    "Registration Status": "registration_status",
    "Date of Death": "date_of_death",
}
STATUSES = {"registered": "active", "deregistered": "left", "deceased": "deceased",
            "": ""}


def uk_date(text: str) -> str:
    """DD/MM/YYYY to ISO; anything else is passed on for the row check to report."""
    text = text.strip()
    try:
        return dt.datetime.strptime(text, "%d/%m/%Y").date().isoformat()
    except ValueError:
        return text


def map_list_row(row: dict[str, str]) -> dict[str, str]:
    out = {canonical: (row.get(column) or "").strip() for column, canonical in COLUMNS.items()}
    out["date_of_birth"] = uk_date(out["date_of_birth"])
    out["date_of_death"] = uk_date(out["date_of_death"])
    status = out["registration_status"].lower()
    out["registration_status"] = STATUSES.get(status, status)
    return out


PROFILE = Profile(
    name="docman10",
    label="Docman 10",
    country="GB",
    list_export_columns=tuple(COLUMNS),
    map_list_row=map_list_row,
)
