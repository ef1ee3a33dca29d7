"""The Patient Sync action: read a practice list, plan the run, apply it in one transaction.

Deciding lives in reconcile/matching/merge (pure); this module loads, writes and audits.
"""

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from practicesync.audit.models import AuditEvent
from practicesync.bulk import insert_rows
from practicesync.connectors.csvfile.patient_list import SourceError, read_patient_list
from practicesync.connectors.fhir import read_patient_feed as read_fhir_patient_feed
from practicesync.connectors.fhir import server as fhir_server
from practicesync.connectors.hl7v2.feeds import PatientFeed, read_patient_feed
from practicesync.connectors.profiles import get_profile
from practicesync.outreach.actions import stop_sequences_of
from practicesync.practices.access import require_sync_permission
from practicesync.practices.models import Practice
from practicesync.runtime.locks import Busy, LockUnavailable, practice_lock
from practicesync.runtime.processes import is_alive, this_process

from .matching import Review
from .models import NotSamePerson, Patient, ReviewItem, SyncRun
from .reconcile import Plan, plan_sync
from .rows import RECORD_FIELDS, PatientRecord, check_rows

log = logging.getLogger(__name__)

BATCH = 2000
Progress = Callable[[str, int, int], None]


@dataclass
class SyncReport:
    status: str
    summary: dict
    errors: list[dict] = field(default_factory=list)
    run_id: int | None = None
    plan: Plan | None = None
    failure: str = ""

    @property
    def exit_code(self) -> int:
        return 0 if self.status == SyncRun.Status.COMPLETED else 1

    def as_json(self) -> dict:
        out = {**self.summary, "errors": self.errors, "status": self.status,
               "run_id": self.run_id}
        if self.failure:
            out["failure"] = self.failure
        return out


# Shown on the patient page's history as the reason, so in staff's words.
CREATED_WHY = "not on record: created from the practice list"

def load_records(practice: Practice) -> list[PatientRecord]:
    # A record merged into another by staff is history: it must never be matched again.
    return [PatientRecord(*values) for values in
            Patient.objects.filter(practice=practice).exclude(status=Patient.Status.MERGED)
            .order_by("id").values_list(*RECORD_FIELDS)
            .iterator(chunk_size=BATCH)]


def sync_patient_list(*, practice: Practice, source: str, actor: str, dry_run: bool = False,
                      allow_drop_reason: str = "", progress: Progress | None = None,
                      fmt: str = "csv", partial: bool = False, wait: bool = True) -> SyncReport:
    """Raises SyncNotPermitted before reading anything when the practice has not consented.

    `fmt` "csv" reads a practice list (canonical or the PMS's export); "hl7" a file or folder
    of ADT messages, which is always `partial`: the same rules apply, but nobody is marked as
    having left, since a feed of changes is not the whole list. "fhir" a FHIR Bundle, Patient
    or folder of them: partial too (a Bundle is not known to hold the whole list); with an
    http(s) `source`, the Patients updated on that FHIR server since the practice's cursor
    (connectors/fhir/server.py). The cursor moves only with a run that applied its changes:
    in the same transaction as them, so a crash or a failed or refused run leaves it where
    it was and the next run pulls the same Patients again (re-applying them is harmless);
    a dry run never moves it.

    Two syncs of one practice never overlap (the practice's sync lock, held from before the
    records are read until the run is finished): the second waits for the first and plans
    from what it stored; after SYNC_WAIT it gives up, as a failed run that says why. With
    `wait` False it raises locks.Busy at once instead and records nothing: for a caller
    inside a transaction, which must not wait while holding it."""
    require_sync_permission(practice)
    started = timezone.now()
    partial = partial or fmt in ("hl7", "fhir")
    options = {"practice": practice, "source": source, "actor": actor, "fmt": fmt,
               "partial": partial, "allow_drop_reason": allow_drop_reason,
               "progress": progress}
    if dry_run:
        close_interrupted_runs(practice=practice)
        return _sync(run=None, **options)
    try:
        with practice_lock(SYNC_LOCK, practice.id,
                           wait=SYNC_WAIT.total_seconds() if wait else 0):
            # Holding the lock, a run of the practice still marked running was left so by a
            # holder that died: no other can be running.
            close_interrupted_runs(practice=practice, lock_held=True)
            run = SyncRun.objects.create(
                practice=practice, source=source, triggered_by=actor, started_at=started,
                kind="patients_partial" if partial else "patients",
                allow_drop_reason=allow_drop_reason, owner=this_process())
            try:
                return _sync(run=run, **options)
            except BaseException as e:
                _fail(run, e)
                raise
    except Busy as e:
        if not wait:
            raise
        failure = (f"{e}; this sync did not start" if isinstance(e, LockUnavailable)
                   else BUSY.format(minutes=SYNC_WAIT.total_seconds() / 60))
        return record_failed_run(practice=practice, source=source, actor=actor, started=started,
                                 failure=failure)


