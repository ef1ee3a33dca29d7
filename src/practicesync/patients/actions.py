"""Staff decisions about patient records: keyword-only, one transaction, audited."""

import datetime as dt

from django.db import transaction
from django.utils import timezone

from practicesync.audit import events
from practicesync.outreach.models import Message, PushSubscription, StaffTask
from practicesync.practices.access import require_sync_permission
from practicesync.practices.models import Membership, Practice

from .merge import LINKED, Change, merge
from .models import IDENTIFIER_FIELDS, NotSamePerson, Patient, PatientRequest, ReviewItem
from .rows import RECORD_FIELDS, ListRow, PatientRecord
from .tasks import queue_sync_now_task


class NotFound(LookupError):
    pass


class ReviewRefused(ValueError):
    """A review resolution that the item does not allow or that would be unsafe. The message
    names no patient, so a page may show it as it is."""


class DatesOfBirthDiffer(ReviewRefused):
    pass


class NoListSource(LookupError):
    pass


# How staff settle a review item (ReviewItem.resolution).
LINKED_BY_STAFF, NOT_SAME, IGNORED = "linked", "not_same", "ignored"
# Findings about which record is whom: staff may link a list patient to a digital account...
LINKABLE_KINDS = frozenset({"ambiguous_match", "possible_match", "dob_conflict",
                            "ihi_unverified"})
# ...or say they are different people. Different NHS numbers or IHIs are never linked.
SEPARABLE_KINDS = LINKABLE_KINDS | {"identifier_conflict"}
STAFF_REVIEW = "staff_review"
ACCOUNT_KEPT = f"account_linked_by_{STAFF_REVIEW}"


@transaction.atomic
def record_not_same_person(*, actor: str, practice: Practice, pms_id: str,
                           patient_id: int) -> NotSamePerson:
    """The list row `pms_id` and patient `patient_id` are different people: the sync never
    links or proposes them again, and open review items about the pair are closed."""
    patient = Patient.objects.filter(practice=practice, id=patient_id).first()
    if patient is None:
        raise NotFound(f"no patient #{patient_id} at {practice.slug}")
    pair, _ = NotSamePerson.objects.get_or_create(practice=practice, pms_id=pms_id,
                                                  patient=patient,
                                                  defaults={"recorded_by": actor})
    closed = [item.id for item in patient.review_items.filter(status=ReviewItem.Status.OPEN)
              if pms_id in item.pms_ids]
    ReviewItem.objects.filter(id__in=closed).update(
        status=ReviewItem.Status.DISMISSED, resolution=NOT_SAME, resolved_by=actor,
        resolved_at=timezone.now())
    events.record(practice=practice, actor=actor, action="patient.not_same_person",
                  patient=patient, why="staff decision",
                  detail={"pms_id": pms_id, "review_items_closed": closed})
    return pair


@transaction.atomic
def add_patient_request(*, actor: str, patient: Patient, reason: str, notes: str = "",
                        assigned_to: Membership | None = None,
                        due_on: dt.date | None = None) -> PatientRequest:
    """A non-digital patient's request, taken by phone or at the desk, for staff to do."""
    reason = " ".join(reason.split())
    if not reason:
        raise ValueError("give the reason for the request")
    if assigned_to is not None and assigned_to.practice_id != patient.practice_id:
        # The page offers only this practice's staff; a forged id must not reach another one.
        raise ValueError("assign the request to a member of this practice's staff")
    request = PatientRequest.objects.create(
        practice=patient.practice, patient=patient, reason=reason[:200], notes=notes.strip(),
        assigned_to=assigned_to, due_on=due_on, created_by=actor)
    events.record(practice=patient.practice, actor=actor, action="patient.request_added",
                  patient=patient, why=request.reason,
                  detail={"request_id": request.id,
                          "assigned_to": assigned_to.user.email if assigned_to else None,
                          "due_on": due_on.isoformat() if due_on else None})
    return request


@transaction.atomic
def close_patient_request(*, actor: str, request: PatientRequest) -> PatientRequest:
    """Staff did what the patient asked. Closing a closed request changes nothing."""
    request = (PatientRequest.objects.select_for_update().select_related("practice", "patient")
               .get(id=request.id))
    if request.status == PatientRequest.Status.OPEN:
        request.status, request.done_by, request.done_at = (PatientRequest.Status.DONE, actor,
                                                             timezone.now())
        request.save(update_fields=["status", "done_by", "done_at"])
        events.record(practice=request.practice, actor=actor, action="patient.request_done",
                      patient=request.patient, why=request.reason,
                      detail={"request_id": request.id})
    return request


