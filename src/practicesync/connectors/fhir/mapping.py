"""FHIR R4 Patient, DiagnosticReport and Appointment (validated models) to the canonical rows
the sync rules already read. Pure. docs/adr/0009-fhir-import.md says why each choice was made.

Patient identifiers, by `system` (the values are passed on as written; the row check
validates check digits and placeholders and reports the field):
- NHS number (GB practices): https://fhir.nhs.uk/Id/nhs-number
- IHI (AU): http://ns.electronichealth.net.au/id/hi/ihi/1.0
- Medicare number (AU): http://ns.electronichealth.net.au/id/medicare-number; AU Base puts
  the 10-digit card number and the IRN in one 11-digit value, which the row check accepts.
- PMS id: the first identifier of type PI (patient internal identifier), else MR (medical
  record number) (HL7 table v2-0203, as PID-3 in HL7 v2), else the resource's own id: the
  id a PMS's FHIR server gives its patients. Identifiers with use "old" are not taken. A
  practice that names its PMS's identifier system (`Practice.pms_id_system`, passed in as
  `pms_id_system`) takes the first identifier of that system (`urn:oid:` optional), and only
  that: neither type nor resource id is then guessed from.
"""

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from practicesync.connectors.hl7v2.mapping import (
    APPOINTMENT_ID_MAX,
    MAX_LENGTHS,
    PMS_ID_MAX,
    RESULT_ID_MAX,
    TEST_NAME_MAX,
    is_mobile_number,
)

from .reader import FhirError, Item

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
IHI_SYSTEM = "http://ns.electronichealth.net.au/id/hi/ihi/1.0"
MEDICARE_SYSTEM = "http://ns.electronichealth.net.au/id/medicare-number"
PMS_ID_TYPES = ("PI", "MR")
# Base FHIR has no element for the doctor's action on a result. A PMS (or an integration in
# front of it) that knows it puts it in this extension on the DiagnosticReport, with
# sub-extensions "action" (valueString, the PMS's own wording), "actionedOn" (valueDate) and
# "comment" (valueString). Without it a result arrives unactioned.
ACTION_EXTENSION = "urn:practicesync:fhir:doctor-action"
NOT_RESULTS = ("cancelled", "entered-in-error")

SEXES = {"male": "M", "female": "F", "other": "X", "unknown": "U"}
PATIENT_FIELDS = {
    "pms_id": "Patient.identifier", "nhs_number": "Patient.identifier",
    "medicare_number": "Patient.identifier", "ihi": "Patient.identifier",
    "title": "Patient.name.prefix", "given_name": "Patient.name.given",
    "family_name": "Patient.name.family", "date_of_birth": "Patient.birthDate",
    "sex": "Patient.gender", "mobile_phone": "Patient.telecom", "home_phone": "Patient.telecom",
    "email": "Patient.telecom", "address_line1": "Patient.address.line",
    "address_line2": "Patient.address.line", "locality": "Patient.address.city",
    "postcode": "Patient.address.postalCode", "registration_status": "Patient.deceased[x]",
    "date_of_death": "Patient.deceasedDateTime",
}
RESULT_FIELDS = {"result_id": "DiagnosticReport.identifier", "pms_id": "DiagnosticReport.subject",
                 "test_name": "DiagnosticReport.code", "performed_on": "DiagnosticReport.effective[x]",
                 "reported_on": "DiagnosticReport.issued",
                 "actioned_on": f"DiagnosticReport.extension({ACTION_EXTENSION})",
                 "action": f"DiagnosticReport.extension({ACTION_EXTENSION})",
                 "comment": f"DiagnosticReport.extension({ACTION_EXTENSION})"}
APPOINTMENT_FIELDS = {"appointment_id": "Appointment.identifier",
                      "pms_id": "Appointment.participant.actor", "starts_at": "Appointment.start",
                      "status": "Appointment.status"}
