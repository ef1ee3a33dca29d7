"""The appointments sync action: store each appointment as the PMS last reported it, audit
every change, and run Pause on Booking for the patients whose appointments changed, in one
transaction. Deciding is elsewhere: the row check in rows.py, what a patient's appointments
mean for a sequence in outreach.sequences (via outreach.actions.refresh_bookings)."""


from django.db import transaction
from django.utils import timezone

from practicesync.audit import events
from practicesync.connectors.csvfile.appointments import read_appointments
from practicesync.connectors.fhir import server as fhir_server
from practicesync.connectors.fhir.feeds import read_appointment_feed as read_fhir_feed
from practicesync.connectors.hl7v2.feeds import read_appointment_feed as read_hl7_feed
from practicesync.imports import ImportReport
from practicesync.outreach.actions import refresh_bookings
from practicesync.outreach.models import Sequence
from practicesync.patients.models import Patient
from practicesync.practices.access import require_sync_permission
from practicesync.practices.models import Practice

from .models import Appointment
from .rows import AppointmentRow, check_appointment_row

COUNTERS = ("created", "updated", "unchanged", "unmatched", "sequences_paused",
            "sequences_resumed", "sequences_completed")
# Fields of an appointment a re-import may change (`source` is where it was last heard of,
# not a change of the appointment).
TRACKED = ("pms_id", "patient_id", "starts_at", "status")
# Sequence state after Pause on Booking -> the counter it moves, when the state changed.
MOVES = {Sequence.State.PAUSED_BOOKING: "sequences_paused",
         Sequence.State.ACTIVE: "sequences_resumed",
         Sequence.State.COMPLETED: "sequences_completed"}


class AppointmentsReport(ImportReport):
    COUNTERS = COUNTERS


def sync_appointments(*, practice: Practice, source: str, actor: str, fmt: str = "csv"
                      ) -> AppointmentsReport:
    """Import the canonical appointments CSV at `source`; `fmt` "hl7": the SIU messages of a
    file or folder (a bad message reported by file, message and segment, the rest imported);
    "fhir": the Appointments of a Bundle, resource file or folder, or with an http(s) `source`
    those updated on that FHIR server since the practice's cursor, which moves in the same
    transaction as their import."""
    require_sync_permission(practice)
    if fmt not in ("hl7", "fhir"):
        return import_appointment_rows(practice=practice, raw_rows=read_appointments(source),
                                       actor=actor, source_kind="csv")
    if fmt == "fhir" and fhir_server.is_url(source):
        pulled = fhir_server.pull(source, "Appointment", fhir_server.cursor_position(
            practice, source, "Appointment"))
        feed = read_fhir_feed(pulled.documents, country=practice.country,
                              pms_id_system=practice.pms_id_system)
        with transaction.atomic():
            report = import_appointment_rows(practice=practice, raw_rows=feed.rows, actor=actor,
                                             source_kind="fhir")
            fhir_server.advance_cursor(practice, source, pulled)
    else:
        feed = (read_fhir_feed(source, country=practice.country,
                               pms_id_system=practice.pms_id_system) if fmt == "fhir"
                else read_hl7_feed(source, pms=practice.pms, pms_id_system=practice.pms_id_system))
        report = import_appointment_rows(practice=practice, raw_rows=feed.rows, actor=actor,
                                         source_kind=fmt)
    report.errors = sorted(feed.errors + [feed.locate_row_error(e) for e in report.errors],
                           key=lambda e: e["row"])
    return report


@transaction.atomic
def import_appointment_rows(*, practice: Practice, raw_rows, actor: str, source_kind: str,
                            now=None) -> AppointmentsReport:
    """Import (line, canonical appointment dict) pairs from any connector (CSV, HL7, FHIR,
    PMS database). `source_kind` is stored as the appointment's source (csv, hl7, fhir,
    pms)."""
    require_sync_permission(practice)
    report = AppointmentsReport()
    rows = []
    for line, raw in raw_rows:
        row, errors = check_appointment_row(line, raw, practice.tz)
        report.errors += [e.as_dict() for e in errors]
        if row is not None:
            rows.append(row)
    touched = _apply(practice, rows, actor, source_kind, report)
    _pause_on_booking(practice, touched, actor, now, report)
    return report