def _live(patients) -> list[Patient]:
    return [p for p in patients if p.status != Patient.Status.MERGED]


def link_pairs(item: ReviewItem, patients) -> list[tuple[Patient, Patient]]:
    """(list patient, digital account) pairs staff may link to settle `item`. Pure."""
    if item.status != ReviewItem.Status.OPEN or item.kind not in LINKABLE_KINDS:
        return []
    live = _live(patients)
    listed = [p for p in live if p.pms_id and not p.account_id]
    accounts = [p for p in live if p.account_id and not p.pms_id]
    return [(lp, ap) for lp in listed for ap in accounts]


def separate_pairs(item: ReviewItem, patients) -> list[tuple[str, Patient]]:
    """(list row's PMS id, other record) pairs that "keep them separate" records as not the
    same person: every record the item names is a different person from every list row. Pure."""
    if item.status != ReviewItem.Status.OPEN or item.kind not in SEPARABLE_KINDS:
        return []
    live = _live(patients)
    return [(p.pms_id, q) for p in live if p.pms_id for q in live if q.id != p.id]


def _open_item(item: ReviewItem) -> ReviewItem:
    item = (ReviewItem.objects.select_for_update().select_related("practice")
            .get(practice=item.practice_id, id=item.id))
    if item.status != ReviewItem.Status.OPEN:
        raise ReviewRefused("This item was already resolved.")
    return item


def _resolve(item: ReviewItem, *, actor: str, resolution: str, note: str, patient=None,
             dob_checked: bool = False, detail: dict | None = None) -> ReviewItem:
    item.status = (ReviewItem.Status.DISMISSED if resolution == IGNORED
                   else ReviewItem.Status.RESOLVED)
    item.resolution, item.resolution_note, item.dob_checked = resolution, note, dob_checked
    item.resolved_by, item.resolved_at = actor, timezone.now()
    item.save(update_fields=["status", "resolution", "resolution_note", "dob_checked",
                             "resolved_by", "resolved_at"])
    events.record(practice=item.practice, actor=actor, action="review_item.resolved",
                  why=resolution, patient=patient,
                  detail={"review_item": item.id, "kind": item.kind, "resolution": resolution,
                          "note": note, "dob_checked": dob_checked, **(detail or {})})
    return item


def _note(text: str) -> str:
    return " ".join(text.split())


@transaction.atomic
def ignore_review_item(*, actor: str, item: ReviewItem, reason: str) -> ReviewItem:
    """Close an item without changing any record; the reason is required and kept."""
    if not (reason := _note(reason)):
        raise ReviewRefused("Give the reason for ignoring this item.")
    return _resolve(_open_item(item), actor=actor, resolution=IGNORED, note=reason)


@transaction.atomic
def keep_separate(*, actor: str, item: ReviewItem, note: str = "") -> ReviewItem:
    """The records the item names are different people: each pair is recorded as not the
    same person (`record_not_same_person`), so the sync never proposes them again."""
    item = _open_item(item)
    pairs = separate_pairs(item, item.patients.all())
    if not pairs:
        raise ReviewRefused("This item does not name two records to keep apart.")
    for pms_id, other in pairs:
        record_not_same_person(actor=actor, practice=item.practice, pms_id=pms_id,
                               patient_id=other.id)
    return _resolve(item, actor=actor, resolution=NOT_SAME, note=_note(note),
                    detail={"pairs": [[pms_id, other.id] for pms_id, other in pairs]})


def _record(patient: Patient) -> PatientRecord:
    return PatientRecord(**{f: getattr(patient, f) for f in RECORD_FIELDS})