# Appointment.status -> appointment status. entered-in-error: there never was an appointment,
# so it books nothing. waitlist is not an appointment yet: refused.
APPOINTMENT_STATUSES = {"booked": "booked", "pending": "booked", "proposed": "booked",
                        "cancelled": "cancelled", "entered-in-error": "cancelled",
                        "noshow": "dna", "fulfilled": "attended", "arrived": "attended",
                        "checked-in": "attended"}


@dataclass
class Mapped:
    row: dict[str, str] | None = None
    error: FhirError | None = None
    fields: dict[str, str] = field(default_factory=dict)


def _codes(concept) -> set[str]:
    return {c.code for c in (concept.coding or []) if c.code} if concept else set()


def _current(things) -> list:
    return [t for t in (things or []) if getattr(t, "use", None) != "old"]


# --- Patient ---------------------------------------------------------------------------------

def _system(text: str) -> str:
    return text.strip().removeprefix("urn:oid:")


def pms_id_of(patient, pms_id_system: str = "") -> str:
    identifiers = [i for i in _current(patient.identifier) if i.value]
    if pms_id_system.strip():
        wanted = _system(pms_id_system)
        return next((i.value.strip() for i in identifiers if _system(i.system or "") == wanted),
                    "")
    for wanted in PMS_ID_TYPES:
        for identifier in identifiers:
            if wanted in _codes(identifier.type):
                return identifier.value.strip()
    return patient.id or ""


def national_ids(patient, country: str) -> dict[str, str]:
    wanted = {"GB": {NHS_SYSTEM: "nhs_number"},
              "AU": {IHI_SYSTEM: "ihi", MEDICARE_SYSTEM: "medicare_number"}}.get(country, {})
    found: dict[str, str] = {}
    for identifier in _current(patient.identifier):
        column = wanted.get(identifier.system or "")
        if column and identifier.value:
            found.setdefault(column, identifier.value.replace(" ", ""))
    return found


def _name(patient):
    names = [n for n in _current(patient.name) if n.family and n.given and n.use != "maiden"]
    return next((n for use in ("official", "usual") for n in names if n.use == use),
                names[0] if names else None)


def _contacts(row: dict, patient, country: str) -> None:
    """Phones with use mobile (or system sms) are the mobile; use home, or no use, the home
    phone unless the numbering plan says it is a mobile; work, temp and old ones are not
    taken. The first email that is not old. Lower `rank` first."""
    points = sorted(_current(patient.telecom), key=lambda c: c.rank or 10**6)
    for point in points:
        value = (point.value or "").strip()
        if not value or point.use in ("work", "temp"):
            continue
        if point.system == "email":
            row["email"] = row["email"] or value
        elif point.system in ("phone", "sms"):
            mobile = point.system == "sms" or point.use == "mobile" or is_mobile_number(
                value, country)
            column = "mobile_phone" if mobile else "home_phone"
            row[column] = row[column] or value