def _apply(practice: Practice, rows: list[AppointmentRow], actor: str, source_kind: str,
           report: AppointmentsReport) -> set[int]:
    """Store the rows; the ids of the patients whose appointments changed (before and after:
    an appointment moved to another patient changes both)."""
    patients = {p.pms_id: p for p in Patient.objects.filter(
        practice=practice, pms_id__in={r.pms_id for r in rows})}
    stored = {a.appointment_id: a for a in Appointment.objects.filter(
        practice=practice, appointment_id__in={r.appointment_id for r in rows})}
    touched: set[int] = set()
    for row in rows:
        patient = patients.get(row.pms_id)
        values = {"pms_id": row.pms_id, "patient_id": patient.id if patient else None,
                  "starts_at": row.starts_at, "status": row.status}
        appointment = stored.get(row.appointment_id)
        if appointment is None:
            appointment = Appointment.objects.create(practice=practice,
                                                     appointment_id=row.appointment_id,
                                                     source=source_kind, **values)
            stored[row.appointment_id] = appointment
            events.record(practice=practice, actor=actor, action="appointment.created",
                          patient=patient, why=f"{row.status} in the PMS ({source_kind})",
                          detail={"appointment_id": row.appointment_id, "row": row.line,
                                  "old_status": None, "new_status": row.status,
                                  "starts_at": row.starts_at.isoformat()})
            report.counts["created"] += 1
        else:
            changes = {k: (getattr(appointment, k), v) for k, v in values.items()
                       if getattr(appointment, k) != v}
            if changes:
                touched.add(appointment.patient_id)
                old_status = appointment.status
                for name, (_, new) in changes.items():
                    setattr(appointment, name, new)
                appointment.source = source_kind
                appointment.save()
                events.record(practice=practice, actor=actor, action="appointment.updated",
                              patient=patient, why=f"{row.status} in the PMS ({source_kind})",
                              detail={"appointment_id": row.appointment_id, "row": row.line,
                                      "old_status": old_status, "new_status": row.status,
                                      "changes": [{"field": k, "old": _text(o), "new": _text(n)}
                                                  for k, (o, n) in changes.items()]})
                report.counts["updated"] += 1
            else:
                report.counts["unchanged"] += 1
        if patient is None:
            # Kept, so that it counts as soon as the patient is on the list and the appointment
            # is heard of again; no review item: an appointment asks nothing of staff.
            report.counts["unmatched"] += 1
            report.errors.append({"row": row.line, "pms_id": row.pms_id, "field": "pms_id",
                                  "message": f"no patient with PMS id {row.pms_id}; appointment "
                                             f"{row.appointment_id} stored unmatched"})
        else:
            touched.add(patient.id)
    touched.discard(None)
    return touched


def _text(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _pause_on_booking(practice, patient_ids: set[int], actor: str, now,
                      report: AppointmentsReport) -> None:
    """refresh_bookings decides and applies; the counts are the state changes it made."""
    if not patient_ids:
        return
    running = Sequence.objects.filter(practice=practice, group__patient_id__in=patient_ids,
                                      state__in=Sequence.LIVE)
    before = dict(running.values_list("id", "state"))
    if not before:
        return
    refresh_bookings(practice=practice, patient_ids=patient_ids, actor=actor,
                     now=now or timezone.now())
    after = dict(Sequence.objects.filter(id__in=before).values_list("id", "state"))
    for sequence_id, state in after.items():
        if state != before[sequence_id] and state in MOVES:
            report.counts[MOVES[state]] += 1