def _sync(*, practice: Practice, source: str, actor: str, fmt: str, partial: bool,
          allow_drop_reason: str, progress: Progress | None, run: SyncRun | None) -> SyncReport:
    """Read, check, plan and (with a `run`; none for a dry run) apply."""
    profile = get_profile(practice.pms)
    records = load_records(practice)
    feed: PatientFeed | None = None
    pulled = None
    try:
        if fmt == "hl7":
            feed = read_patient_feed(source, pms=practice.pms, country=practice.country,
                                     pms_id_system=practice.pms_id_system)
            raw_rows = feed.rows
        elif fmt == "fhir" and fhir_server.is_url(source):
            pulled = fhir_server.pull(source, "Patient", fhir_server.cursor_position(
                practice, source, "Patient"))
            feed = read_fhir_patient_feed(pulled.documents, country=practice.country,
                                          pms_id_system=practice.pms_id_system)
            raw_rows = feed.rows
        elif fmt == "fhir":
            feed = read_fhir_patient_feed(source, country=practice.country,
                                          pms_id_system=practice.pms_id_system)
            raw_rows = feed.rows
        else:
            raw_rows = read_patient_list(source, profile)
        rows, errors, present = check_rows(raw_rows, practice.country,
                                           known={r.pms_id: r for r in records if r.pms_id})
    except SourceError as e:
        if run is not None:
            _finish(run, SyncRun.Status.FAILED, failure=str(e))
        return SyncReport(SyncRun.Status.FAILED, empty_summary(), run_id=run and run.id,
                          failure=str(e))
    if progress:
        progress("checked", len(rows), len(rows))

    not_same = set(NotSamePerson.objects.filter(practice=practice)
                   .values_list("pms_id", "patient_id"))
    plan = plan_sync(records, rows, present_pms_ids=present, not_same=not_same,
                     max_drop_share=practice.max_drop_share, allow_drop=bool(allow_drop_reason),
                     partial=partial)
    error_dicts = [e.as_dict() for e in errors]
    if feed is not None:
        error_dicts = sorted(feed.errors + [feed.locate_row_error(e) for e in error_dicts],
                             key=lambda e: e["row"])
        plan.reviews += merge_reviews(feed)
        plan.counts["needs_review"] = len({r.key for r in plan.reviews})
    if plan.refused:
        status = SyncRun.Status.REFUSED_TRUNCATED
    elif error_dicts:
        status = SyncRun.Status.COMPLETED_WITH_ERRORS
    else:
        status = SyncRun.Status.COMPLETED
    # A refused list applies nothing, so it counts nothing (its review item says what it
    # would have done).
    summary = empty_summary() if plan.refused else plan.summary()
    if run is None:
        return SyncReport(status, summary, error_dicts, plan=plan)

    with transaction.atomic():
        if plan.refused:
            _store_reviews(practice, run, [plan.refused], key_suffix=f":run{run.id}")
        else:
            _apply(practice, run, plan, actor, progress)
            if pulled is not None:
                fhir_server.advance_cursor(practice, source, pulled)
        # With what it applied: a crash after the commit never shows a stored run as failed.
        _finish(run, status, counts=summary, errors=error_dicts)
    return SyncReport(status, summary, error_dicts, run_id=run.id, plan=plan)


def _finish(run: SyncRun, status: str, **fields) -> None:
    SyncRun.objects.filter(id=run.id).update(status=status, finished_at=timezone.now(), **fields)


