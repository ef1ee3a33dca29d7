"""A file or folder of FHIR resources (or the Bundle pages pulled from a FHIR server, as a
list of (name, parsed JSON); see server.py) as what the patient and results imports read, in the
shape of the HL7 v2 feeds (connectors/hl7v2/feeds.py), so the imports treat both alike.

Errors use the sync runs' JSON shape {row, pms_id, field, message}: `row` is the resource's
number in the source (0 for a file as a whole), `field` a FHIR path ("Patient.birthDate"),
and `message` starts with the file and resource ("a.json:entry[2] Patient/p1: ...").
"""

from dataclasses import dataclass, field

from practicesync.connectors.hl7v2.mapping import Merge

from .mapping import (
    APPOINTMENT_FIELDS,
    PATIENT_FIELDS,
    RESULT_FIELDS,
    Mapped,
    map_appointment,
    map_patient,
    map_report,
    reference_key,
)
from .reader import FhirError, Item, read_fhir_source


def _mapped(map_one, item: Item, **kwargs):
    """One resource that trips the mapping never stops the rest of the source."""
    try:
        return map_one(item, **kwargs)
    except Exception as e:  # noqa: BLE001
        return Mapped(error=FhirError(item.number, item.ref, item.resource_type,
                                      f"could not be mapped ({type(e).__name__})", "internal"))


@dataclass
class _Feed:
    errors: list[dict] = field(default_factory=list)
    refs: dict[int, str] = field(default_factory=dict)
    # (ref, code) of every file or resource not used, and the refs used: for tests and counts.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    # (row, ref, Merge) of each Patient.link replaces/replaced-by: a review item, never applied.
    merges: list[tuple[int, str, Merge]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def reject(self, error: FhirError) -> None:
        self.errors.append(error.as_dict())
        self.rejected.append((error.ref, error.code))

    def locate_row_error(self, error: dict) -> dict:
        """A row check's error (named by canonical column) named by FHIR path and resource."""
        row = error["row"]
        return {**error, "field": self.fields.get(error["field"], error["field"]),
                "message": f"{self.refs.get(row, 'resource ' + str(row))}: {error['message']}"}


@dataclass
class PatientFeed(_Feed):
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


@dataclass
class ResultFeed(_Feed):
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


@dataclass
class AppointmentFeed(_Feed):
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


def _items(feed: _Feed, source, types: tuple[str, ...] | None = None) -> list[Item]:
    items = []
    for item in read_fhir_source(source, *((types,) if types else ())):
        feed.refs[item.number] = item.ref
        if item.error is not None:
            feed.reject(item.error)
        else:
            items.append(item)
    return items


def read_patient_feed(source, *, country: str, pms_id_system: str = "") -> PatientFeed:
    """Every Patient of the source as a canonical list row; for a PMS id seen twice the later
    one (in file order) is used; Patient.link replaces/replaced-by as merges (review items).
    DiagnosticReports and Observations are not read here."""
    feed = PatientFeed(fields=dict(PATIENT_FIELDS))
    latest: dict[str, tuple[int, dict]] = {}
    index: dict[str, str] = {}
    linked = []
    for item in _items(feed, source):
        if item.resource_type != "Patient":
            continue
        mapped = _mapped(map_patient, item, country=country, pms_id_system=pms_id_system)
        if mapped.error is not None:
            feed.reject(mapped.error)
            continue
        feed.accepted.append(item.ref)
        pms_id = mapped.row["pms_id"]
        latest.pop(pms_id, None)
        latest[pms_id] = (item.number, mapped.row)
        index.update({k: pms_id for k in (f"Patient/{item.resource.id}", item.full_url) if k})
        linked += [(item, pms_id, link) for link in item.resource.link or []
                   if link.type in ("replaces", "replaced-by")]
    feed.rows = list(latest.values())
    for item, pms_id, link in linked:
        # The PMS merged two of its patients: survivor "replaces" the other, or this one was
        # "replaced-by" the survivor. Raised for staff like an HL7 A40; nothing is merged.
        key = reference_key(link.other.reference)
        other = index.get(link.other.reference or "") or index.get(key) or (
            key.split("/", 1)[1] if key.startswith("Patient/") else "")
        if not other or other == pms_id:
            continue
        survivor, prior = (pms_id, other) if link.type == "replaces" else (other, pms_id)
        feed.merges.append((item.number, item.ref, Merge(survivor, prior,
                                                         f"Patient.link {link.type}")))
    return feed


def _patient_index(items, *, country: str, pms_id_system: str) -> dict[str, str]:
    """Reference key and Bundle fullUrl of each Patient in the source -> its PMS id."""
    patients: dict[str, str] = {}
    for item in items:
        if item.resource_type == "Patient":
            mapped = _mapped(map_patient, item, country=country, pms_id_system=pms_id_system)
            if mapped.row is not None:
                patients.update({k: mapped.row["pms_id"] for k in (
                    f"Patient/{item.resource.id}" if item.resource.id else "", item.full_url) if k})
    return patients


def _mapped_rows(feed, items, resource_type: str, mapping, **context):
    for item in items:
        if item.resource_type != resource_type:
            continue
        mapped = _mapped(mapping, item, **context)
        if mapped.error is not None:
            feed.reject(mapped.error)
            continue
        feed.accepted.append(item.ref)
        feed.rows.append((item.number, mapped.row))
    return feed


def read_result_feed(source, *, country: str, pms_id_system: str = "") -> ResultFeed:
    """Every DiagnosticReport of the source as a canonical result row. Patients in the source
    give the PMS id of the reports' subjects; Observations give a report without an effective
    time its collection time. Observations on their own are not results here."""
    feed = ResultFeed(fields=dict(RESULT_FIELDS))
    items = _items(feed, source)
    observations = {k: item.resource for item in items if item.resource_type == "Observation"
                    for k in (f"Observation/{item.resource.id}" if item.resource.id else "",
                              item.full_url) if k}
    return _mapped_rows(feed, items, "DiagnosticReport", map_report,
                        patients=_patient_index(items, country=country, pms_id_system=pms_id_system),
                        observations=observations, pms_id_system=pms_id_system)


def read_appointment_feed(source, *, country: str, pms_id_system: str = "") -> AppointmentFeed:
    """Every Appointment of the source as a canonical appointments row, in source order (a
    later one with the same id updates it). Patients in the source give the PMS id of the
    appointments' patient participants."""
    feed = AppointmentFeed(fields=dict(APPOINTMENT_FIELDS))
    items = _items(feed, source, ("Patient", "Appointment"))
    return _mapped_rows(feed, items, "Appointment", map_appointment,
                        patients=_patient_index(items, country=country, pms_id_system=pms_id_system),
                        pms_id_system=pms_id_system)


__all__ = ["AppointmentFeed", "PatientFeed", "ResultFeed", "read_appointment_feed",
           "read_patient_feed", "read_result_feed", "reference_key"]