def map_patient(item: Item, *, country: str, pms_id_system: str = "") -> Mapped:
    patient = item.resource
    pms_id = pms_id_of(patient, pms_id_system)

    def reject(where: str, reason: str, code: str) -> Mapped:
        return Mapped(error=FhirError(item.number, item.ref, where, reason, code, pms_id or None))

    if not pms_id and pms_id_system.strip():
        return reject("Patient.identifier", f"no PMS patient id: no identifier of system "
                                            f"{pms_id_system.strip()}", "no_pms_id")
    if not pms_id:
        return reject("Patient.identifier", "no PMS patient id: no identifier of type PI or MR "
                                            "and no resource id", "no_pms_id")
    if len(pms_id) > PMS_ID_MAX:
        return reject("Patient.identifier", f"the PMS patient id is longer than {PMS_ID_MAX} "
                                            f"characters", "bad_pms_id")
    name = _name(patient)
    if name is None:
        return reject("Patient.name", "Patient.name needs a family name and a given name",
                      "no_name")
    birth = patient.birthDate
    if birth is None:
        return reject("Patient.birthDate", "Patient.birthDate is missing", "no_birth_date")
    if not isinstance(birth, dt.date):
        return reject("Patient.birthDate", f"Patient.birthDate {birth!r} is not precise to a day",
                      "bad_birth_date")
    row = dict.fromkeys(PATIENT_FIELDS, "")
    row.update(pms_id=pms_id, **national_ids(patient, country))
    row.update(family_name=name.family.strip(), given_name=name.given[0].strip(),
               title=(name.prefix or [""])[0].strip(), date_of_birth=birth.isoformat())
    row["sex"] = SEXES.get(patient.gender or "", patient.gender or "")
    addresses = [a for a in _current(patient.address) if a.use != "billing"]
    address = next((a for a in addresses if a.use == "home"), addresses[0] if addresses else None)
    if address is not None:
        lines = [line.strip() for line in (address.line or []) if line and line.strip()]
        row.update(address_line1=lines[0] if lines else "", address_line2=", ".join(lines[1:]),
                   locality=(address.city or "").strip(),
                   postcode=(address.postalCode or "").strip())
    died = patient.deceasedDateTime
    if died is not None:
        # A partial date ("2020") is passed on as written: the row check reports it and, as
        # with any date of death, treats the patient as deceased.
        row["date_of_death"] = died.date().isoformat() if isinstance(died, dt.datetime) else (
            died.isoformat() if isinstance(died, dt.date) else str(died))
    if patient.deceasedBoolean:
        row["registration_status"] = "deceased"
    _contacts(row, patient, country)
    for column, limit in MAX_LENGTHS.items():
        if len(row[column]) > limit:
            return reject(PATIENT_FIELDS[column], f"{PATIENT_FIELDS[column]} ({column.replace('_', ' ')}) "
                                                  f"is longer than {limit} characters", "too_long")
    return Mapped(row)


# --- DiagnosticReport ------------------------------------------------------------------------

def reference_key(reference: str | None) -> str:
    """"Patient/p1" for "Patient/p1", "https://x/fhir/Patient/p1/_history/2"; else as is
    ("urn:uuid:...", "#contained")."""
    ref = (reference or "").strip()
    if "/_history/" in ref:
        ref = ref.split("/_history/")[0]
    parts = ref.split("/")
    if len(parts) >= 2 and not ref.startswith(("urn:", "#")):
        return "/".join(parts[-2:])
    return ref


def result_id_of(report) -> str:
    """The report's identifier (the filler's, type FILL, first), namespaced by its system
    (without the scheme); else "DiagnosticReport/<id>", unique on the server that sent it."""
    identifiers = [i for i in _current(report.identifier) if i.value]
    chosen = next((i for i in identifiers if "FILL" in _codes(i.type)),
                  identifiers[0] if identifiers else None)
    if chosen is None:
        return f"DiagnosticReport/{report.id}" if report.id else ""
    system = (chosen.system or "").split("://", 1)[-1]
    result_id = f"{system}|{chosen.value.strip()}" if system else chosen.value.strip()
    if len(result_id) > RESULT_ID_MAX and system:
        result_id = f"{hashlib.sha1(system.encode()).hexdigest()[:12]}|{chosen.value.strip()}"
    return result_id


