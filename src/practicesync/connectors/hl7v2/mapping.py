"""HL7 v2 messages to the canonical rows the sync rules already read. Pure.

- ADT^A04/A08/A28/A31: the PID as one canonical patient-list row (DESIGN.md section 5), with
  the HL7 field each value came from, so row errors can name "PID-7" instead of a CSV column.
- ADT^A40: each PID/MRG pair as a `Merge` (surviving and prior PMS ids); never applied by
  itself, the import turns it into a review item.
- ORU^R01: one canonical actioned-results row per OBR.
- SIU^S12/S13/S14/S15/S26: the SCH as one canonical appointments row (see `map_siu`).

Identifiers in PID-3 (and MRG-1), by identifier type (HL7 table 0203) and assigning authority:
- PMS id: the first repetition whose type is one of the profile's `PMS_ID_TYPES` (PI, the
  patient internal identifier, before MR, the medical record number); when PID-3 holds a single
  repetition with no type code, that one. Anything else typed (MRN, AN, SS, ...) is not ours.
  A practice that names its PMS's identifier system (`Practice.pms_id_system`, passed in as
  `pms_id_system`) takes the first repetition whose assigning authority (PID-3.4, namespace id
  or universal id, `urn:oid:` optional) is that system, and nothing else.
- UK (GB practices): NHS number, type NH or assigning authority NHS (or its OID).
- AU practices: Medicare number, type MC (assigning authority AUSHIC; 10 digits, or 11 with the
  IRN); IHI, type NI with authority AUSHIC or a value starting 800360 (type NI alone also names
  other national ids, e.g. a US lab's NI organisation id in the corpus).
Identifier values are passed on as written: the row check validates them (check digits,
placeholders) and reports the field.
"""

import datetime as dt
from dataclasses import dataclass, field

import phonenumbers

from .parse import Message, MessageError, Repetition, Segment, parse_ts

PATIENT_TRIGGERS = ("A04", "A08", "A28", "A31")
MERGE_TRIGGERS = ("A40",)
# SIU trigger -> the appointment status it says; None: SCH-25 (filler status) says, else
# booked. S13 (rescheduled) is a modification like S14.
SIU_TRIGGERS = {"S12": "booked", "S13": None, "S14": None, "S15": "cancelled", "S26": "dna"}
# SCH-25 filler status codes (HL7 table 0278) -> appointment status. Pending and Overbook are
# still bookings; Started means the patient is being seen; Deleted and Dc(discontinued) mean
# no appointment. Waitlist and Blocked are not appointments of a patient: refused.
SCH_STATUSES = {"booked": "booked", "pending": "booked", "overbook": "booked",
                "cancelled": "cancelled", "deleted": "cancelled", "dc": "cancelled",
                "noshow": "dna", "complete": "attended", "started": "attended"}
APPOINTMENT_ID_MAX = 100

# PID-3 identifier types that carry the PMS's own patient id, most trusted first. No PMS here
# documents its HL7 export, so all use the HL7 meaning of the codes; a PMS that differs gets its
# own entry.
PMS_ID_TYPES = {"bestpractice": ("PI", "MR"), "medicaldirector": ("PI", "MR"),
                "docman10": ("PI", "MR")}
DEFAULT_PMS_ID_TYPES = ("PI", "MR")
NHS_AUTHORITIES = {"NHS", "2.16.840.1.113883.2.1.4.1"}
PMS_ID_MAX, RESULT_ID_MAX, TEST_NAME_MAX = 64, 100, 200

# HL7 table 0001 to the canonical sex codes (M, F, X, U).
SEXES = {"M": "M", "F": "F", "O": "X", "A": "X", "X": "X", "U": "U", "N": "U"}