def _fail(run: SyncRun, error: BaseException) -> None:
    """Record why the run failed, on a fresh connection if the error broke this one. Best
    effort: the error itself is what the caller sees; a run left running is closed by the
    next sync of the practice (it then holds the lock)."""
    try:
        if (not connection.in_atomic_block and connection.errors_occurred
                and not connection.is_usable()):
            connection.close()  # a broken session, and with it the lock, is let go
        _finish(run, SyncRun.Status.FAILED, failure=repr(error))
    except Exception as e:  # noqa: BLE001
        log.warning("sync run=%s: its failure could not be recorded (%s)", run.id,
                    type(e).__name__)


# Two syncs of one practice never overlap (sync_patient_list); a sync waits this long for
# the other: a 100,000-patient list applies in under a minute. A nightly sync that gives up
# is tried again (tasks.py).
SYNC_LOCK = "patient-sync"
SYNC_WAIT = dt.timedelta(minutes=2)
BUSY = ("another sync of this practice was still running after {minutes:g} minutes, so this "
        "one did not start; run it again once that one has ended")


@dataclass(frozen=True)
class MergeReview(Review):
    """The PMS merged two of its patients (HL7 ADT^A40). Keyed on both ids, so each merge is
    raised once however often it is re-sent."""

    prior_pms_id: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.prior_pms_id}>{self.pms_id}"


def merge_reviews(feed: PatientFeed) -> list[Review]:
    """A merge is never applied here: staff check both records (DESIGN.md section 2, rule 6)."""
    return [MergeReview(
        "pms_merge", f"{ref}: the PMS merged patient {m.prior_pms_id} into {m.pms_id} "
                     f"({m.message_type}). Nothing was merged in practicesync: check both "
                     f"records and combine them by hand if they are one person.",
        m.pms_id, candidates=(PatientRecord(pms_id=m.prior_pms_id),),
        prior_pms_id=m.prior_pms_id) for _, ref, m in feed.merges]


def empty_summary() -> dict:
    return Plan().summary()


def record_failed_run(*, practice: Practice, source: str, actor: str, failure: str,
                      started=None) -> SyncReport:
    """A run that could not start: recorded so staff see it, and nothing else changed."""
    run = SyncRun.objects.create(practice=practice, source=source, triggered_by=actor,
                                 status=SyncRun.Status.FAILED, failure=failure,
                                 started_at=started or timezone.now(), finished_at=timezone.now())
    return SyncReport(run.status, empty_summary(), run_id=run.id, failure=failure)


# A run on another host is taken to have been interrupted when it has been "running" this
# long: a 100,000-patient list applies in well under a minute.
FOREIGN_RUN_LIMIT = dt.timedelta(hours=6)
INTERRUPTED = ("interrupted: the process applying it ended without finishing ({how}); a "
               "run applies in one transaction, so nothing of it was stored")


def close_interrupted_runs(*, practice: Practice | None = None, now=None,
                           lock_held: bool = False) -> int:
    """Runs left "running" by a process that was killed or crashed are marked failed, so
    staff never see a sync "running" for ever. Returns how many. `lock_held`: the caller
    holds the practice's sync lock, so none of its runs can still be running."""
    now = now or timezone.now()
    running = SyncRun.objects.filter(status=SyncRun.Status.RUNNING)
    if practice is not None:
        running = running.filter(practice=practice)
    closed = 0
    for run_id, owner, started_at in running.values_list("id", "owner", "started_at"):
        alive = None if lock_held else is_alive(owner)
        if lock_held:
            how = "its process let go of the practice's sync lock without finishing it"
        elif alive is False:
            how = "its process is gone"
        elif alive is None and started_at < now - FOREIGN_RUN_LIMIT:
            how = f"no word from {owner or 'its process'} for {FOREIGN_RUN_LIMIT}"
        else:
            continue
        closed += SyncRun.objects.filter(id=run_id, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.FAILED, failure=INTERRUPTED.format(how=how), finished_at=now)
        log.warning("sync run=%s interrupted (%s)", run_id, how)
    return closed