def _text(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


@transaction.atomic
def link_review_item(*, actor: str, item: ReviewItem, list_patient_id: int,
                     account_patient_id: int, dob_checked: bool = False,
                     note: str = "") -> Patient:
    """Staff say the digital account is the list patient: the list row is merged into the
    account exactly as Patient Sync links a row (`merge.merge`, reason
    `linked_by_staff_review`). The list patient's record, which holds the results, becomes
    the linked patient; the account's record is kept as history with status merged.
    Dates of birth that differ need `dob_checked` (staff checked with the patient)."""
    item = _open_item(item)
    practice = item.practice
    patients = Patient.objects.select_for_update().filter(practice=practice, review_items=item)
    pair = next(((lp, ap) for lp, ap in link_pairs(item, patients)
                 if (lp.id, ap.id) == (list_patient_id, account_patient_id)), None)
    if pair is None:
        raise ReviewRefused("Choose a list patient and a digital account this item names.")
    listed, account = pair
    if listed.date_of_birth != account.date_of_birth and not dob_checked:
        raise DatesOfBirthDiffer("The dates of birth differ. Check with the patient and tick "
                                 "the box before linking.")
    held_by = {}
    for name in IDENTIFIER_FIELDS:
        if value := getattr(listed, name):
            holder = (Patient.objects.filter(practice=practice, **{name: value})
                      .exclude(id__in=[listed.id, account.id])
                      .exclude(status=Patient.Status.MERGED).values_list("id", flat=True).first())
            if holder is not None:
                held_by[(name, value)] = holder
    changes, findings = merge(_record(account), ListRow(0, _record(listed), listed.status),
                              link_reason=STAFF_REVIEW, held_by=held_by)
    if conflict := next((f for f in findings if f.kind.endswith("_conflict")
                         and f.kind != "dob_conflict"), None):
        raise ReviewRefused(f"Not linked: the records have different "
                            f"{conflict.kind.removesuffix('_conflict').replace('_', ' ')}s, "
                            f"so they are different people. Keep them separate.")

    # What the account's record would be had the sync linked the row to it.
    linked = {f: getattr(account, f) for f in RECORD_FIELDS if f not in ("id", "list_fingerprint")}
    linked |= {c.field: c.new for c in changes}
    rules = {c.field: c.rule for c in changes}
    diff = [Change(f, getattr(listed, f), v, rules.get(f, ACCOUNT_KEPT)).as_dict()
            for f, v in linked.items() if getattr(listed, f) != v]
    # The account id is unique per practice: the old record gives it up first.
    Patient.objects.filter(id=account.id).update(account_id=None, status=Patient.Status.MERGED,
                                                 list_fingerprint="", updated_at=timezone.now())
    for name, value in linked.items():
        setattr(listed, name, value)
    listed.link_reason, listed.list_fingerprint = LINKED + STAFF_REVIEW, ""
    listed.save()
    _move_to(account, listed)
    events.record(practice=practice, actor=actor, action="patient.updated",
                  why=LINKED + STAFF_REVIEW, patient=listed,
                  detail={"changes": diff, "review_item": item.id})
    events.record(practice=practice, actor=actor, action="patient.merged",
                  why=LINKED + STAFF_REVIEW, patient=account,
                  detail={"into_patient": listed.id, "pms_id": listed.pms_id,
                          "account_id": listed.account_id, "review_item": item.id})
    for finding in findings:
        if finding.kind == "dob_conflict":
            continue  # staff checked the dates with the patient
        raised, created = ReviewItem.objects.get_or_create(
            practice=practice, key=f"link:{item.id}:{finding.kind}",
            defaults={"kind": finding.kind, "pms_ids": [listed.pms_id],
                      "account_ids": [listed.account_id],
                      "detail": finding.detail.replace("List row 0", "Linked by staff", 1)})
        if created:
            raised.patients.add(listed)
    _resolve(item, actor=actor, resolution=LINKED_BY_STAFF, note=_note(note), patient=listed,
             dob_checked=dob_checked,
             detail={"patient": listed.id, "merged_patient": account.id,
                     "pms_id": listed.pms_id, "account_id": listed.account_id})
    return listed


def _move_to(old: Patient, new: Patient) -> None:
    """What hangs off the merged record follows the patient to the linked one."""
    for model in (Message, StaffTask, PushSubscription, PatientRequest):
        model.objects.filter(practice=old.practice_id, patient=old).update(patient=new)
    for pms_id, recorded_by in NotSamePerson.objects.filter(patient=old).values_list(
            "pms_id", "recorded_by"):
        NotSamePerson.objects.get_or_create(practice=new.practice, pms_id=pms_id, patient=new,
                                            defaults={"recorded_by": recorded_by})
    for other in old.review_items.filter(status=ReviewItem.Status.OPEN):
        other.patients.add(new)


@transaction.atomic
def queue_sync_now(*, actor: str, practice: Practice) -> tuple[str, bool]:
    """"Sync now" (dashboard and API): the worker runs what `practicesync sync now` runs, as
    `actor`. (task id, queued): pressing twice queues one run and gives the waiting one's id.
    Raises SyncNotPermitted, NoListSource."""
    require_sync_permission(practice)
    if not practice.list_source:
        raise NoListSource("No practice list source is set: set it in Settings first.")
    task_id, queued = queue_sync_now_task(practice, actor=actor)
    if not queued:
        return task_id, False
    events.record(practice=practice, actor=actor, action="sync.queued",
                  why="sync now", detail={"source": practice.list_source, "task_id": task_id})
    return task_id, True