# Where each canonical column comes from, for errors the row checks report by column.
PATIENT_FIELDS = {
    "pms_id": "PID-3", "nhs_number": "PID-3", "medicare_number": "PID-3", "ihi": "PID-3",
    "title": "PID-5", "given_name": "PID-5", "family_name": "PID-5", "date_of_birth": "PID-7",
    "sex": "PID-8", "mobile_phone": "PID-13", "home_phone": "PID-13", "email": "PID-13",
    "address_line1": "PID-11", "address_line2": "PID-11", "locality": "PID-11",
    "postcode": "PID-11", "registration_status": "PID-30", "date_of_death": "PID-29",
}
# The longest value each column is stored with (patients.models.Patient): a longer one is a
# broken message, refused whole rather than cut or left to fail the whole run in the database.
MAX_LENGTHS = {"title": 30, "given_name": 100, "family_name": 100, "address_line1": 200,
               "address_line2": 200, "locality": 100, "postcode": 12, "email": 254}
APPOINTMENT_FIELDS = {"appointment_id": "SCH-2", "pms_id": "PID-3", "starts_at": "SCH-11",
                      "status": "SCH-25"}
RESULT_FIELDS = {"result_id": "OBR-3", "pms_id": "PID-3", "test_name": "OBR-4",
                 "performed_on": "OBR-7", "reported_on": "OBR-22"}


@dataclass
class PatientRow:
    """One ADT message's patient as a canonical list row."""

    row: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)   # column -> HL7 field, where not usual


@dataclass(frozen=True)
class Merge:
    """ADT^A40: the PMS merged `prior_pms_id` into `pms_id`."""

    pms_id: str
    prior_pms_id: str
    message_type: str


@dataclass
class Mapped:
    patients: list[PatientRow] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    results: list[dict[str, str]] = field(default_factory=list)
    appointments: list[dict[str, str]] = field(default_factory=list)
    errors: list[MessageError] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.patients) + len(self.merges) + len(self.results) + len(self.appointments)


def map_message(message: Message, *, pms: str, country: str, pms_id_system: str = "") -> Mapped:
    """Whatever the message carries for patients or results; anything else is an error."""
    if message.message_code == "ADT":
        return map_adt(message, pms=pms, country=country, pms_id_system=pms_id_system)
    if message.message_type == "ORU^R01":
        return map_oru(message, pms=pms, pms_id_system=pms_id_system)
    return Mapped(errors=[unsupported(message, "ADT^A04/A08/A28/A31/A40 or ORU^R01")])


def unsupported(message: Message, wanted: str) -> MessageError:
    return message.error("MSH", "MSH-9", f"{message.message_type or 'no type'} is not handled "
                                         f"here (only {wanted})", "unsupported_type")


# --- identifiers -----------------------------------------------------------------------------

def _type(rep: Repetition) -> str:
    return rep.component(5).upper()


def _authorities(rep: Repetition) -> set[str]:
    return {rep.component(4, 1).upper(), rep.component(4, 2).upper()} - {""}


def _system(text: str) -> str:
    text = text.strip().upper()
    return text.removeprefix("URN:OID:")


def pms_id_wanted(pms: str, pms_id_system: str = "") -> str:
    """What `pms_id_of` looks for, for error messages."""
    if pms_id_system.strip():
        return f"assigning authority {pms_id_system.strip()}"
    return f"identifier type {'/'.join(PMS_ID_TYPES.get(pms, DEFAULT_PMS_ID_TYPES))}"


def pms_id_problem(pms_id: str, pms: str, pms_id_system: str = "") -> tuple[str, str] | None:
    """(reason, code) when PID-3 gave no usable PMS patient id; None when it did."""
    if not pms_id:
        return f"PID-3 holds no PMS patient id ({pms_id_wanted(pms, pms_id_system)})", "no_pms_id"
    if len(pms_id) > PMS_ID_MAX:
        return f"the PMS patient id is longer than {PMS_ID_MAX} characters", "bad_pms_id"
    return None