def _apply(practice: Practice, run: SyncRun, plan: Plan, actor: str, progress) -> None:
    now = timezone.now()
    events: list[dict] = []

    def event(action: str, patient_id: int, why: str, detail: dict) -> None:
        events.append({"practice_id": practice.id, "at": now, "actor": actor, "action": action,
                       "why": why, "patient_id": patient_id, "sync_run_id": run.id,
                       "detail": detail})

    insert_rows(Patient, (_new_patient(practice, c.record, c.fingerprint, now)
                          for c in plan.creates), NEW_PATIENT_COLUMNS)
    if plan.creates:
        ids = dict(Patient.objects.filter(practice=practice, created_at=now)
                   .values_list("pms_id", "id"))
        for create in plan.creates:
            event("patient.created", ids[create.record.pms_id], CREATED_WHY,
                  {"row": create.row.line, "pms_id": create.record.pms_id, "digital": False,
                   "status": create.record.status})
    if progress:
        progress("created", len(plan.creates), len(plan.creates))

    # Only the fields a change names are written, so a concurrent edit of another field of
    # the same patient is never overwritten with what this run loaded.
    by_fields: dict[frozenset, list[Patient]] = defaultdict(list)
    for update in plan.updates:
        values = {c.field: c.new for c in update.changes}
        link = next((c.rule for c in update.changes if c.field == "pms_id"), None)
        if link:
            values["link_reason"] = link
        values["list_fingerprint"] = update.fingerprint
        values["updated_at"] = now
        by_fields[frozenset(values)].append(Patient(id=update.record.id, **values))
        event("patient.updated", update.record.id,
              ",".join(sorted({c.rule for c in update.changes})),
              {"changes": [c.as_dict() for c in update.changes]})
    for names, patients in by_fields.items():
        Patient.objects.bulk_update(patients, sorted(names), batch_size=BATCH)
    Patient.objects.bulk_update(
        [Patient(id=pid, list_fingerprint=fp) for pid, fp in plan.fingerprints],
        ["list_fingerprint"], batch_size=BATCH)

    insert_rows(AuditEvent, events, EVENT_COLUMNS)
    _store_reviews(practice, run, plan.reviews)
    gone = [u.record.id for u in plan.updates
            if any(c.field == "status" and c.new != "active" for c in u.changes)]
    if gone:
        stop_sequences_of(practice=practice, patient_ids=gone, actor=actor, sync_run=run,
                          why="patient marked deceased or left practice by Patient Sync")


NEW_PATIENT_COLUMNS = ["practice_id", *(f for f in RECORD_FIELDS if f != "id"), "link_reason",
                       "created_at", "updated_at"]
EVENT_COLUMNS = ["practice_id", "at", "actor", "action", "why", "patient_id", "sync_run_id",
                 "detail"]


def _new_patient(practice: Practice, record: PatientRecord, fingerprint: str, now) -> dict:
    values = {f: getattr(record, f) for f in RECORD_FIELDS if f != "id"}
    values.update(practice_id=practice.id, digital=False, list_fingerprint=fingerprint,
                  link_reason="created_from_list", created_at=now, updated_at=now)
    return values


def _store_reviews(practice: Practice, run: SyncRun, reviews, key_suffix: str = "") -> None:
    """One review item per finding; a finding already on record (open or decided) is not
    raised again by a later run."""
    wanted = {r.key + key_suffix: r for r in reviews}
    if not wanted:
        return
    known = set(ReviewItem.objects.filter(practice=practice, key__in=list(wanted))
                .values_list("key", flat=True))
    fresh = {k: r for k, r in wanted.items() if k not in known}
    items = ReviewItem.objects.bulk_create([
        ReviewItem(practice=practice, kind=r.kind, detail=r.detail, key=k, sync_run=run,
                   pms_ids=sorted({p for p in [r.pms_id, *(c.pms_id for c in r.candidates)] if p}),
                   account_ids=sorted({c.account_id for c in r.candidates if c.account_id}))
        for k, r in fresh.items()], batch_size=BATCH)
    by_pms_id = dict(Patient.objects.filter(
        practice=practice, pms_id__in=[p for i in items for p in i.pms_ids])
        .values_list("pms_id", "id"))
    links = []
    for item, review in zip(items, fresh.values(), strict=True):
        ids = {c.id for c in review.candidates if c.id} | set(review.patient_ids) | {
            by_pms_id[p] for p in item.pms_ids if p in by_pms_id}
        links += [ReviewItem.patients.through(reviewitem_id=item.id, patient_id=i) for i in ids]
    ReviewItem.patients.through.objects.bulk_create(links, batch_size=BATCH)