def _when(value) -> str | None:
    """An effective date-time as the canonical performed_on: a day, or a date-time with its
    offset kept. None when it is not precise to a day."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return None


def _effective(resource):
    if resource.effectiveDateTime is not None:
        return resource.effectiveDateTime
    if getattr(resource, "effectivePeriod", None) is not None:
        return resource.effectivePeriod.start
    return getattr(resource, "effectiveInstant", None)


def _action(report) -> dict[str, str]:
    found = next((e for e in report.extension or [] if e.url == ACTION_EXTENSION), None)
    if found is None:
        return {}
    parts = {e.url: e for e in found.extension or []}
    out = {}
    if "action" in parts:
        out["action"] = (parts["action"].valueString or "").strip()
    if "comment" in parts:
        out["comment"] = parts["comment"].valueString or ""
    if "actionedOn" in parts:
        when = parts["actionedOn"].valueDate or parts["actionedOn"].valueDateTime
        out["actioned_on"] = _when(when)[:10] if _when(when) else str(when or "")
    return out


def _patient_pms_id(reference, patients: dict[str, str], pms_id_system: str = "") -> str:
    """The PMS id of a Reference to a Patient: the Patient of the source it points at (by
    fullUrl or Patient/id), else the id of the Patient it names (a PMS server's patients have
    the PMS id as their id when they have no PI/MR), else its logical identifier. A practice
    that names its PMS's identifier system gets only that: no guessing from ids."""
    key = reference_key(reference.reference)
    pms_id = patients.get(reference.reference or "") or patients.get(key)
    if pms_id or pms_id_system.strip():
        identifier = reference.identifier
        if not pms_id and identifier is not None and identifier.value and \
                _system(identifier.system or "") == _system(pms_id_system):
            pms_id = identifier.value.strip()
        return pms_id or ""
    if key.startswith("Patient/"):
        pms_id = key.split("/", 1)[1]
    if not pms_id and reference.identifier is not None and reference.identifier.value:
        pms_id = reference.identifier.value.strip()
    return pms_id or ""


def map_report(item: Item, *, patients: dict[str, str], observations: dict[str, object],
               pms_id_system: str = "") -> Mapped:
    """`patients`: reference key (and Bundle fullUrl) of each Patient in the source -> its PMS
    id; `observations`: the same for Observations (contained ones are looked up in the
    report)."""
    report = item.resource

    def reject(where: str, reason: str, code: str, pms_id: str | None = None) -> Mapped:
        return Mapped(error=FhirError(item.number, item.ref, where, reason, code, pms_id))

    subject = report.subject
    if subject is None:
        return reject("DiagnosticReport.subject", "no subject: whose result is it?", "no_subject")
    pms_id = _patient_pms_id(subject, patients, pms_id_system)
    if not pms_id:
        return reject("DiagnosticReport.subject", f"the subject {subject.reference or subject.display!r} "
                                                  f"is not a Patient in this source", "no_patient")
    if len(pms_id) > PMS_ID_MAX:
        return reject("DiagnosticReport.subject", f"the PMS patient id is longer than "
                                                  f"{PMS_ID_MAX} characters", "bad_pms_id")
    if report.status in NOT_RESULTS:
        return reject("DiagnosticReport.status", f"status {report.status}: there is no result "
                                                 f"to import", "cancelled", pms_id)
    result_id = result_id_of(report)
    if not result_id:
        return reject("DiagnosticReport.identifier", "no identifier and no id: the result cannot "
                                                     "be told apart or updated later",
                      "no_identifier", pms_id)
    if len(result_id) > RESULT_ID_MAX:
        return reject("DiagnosticReport.identifier", f"the result id {result_id[:40]}... is longer "
                                                     f"than {RESULT_ID_MAX} characters",
                      "bad_result_id", pms_id)
    code = report.code
    codings = code.coding or [] if code else []
    test_name = (code.text if code else "") or next(
        (c.display for c in codings if c.display), "") or next(
        (c.code for c in codings if c.code), "")
    # effective[x] of the report, else that of its first Observation (contained or in the
    # source) that has one: the collection time, like OBR-7.
    effective, where = _effective(report), "DiagnosticReport.effective[x]"
    if effective is None:
        contained = {f"#{c.id}": c for c in report.contained or [] if c.id}
        times = []
        for ref in report.result or []:
            obs = contained.get(ref.reference or "") or observations.get(
                ref.reference or "") or observations.get(reference_key(ref.reference))
            if obs is not None and obs.get_resource_type() == "Observation":
                when = _when(_effective(obs))
                if when:
                    times.append(when)
        if times:
            effective, where = times[0], "Observation.effective[x]"
    if effective is None:
        return reject("DiagnosticReport.effective[x]", "no effective date-time on the report or "
                                                       "its observations", "no_effective", pms_id)
    performed = effective if isinstance(effective, str) and where.startswith("Obs") else _when(effective)
    if performed is None:
        return reject(where, f"{where} {effective!r} is not precise to a day", "bad_date", pms_id)
    reported = _when(report.issued)
    row = {"result_id": result_id, "pms_id": pms_id, "test_name": test_name[:TEST_NAME_MAX],
           "performed_on": performed, "reported_on": reported[:10] if reported else "",
           "actioned_on": "", "action": "", "comment": "", "filed_under": "", "tab": "",
           "location": "", "notified": ""}
    row.update(_action(report))
    return Mapped(row)