def pms_id_of(reps: list[Repetition], pms: str, pms_id_system: str = "") -> str:
    reps = [r for r in reps if r.component(1)]
    if pms_id_system.strip():
        # The practice says which system is its record number: no guessing by type, since a
        # lab's own MR would then pass for the PMS's id.
        wanted = _system(pms_id_system)
        return next((r.component(1) for r in reps
                     if wanted in {_system(a) for a in _authorities(r)}), "")
    for wanted in PMS_ID_TYPES.get(pms, DEFAULT_PMS_ID_TYPES):
        for rep in reps:
            if _type(rep) == wanted:
                return rep.component(1)
    if len(reps) == 1 and not _type(reps[0]):
        return reps[0].component(1)
    return ""


def _national_ids(reps: list[Repetition], country: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for rep in reps:
        value, kind, authorities = rep.component(1), _type(rep), _authorities(rep)
        if not value:
            continue
        if country == "GB":
            if kind == "NH" or authorities & NHS_AUTHORITIES:
                found.setdefault("nhs_number", value)
        elif country == "AU":
            if kind == "MC":
                found.setdefault("medicare_number", value)
            elif kind == "NI" and ("AUSHIC" in authorities or value.startswith("800360")):
                found.setdefault("ihi", value)
    return found


# --- ADT -------------------------------------------------------------------------------------

def map_adt(message: Message, *, pms: str, country: str, pms_id_system: str = "") -> Mapped:
    trigger = message.trigger or (message.first("EVN").get(1).upper() if message.first("EVN")
                                  else "")
    if trigger in MERGE_TRIGGERS:
        return _map_merge(message, pms, pms_id_system)
    if trigger not in PATIENT_TRIGGERS:
        return Mapped(errors=[unsupported(message, "ADT^A04/A08/A28/A31/A40 for patients")])
    pid = message.first("PID")
    if pid is None:
        return Mapped(errors=[message.error("PID", "", "no PID segment", "no_pid")])
    patient, errors = map_pid(message, pid, pms=pms, country=country,
                              pms_id_system=pms_id_system)
    return Mapped(patients=[patient] if patient else [], errors=errors)


def _map_merge(message: Message, pms: str, pms_id_system: str) -> Mapped:
    mapped = Mapped()
    current: Segment | None = None
    for seg in message.segments:
        if seg.id == "PID":
            current = seg
        elif seg.id == "MRG":
            if current is None:
                mapped.errors.append(message.error("MRG", "", f"MRG (segment {seg.position}) "
                                                   f"has no PID before it", "no_pid"))
                continue
            survivor = pms_id_of(current.repetitions(3), pms, pms_id_system)
            prior = pms_id_of(seg.repetitions(1), pms, pms_id_system)
            if not survivor or not prior:
                where = "PID-3" if not survivor else "MRG-1"
                mapped.errors.append(message.error(
                    where[:3], where, f"{where} holds no PMS patient id "
                    f"({pms_id_wanted(pms, pms_id_system)})", "no_pms_id",
                    survivor or None))
                continue
            mapped.merges.append(Merge(survivor, prior, message.message_type))
            current = None
    if not mapped.merges and not mapped.errors:
        mapped.errors.append(message.error("MRG", "", "ADT^A40 with no PID/MRG pair", "no_mrg"))
    return mapped


def map_pid(message: Message, pid: Segment, *, pms: str, country: str, pms_id_system: str = ""
            ) -> tuple[PatientRow | None, list[MessageError]]:
    ids = pid.repetitions(3)
    pms_id = pms_id_of(ids, pms, pms_id_system)

    def reject(field_name: str, reason: str, code: str):
        return None, [message.error("PID", field_name, reason, code, pms_id or None)]

    if problem := pms_id_problem(pms_id, pms, pms_id_system):
        return reject("PID-3", *problem)
    # The legal name (type L) when it is complete, else the first complete one.
    names = [r for r in pid.repetitions(5) if r.component(1, 1) and r.component(2)]
    name = _pick(names, 7, "L")
    if name is None:
        return reject("PID-5", "PID-5 (patient name) needs a family name and a given name",
                      "no_name")
    raw_dob = pid.get(7)
    if not raw_dob:
        return reject("PID-7", "PID-7 (date of birth) is missing", "bad_dob")
    try:
        dob = parse_ts(raw_dob)
    except ValueError as e:
        return reject("PID-7", f"PID-7 (date of birth) {e}", "bad_dob")

    row = dict.fromkeys(PATIENT_FIELDS, "")
    fields: dict[str, str] = {}
    row.update(pms_id=pms_id, **_national_ids(ids, country))
    row.update(family_name=name.component(1, 1), given_name=name.component(2),
               title=name.component(5))
    row["date_of_birth"] = dob.isoformat()[:10]
    sex = pid.get(8).upper()
    row["sex"] = SEXES.get(sex, sex)
    address = _pick(pid.repetitions(11), 7, "H")
    if address is not None:
        row.update(address_line1=address.component(1, 1), address_line2=address.component(2),
                   locality=address.component(3), postcode=address.component(5))
    _contacts(row, fields, pid, country)
    death = pid.get(29)
    if death:
        try:
            row["date_of_death"] = parse_ts(death).isoformat()[:10]
        except ValueError:
            # Passed on as written: the row check reports it and, as with any date of death,
            # treats the patient as deceased, so no message goes out while it is unclear.
            row["date_of_death"] = death
    indicator = pid.get(30).upper()
    row["registration_status"] = {"Y": "deceased", "N": "", "": ""}.get(indicator, indicator)
    for column, limit in MAX_LENGTHS.items():
        if len(row[column]) > limit:
            where = fields.get(column, PATIENT_FIELDS[column])
            return reject(where, f"{where} ({column.replace('_', ' ')}) is longer than {limit} "
                                 f"characters", "too_long")
    return PatientRow(row, fields), []


def _pick(reps: list[Repetition], type_component: int, wanted: str) -> Repetition | None:
    reps = [r for r in reps if r]
    return next((r for r in reps if r.component(type_component).upper() == wanted),
                reps[0] if reps else None)


def _number(rep: Repetition) -> str:
    if text := rep.component(1):
        return text
    local = rep.component(6) + rep.component(7)
    if local and rep.component(5):
        return f"+{rep.component(5).lstrip('+')}{local}"
    return local


def is_mobile_number(text: str, country: str) -> bool:
    """A number as a feed writes it (any format) is a mobile in `country`'s numbering plan."""
    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE


def _contacts(row: dict, fields: dict, pid: Segment, country: str) -> None:
    """PID-13 (home) and PID-14 (business) XTN repetitions: equipment type CP is a mobile,
    use NET / type Internet an email; a PH or untyped number is a mobile when the numbering
    plan says so (AU 04..., UK 07...), else the home phone. From PID-14 only a CP mobile is
    taken, and only when PID-13 has none."""
    for number in (13, 14):
        for rep in pid.repetitions(number):
            use, equipment = rep.component(2).upper(), rep.component(3).upper()
            email = rep.component(4) or (rep.component(1) if "@" in rep.component(1) else "")
            if use == "NET" or equipment in ("INTERNET", "X.400"):
                if email and not row["email"]:
                    row["email"], fields["email"] = email, pid.name(number)
                continue
            text = _number(rep)
            if not text or equipment in ("FX", "BP", "MD", "TDD", "TTY"):
                continue
            mobile = equipment == "CP" or (equipment in ("PH", "") and number == 13
                                           and is_mobile_number(text, country))
            if mobile and not row["mobile_phone"]:
                row["mobile_phone"], fields["mobile_phone"] = text, pid.name(number)
            elif not mobile and number == 13 and not row["home_phone"]:
                row["home_phone"], fields["home_phone"] = text, pid.name(number)


# --- ORU -------------------------------------------------------------------------------------

def facility_of(message: Message) -> str:
    """The sending lab, to namespace its order numbers: MSH-4 (namespace, else universal id),
    else MSH-3 when a sender leaves the facility out."""
    msh = message.msh
    return msh.get(4, 1) or msh.get(4, 2) or msh.get(3, 1) or msh.get(3, 2)


def map_oru(message: Message, *, pms: str, pms_id_system: str = "") -> Mapped:
    """One canonical result per OBR. The result id is the filler order number (OBR-3, with its
    namespace) prefixed by the sending facility, and suffixed by the test code (OBR-4.1),
    because labs often send several tests of one accession, each its own OBR, under one
    filler order number (every multi-OBR AU and US lab message in the corpus does)."""
    mapped = Mapped()
    facility = facility_of(message)
    if not facility:
        mapped.errors.append(message.error("MSH", "MSH-4", "MSH-4 (sending facility) and MSH-3 "
                                           "are empty: result ids could collide between labs",
                                           "no_facility"))
        return mapped
    groups, pid = [], None
    for seg in message.segments:
        if seg.id == "PID":
            pid = seg
        elif seg.id == "OBR":
            groups.append((pid, seg, []))
        elif groups and seg.id not in ("PID", "PV1", "PD1", "NK1"):
            groups[-1][2].append(seg)
    if not groups:
        mapped.errors.append(message.error("OBR", "", "no OBR segment: nothing was reported",
                                           "no_obr"))
        return mapped
    seen: dict[str, int] = {}
    for number, (pid, obr, rest) in enumerate(groups, 1):
        row, error = _map_obr(message, number, pid, obr, rest, facility, pms, pms_id_system)
        if error is None and row["result_id"] in seen:
            error = message.error("OBR", "OBR-3", f"OBR {number}: same filler order number and "
                                  f"test (OBR-3, OBR-4) as OBR {seen[row['result_id']]} of this "
                                  f"message; only the first was used", "duplicate_result",
                                  row["pms_id"])
        if error is not None:
            mapped.errors.append(error)
            continue
        seen[row["result_id"]] = number
        mapped.results.append(row)
    return mapped


def _map_obr(message: Message, number: int, pid: Segment | None, obr: Segment,
             rest: list[Segment], facility: str, pms: str, pms_id_system: str = ""):
    def error(field_name: str, reason: str, code: str, pms_id: str | None = None):
        seg = field_name.split("-")[0] if field_name else "OBR"
        return None, message.error(seg, field_name, f"OBR {number}: {reason}", code, pms_id)

    if pid is None:
        return error("", "no PID segment before it: whose result is it?", "no_pid")
    pms_id = pms_id_of(pid.repetitions(3), pms, pms_id_system)
    if problem := pms_id_problem(pms_id, pms, pms_id_system):
        return error("PID-3", *problem)
    status = obr.get(25).upper()
    if status == "X":
        return error("OBR-25", "result status X: the lab cancelled this test, so there is no "
                               "result to import", "cancelled", pms_id)
    filler, namespace = obr.get(3, 1), obr.get(3, 2)
    if not filler:
        return error("OBR-3", "OBR-3 (filler order number) is missing: the result cannot be "
                              "told apart from others or updated later", "no_filler_order_number",
                     pms_id)
    code = obr.get(4, 1)
    if namespace == facility:
        namespace = ""  # said once is enough (and keeps the id short)
    result_id = f"{facility}:{filler}" + (f"^{namespace}" if namespace else "") + (
        f":{code}" if code else "")
    if len(result_id) > RESULT_ID_MAX:
        return error("OBR-3", f"the result id {result_id[:40]}... is longer than "
                              f"{RESULT_ID_MAX} characters", "bad_result_id", pms_id)
    collected, where = obr.get(7), "OBR-7"
    if not collected:
        # SPM-17 is the specimen collection date/time (v2.5+), the same fact as OBR-7.
        spm = next((s for s in rest if s.id == "SPM" and s.get(17)), None)
        if spm is not None:
            collected, where = spm.get(17), "SPM-17"
    if not collected:
        return error("OBR-7", "OBR-7 (collection date/time) is missing", "no_collection_date",
                     pms_id)
    try:
        performed = parse_ts(collected).isoformat()
    except ValueError as e:
        return error(where, f"{where} (collection date/time) {e}", "bad_date", pms_id)
    reported = obr.get(22)
    try:
        reported = parse_ts(reported).isoformat()[:10] if reported else ""
    except ValueError:
        pass  # passed on as written: the result row check reports OBR-22 and stores no date
    row = {"result_id": result_id, "pms_id": pms_id,
           "test_name": (obr.get(4, 2) or obr.get(4, 5) or code)[:TEST_NAME_MAX],
           "performed_on": performed, "reported_on": reported, "actioned_on": "",
           # Neither the AU pathology profile nor any message in the corpus says where a PMS
           # would put the doctor's action, so a result from HL7 arrives unactioned and is
           # stored with eligible false until the PMS actions it (DESIGN.md section 3).
           "action": "", "comment": "", "filed_under": "", "tab": "", "location": "",
           "notified": ""}
    return row, None


# --- SIU -------------------------------------------------------------------------------------

def map_siu(message: Message, *, pms: str, pms_id_system: str = "") -> Mapped:
    """The SCH of an SIU^S12/S13/S14/S15/S26 as one canonical appointments row:
    - appointment_id: SCH-2.1 (filler appointment id: the PMS's own), else SCH-1.1 (placer);
    - starts_at: SCH-11.4 (TQ start), else the first AIS-4 (v2.5+, where SCH-11 is withdrawn);
      without an offset it is practice-local time, as the CSV's;
    - status: S12 booked, S15 cancelled, S26 dna; S13/S14 the SCH-25 filler status
      (SCH_STATUSES), booked when it is empty;
    - pms_id: PID-3, as for ADT and ORU."""
    status = SIU_TRIGGERS.get(message.trigger, "")
    if status == "":
        return Mapped(errors=[unsupported(message, "SIU^S12/S13/S14/S15/S26 for appointments")])
    pid, sch = message.first("PID"), message.first("SCH")
    if sch is None:
        return Mapped(errors=[message.error("SCH", "", "no SCH segment: which appointment?",
                                            "no_sch")])
    if pid is None:
        return Mapped(errors=[message.error("PID", "", "no PID segment: whose appointment is "
                                            "it?", "no_pid")])
    pms_id = pms_id_of(pid.repetitions(3), pms, pms_id_system)

    def reject(where: str, reason: str, code: str) -> Mapped:
        return Mapped(errors=[message.error(where.split("-")[0], where, reason, code,
                                            pms_id or None)])

    if problem := pms_id_problem(pms_id, pms, pms_id_system):
        return reject("PID-3", *problem)
    appointment_id = sch.get(2) or sch.get(1)
    if not appointment_id:
        return reject("SCH-2", "SCH-2 (filler appointment id) and SCH-1 are empty: the "
                               "appointment cannot be updated or cancelled later", "no_id")
    if len(appointment_id) > APPOINTMENT_ID_MAX:
        return reject("SCH-2", f"the appointment id is longer than {APPOINTMENT_ID_MAX} "
                               f"characters", "bad_id")
    start, where = sch.get(11, 4), "SCH-11"
    if not start:
        ais = next((s for s in message.all("AIS") if s.get(4)), None)
        start, where = (ais.get(4), "AIS-4") if ais is not None else ("", "SCH-11")
    if not start:
        return reject("SCH-11", "no start time in SCH-11.4 or AIS-4", "no_start")
    try:
        starts_at = parse_ts(start)
    except ValueError as e:
        return reject(where, f"{where} (start date/time) {e}", "bad_start")
    if not isinstance(starts_at, dt.datetime):
        return reject(where, f"{where} (start date/time) {start!r} has no time of day",
                      "bad_start")
    if status is None:
        filler = sch.get(25)
        status = SCH_STATUSES.get(filler.lower(), "") if filler else "booked"
        if not status:
            return reject("SCH-25", f"SCH-25 (filler status) {filler!r} is not one of "
                                    f"{', '.join(sorted(SCH_STATUSES))}", "bad_status")
    return Mapped(appointments=[{"appointment_id": appointment_id, "pms_id": pms_id,
                                 "starts_at": starts_at.isoformat(), "status": status}])
