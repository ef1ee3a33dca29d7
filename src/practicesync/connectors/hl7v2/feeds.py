"""A file or folder of HL7 v2 messages as what the patient, results and appointments imports
read.

Errors use the sync runs' JSON shape {row, pms_id, field, message}: `row` is the message's
number in the source (0 for a file as a whole), `field` the HL7 field ("PID-7", "OBR-25") or
segment, and `message` starts with the file and message ("a.hl7:message 2: ...") so a bad
message is found by file and segment.
"""

from dataclasses import dataclass, field

from .mapping import (
    APPOINTMENT_FIELDS,
    PATIENT_FIELDS,
    RESULT_FIELDS,
    Mapped,
    Merge,
    PatientRow,
    map_adt,
    map_oru,
    map_siu,
    unsupported,
)
from .parse import MessageError
from .reader import read_hl7_source


def _mapped(map_one, message, **kwargs) -> Mapped:
    """One message that trips the mapping never stops the rest of the source."""
    try:
        return map_one(message, **kwargs)
    except Exception as e:  # noqa: BLE001
        return Mapped(errors=[message.error("MSH", "", f"could not be mapped "
                                                       f"({type(e).__name__})", "internal")])


def error_dict(number: int, ref: str, error: MessageError) -> dict:
    return {"row": number, "pms_id": error.pms_id, "field": error.where,
            "message": f"{ref}: {error.reason}"}


@dataclass
class _Feed:
    errors: list[dict] = field(default_factory=list)
    refs: dict[int, str] = field(default_factory=dict)

    def locate(self, error: dict, fields: dict[str, str]) -> dict:
        """A row check's error (named by canonical column) named by HL7 field and message."""
        row = error["row"]
        return {**error, "field": fields.get(error["field"], error["field"]),
                "message": f"{self.refs.get(row, 'message ' + str(row))}: {error['message']}"}


@dataclass
class PatientFeed(_Feed):
    """ADT messages as canonical patient-list rows: for each PMS id the row of its latest
    message (messages are applied in arrival order, so a later A08 supersedes an earlier A04),
    and the A40 merges."""

    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    merges: list[tuple[int, str, Merge]] = field(default_factory=list)
    _fields: dict[int, dict[str, str]] = field(default_factory=dict)

    def locate_row_error(self, error: dict) -> dict:
        return self.locate(error, {**PATIENT_FIELDS, **self._fields.get(error["row"], {})})


def _messages(feed, source, accepts, expected: str):
    """The source's parsed messages that `accepts`; every other one is an error in `feed`."""
    for item in read_hl7_source(source):
        feed.refs[item.number] = item.ref
        if item.error is not None:
            feed.errors.append(error_dict(item.number, item.ref, item.error))
        elif not accepts(item.message):
            feed.errors.append(error_dict(item.number, item.ref,
                                          unsupported(item.message, expected)))
        else:
            yield item


def read_patient_feed(source, *, pms: str, country: str, pms_id_system: str = "") -> PatientFeed:
    feed = PatientFeed()
    latest: dict[str, tuple[int, PatientRow]] = {}
    for item in _messages(feed, source, lambda m: m.message_code == "ADT",
                          "ADT^A04/A08/A28/A31/A40 for patients"):
        mapped = _mapped(map_adt, item.message, pms=pms, country=country,
                         pms_id_system=pms_id_system)
        feed.errors += [error_dict(item.number, item.ref, e) for e in mapped.errors]
        for patient in mapped.patients:
            latest.pop(patient.row["pms_id"], None)  # re-inserted last: arrival order kept
            latest[patient.row["pms_id"]] = (item.number, patient)
        feed.merges += [(item.number, item.ref, m) for m in mapped.merges]
    for number, patient in latest.values():
        feed.rows.append((number, patient.row))
        feed._fields[number] = patient.fields
    return feed


@dataclass
class RowFeed(_Feed):
    """Result or appointment rows, each with the message it came from."""

    fields: dict[str, str] = field(default_factory=dict)  # row field -> HL7 field, for errors
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def locate_row_error(self, error: dict) -> dict:
        return self.locate(error, self.fields)



def _read_rows(source, *, fields, accepts, expected: str, mapping, rows_of) -> RowFeed:
    feed = RowFeed(fields=fields)
    for item in _messages(feed, source, accepts, expected):
        mapped = mapping(item.message)
        feed.errors += [error_dict(item.number, item.ref, e) for e in mapped.errors]
        feed.rows += [(item.number, row) for row in rows_of(mapped)]
    return feed


def read_result_feed(source, *, pms: str, pms_id_system: str = "") -> RowFeed:
    """ORU^R01 messages as canonical result rows, one per OBR, in arrival order (a later
    message about the same result updates it)."""
    return _read_rows(source, fields=RESULT_FIELDS, accepts=lambda m: m.message_type == "ORU^R01",
                      expected="ORU^R01 for results", rows_of=lambda mapped: mapped.results,
                      mapping=lambda m: _mapped(map_oru, m, pms=pms, pms_id_system=pms_id_system))


def read_appointment_feed(source, *, pms: str, pms_id_system: str = "") -> RowFeed:
    """SIU^S12/S13/S14/S15/S26 messages as canonical appointment rows, in arrival order (a
    later message about the same appointment updates it)."""
    return _read_rows(source, fields=APPOINTMENT_FIELDS, accepts=lambda m: m.message_code == "SIU",
                      expected="SIU^S12/S13/S14/S15/S26 for appointments",
                      rows_of=lambda mapped: mapped.appointments,
                      mapping=lambda m: _mapped(map_siu, m, pms=pms, pms_id_system=pms_id_system))