# --- Appointment -----------------------------------------------------------------------------

def _patient_actor(appointment, patients: dict[str, str]):
    """The Reference of the appointment's patient: the first participant whose actor is a
    Patient of the source, or a reference to a Patient, or typed Patient."""
    for participant in appointment.participant or []:
        actor = participant.actor
        if actor is None:
            continue
        if (actor.type == "Patient" or reference_key(actor.reference).startswith("Patient/")
                or (actor.reference or "") in patients):
            return actor
    return None


def appointment_id_of(appointment) -> str:
    """The appointment's first current identifier, namespaced by its system (without the
    scheme) as results' ids are; else "Appointment/<id>", unique on the server that sent it."""
    chosen = next((i for i in _current(appointment.identifier) if i.value), None)
    if chosen is None:
        return f"Appointment/{appointment.id}" if appointment.id else ""
    system = (chosen.system or "").split("://", 1)[-1]
    value = chosen.value.strip()
    found = f"{system}|{value}" if system else value
    if len(found) > APPOINTMENT_ID_MAX and system:
        found = f"{hashlib.sha1(system.encode()).hexdigest()[:12]}|{value}"
    return found


def map_appointment(item: Item, *, patients: dict[str, str], pms_id_system: str = "") -> Mapped:
    """One Appointment as a canonical appointments row. `patients` as for map_report: a
    `urn:uuid` actor is only found through it; a `Patient/x` one also without it."""
    appointment = item.resource

    def reject(where: str, reason: str, code: str, pms_id: str | None = None) -> Mapped:
        return Mapped(error=FhirError(item.number, item.ref, where, reason, code, pms_id))

    actor = _patient_actor(appointment, patients)
    pms_id = _patient_pms_id(actor, patients, pms_id_system) if actor is not None else ""
    if not pms_id:
        return reject("Appointment.participant.actor", "no participant is a Patient of this "
                                                       "source: whose appointment is it?",
                      "no_patient")
    if len(pms_id) > PMS_ID_MAX:
        return reject("Appointment.participant.actor", f"the PMS patient id is longer than "
                                                       f"{PMS_ID_MAX} characters", "bad_pms_id")
    status = APPOINTMENT_STATUSES.get(appointment.status or "")
    if status is None:
        return reject("Appointment.status", f"status {appointment.status!r} is not an "
                                            f"appointment of the patient (only "
                                            f"{', '.join(APPOINTMENT_STATUSES)})",
                      "bad_status", pms_id)
    appointment_id = appointment_id_of(appointment)
    if not appointment_id:
        return reject("Appointment.identifier", "no identifier and no id: the appointment "
                                                "cannot be updated or cancelled later",
                      "no_identifier", pms_id)
    if len(appointment_id) > APPOINTMENT_ID_MAX:
        return reject("Appointment.identifier", f"the appointment id {appointment_id[:40]}... "
                                                f"is longer than {APPOINTMENT_ID_MAX} characters",
                      "bad_identifier", pms_id)
    start = appointment.start
    if not isinstance(start, dt.datetime):
        return reject("Appointment.start", "Appointment.start is missing: when is it?",
                      "no_start", pms_id)
    return Mapped({"appointment_id": appointment_id, "pms_id": pms_id,
                   "starts_at": start.isoformat(), "status": status})
