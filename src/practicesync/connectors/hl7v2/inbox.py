"""The MLLP inbox: storing frames on arrival, applying them afterwards, dead letters.

- `accept_many` / `reject` run on the listener's hot path, committed before the ACK is sent:
  `accept_many` stores a group of frames in one multi-row INSERT (group commit), and falls
  back to one `accept` per frame when the group cannot go in whole, so every frame gets the
  answer it would have had alone. A duplicate MSH key (MSH-3, MSH-4, MSH-10) is never stored
  twice. `reject` keeps at most PRACTICESYNC_DEAD_LETTER_CAP refused frames per practice and
  clock hour; beyond that they are counted in `DeadLetterOverflow`, their bodies dropped.
- `process_inbox` applies accepted rows of one practice in arrival (id) order: it claims a batch
  with a conditional UPDATE (accepted -> processing), only while no other batch of the practice
  is in hand, so two workers never apply one row, nor one patient's messages out of order.
  Consecutive ADT rows go through the patient sync rules as one partial run (`patients_partial`),
  consecutive ORU^R01 rows through `import_result_rows`, consecutive SIU rows through
  `import_appointment_rows` (so a booking pauses the patient's sequence). A row whose message
  is refused or fails becomes a dead letter with the reason.
- Dead letters are grouped in incidents (the id of the first dead letter while none is open):
  one alert (log line and an open `hl7_dead_letter` review item) per incident. `reprocess_dead`
  puts them back in the queue; the imports are idempotent, so repeating it is safe.
"""

import datetime as dt
import hashlib
import logging
import re
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from practicesync.patients.models import ReviewItem
from practicesync.patients.sync import sync_patient_list
from practicesync.practices.models import Practice
from practicesync.runtime.locks import Busy
from practicesync.runtime.processes import is_alive, this_process

from .feeds import _mapped
from .mapping import map_oru, map_siu, unsupported
from .models import DeadLetterOverflow, InboundMessage
from .parse import MessageError, parse_payload

log = logging.getLogger(__name__)

ACTOR = "hl7:mllp"
State = InboundMessage.State
# A batch claimed longer ago than this belongs to a worker that died: it may be claimed again
# (at once when its process is known to be gone, _claim).
STALE_CLAIM = dt.timedelta(minutes=10)
_NAME = re.compile(r"(\d{12})\.hl7\b")
# The listener rejects from several threads; the cap's count-then-insert must not interleave.
_REJECT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Stored:
    row_id: int
    duplicate: bool
    state: str
    error: str = ""
    # The key was taken by a message with other content: not a resend, so not acknowledged.
    conflict: bool = False


def _fresh() -> None:
    """The listener's threads keep their connections: drop a broken or expired one first
    (never inside a transaction, whose connection is not ours to close)."""
    if not connection.in_atomic_block:
        close_old_connections()


def _durable() -> None:
    """SQLite runs with synchronous=NORMAL (WAL), which may lose the last commits on power
    loss; an ACK promises the message is kept, so this connection syncs every commit."""
    if connection.vendor == "sqlite" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=FULL")


def _key(header) -> dict:
    return {"sending_application": header.sending_application,
            "sending_facility": header.sending_facility,
            "control_id": header.control_id or None}


def accept(practice_id: int, header, raw: bytes) -> Stored:
    """Store a frame whose MSH was read; committed when this returns."""
    _fresh()
    _durable()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        with transaction.atomic():
            row = InboundMessage.objects.create(
                practice_id=practice_id, raw=raw, message_type=header.message_type[:40],
                digest=digest, **_key(header))
        return Stored(row.id, False, row.state)
    except IntegrityError:
        found = (InboundMessage.objects.filter(practice_id=practice_id, refused=False,
                                               **_key(header))
                 .values_list("id", "state", "error", "digest").first())
        if found is None:
            raise
        return Stored(found[0], True, found[1], found[2], conflict=found[3] != digest)


# The hot path's INSERT, by hand: the ORM's bulk_create costs more listener CPU per frame than
# the database does (model instances, SQL compiling, and on PostgreSQL Django's client-side
# binding quotes every raw body in Python).
# Every column without a database default (Django sets defaults in Python): a column left out
# fails the group INSERT, and every frame is then stored one by one (test_mllp.py checks).
_COLUMNS = ("practice_id", "received_at", "sending_application", "sending_facility",
            "control_id", "message_type", "raw", "state", "error", "alerted", "refused", "digest",
            "claimed_by")


def _insert_rows(practice_id: int, items: list[tuple[object, bytes]]) -> list[int]:
    """One multi-row INSERT of accepted frames; their ids, in order. Inside a transaction."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params: list = []
    for header, raw in items:
        key = _key(header)
        params += [practice_id, now, key["sending_application"], key["sending_facility"],
                   key["control_id"], header.message_type[:40], raw, State.ACCEPTED, "", False,
                   False, hashlib.sha256(raw).hexdigest(), ""]
    row = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    sql = (f"INSERT INTO {connection.ops.quote_name(InboundMessage._meta.db_table)} "
           f"({', '.join(_COLUMNS)}) VALUES {', '.join([row] * len(items))} RETURNING id")
    if connection.vendor == "postgresql":
        import psycopg

        # Server-side binding: the raw bodies go to the server as binary parameters.
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, params)
            return [found[0] for found in cursor.fetchall()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [found[0] for found in cursor.fetchall()]


def _accept_alone(practice_id: int, header, raw: bytes) -> Stored | Exception:
    try:
        return accept(practice_id, header, raw)
    except Exception as e:  # noqa: BLE001 - this frame gets AE, the others of its group not
        return e


def accept_many(practice_id: int, items: list[tuple[object, bytes]]) -> list[Stored | Exception]:
    """Group commit: store frames whose MSH was read in one transaction (one multi-row INSERT,
    a group of one too); for each, what `accept` would have said, or the exception that frame
    alone raised.

    A key repeated inside the group is left for after the INSERT, so it meets its first copy
    as `accept` would (a resend, or a conflict). When the INSERT fails (a key already stored:
    a resend; or a frame the database will not take) the group is stored one frame at a time,
    in arrival order, so one frame's failure is never another's."""
    _fresh()
    _durable()
    outcomes: list[Stored | Exception | None] = [None] * len(items)
    first, seen = [], set()
    for index, (header, _) in enumerate(items):
        key = tuple(_key(header).values())
        if key not in seen:
            first.append(index)
            seen.add(key)
    try:
        with transaction.atomic():
            ids = _insert_rows(practice_id, [items[index] for index in first])
    except Exception:  # noqa: BLE001 - usually a unique violation: a resend; one by one
        log.debug("hl7 inbox: a group of %s frames is stored one by one", len(items))
    else:
        for index, row_id in zip(first, ids, strict=True):
            outcomes[index] = Stored(row_id, False, State.ACCEPTED)
    for index, item in enumerate(items):
        if outcomes[index] is None:
            outcomes[index] = _accept_alone(practice_id, *item)
    return outcomes


def reject(practice_id: int, header, raw: bytes, reason: str) -> int | None:
    """Keep a frame refused on arrival as a dead letter (once per MSH key); its row id. Over
    the practice's hourly cap only counted (None): see `DeadLetterOverflow`."""
    _fresh()
    _durable()
    now = timezone.now()
    with _REJECT_LOCK, transaction.atomic():
        if _over_cap(practice_id, now):
            _count_overflow(practice_id, now, reason)
            return None
        row = InboundMessage.objects.create(
            practice_id=practice_id, raw=raw, message_type=header.message_type[:40],
            state=State.DEAD, error=reason, received_at=now, processed_at=now, refused=True,
            digest=hashlib.sha256(raw).hexdigest(), **_key(header))
        _open_incident(practice_id, [row.id])
    return row.id


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _over_cap(practice_id: int, now: dt.datetime) -> bool:
    cap = settings.PRACTICESYNC_DEAD_LETTER_CAP
    kept = (InboundMessage.objects.filter(practice_id=practice_id, refused=True,
                                          received_at__gte=_hour(now))
            .values("id")[:cap].count())    # bounded: never counts past the cap
    return kept >= cap


def _count_overflow(practice_id: int, now: dt.datetime, reason: str) -> None:
    """Count a frame over the cap in its hour's row. A flood is one incident with one warning:
    a row for the previous hour means the same flood goes on."""
    hour = _hour(now)
    rows = DeadLetterOverflow.objects.filter(practice_id=practice_id)
    if rows.filter(hour=hour).update(dropped=F("dropped") + 1, last_at=now,
                                     last_reason=reason[:500]):
        return
    try:
        with transaction.atomic():
            DeadLetterOverflow.objects.create(practice_id=practice_id, hour=hour, dropped=1,
                                              first_at=now, last_at=now, last_reason=reason[:500])
    except IntegrityError:      # another listener process counted first
        rows.filter(hour=hour).update(dropped=F("dropped") + 1, last_at=now)
        return
    if not rows.filter(hour=hour - dt.timedelta(hours=1)).exists():
        # Only ids and counts: the reason may quote what the sender sent.
        log.warning("hl7 dead-letter cap reached for practice %s: %s refused messages kept "
                    "this hour; further refused messages are answered but only counted "
                    "(hl7v2.DeadLetterOverflow)", practice_id, settings.PRACTICESYNC_DEAD_LETTER_CAP)


def outcome(row_id: int) -> tuple[str, str]:
    _fresh()
    return InboundMessage.objects.values_list("state", "error").get(id=row_id)


def permitted(practice_id: int) -> bool:
    _fresh()
    practice = Practice.objects.filter(id=practice_id).first()
    return practice is not None and practice.sync_permitted


# --- processing ------------------------------------------------------------------------------

class _Lost(Exception):
    """Another worker holds part of the batch: back off."""


def _claim(practice_id: int, limit: int) -> list[int]:
    now = timezone.now()
    stale = now - STALE_CLAIM
    rows = InboundMessage.objects.filter(practice_id=practice_id)
    try:
        with transaction.atomic():
            holders = set(rows.filter(state=State.PROCESSING, claimed_at__gt=stale)
                          .values_list("claimed_by", flat=True).distinct())
            # A batch is one process's until its claim is stale, unless that process is
            # known to be gone (killed on this host): then it is taken over at once.
            if any(is_alive(holder) is not False for holder in holders):
                return []
            claimable = (Q(state=State.ACCEPTED)
                         | Q(state=State.PROCESSING, claimed_at__lte=stale)
                         | Q(state=State.PROCESSING, claimed_by__in=holders))
            ids = list(rows.filter(claimable).order_by("id").values_list("id", flat=True)[:limit])
            if not ids:
                return []
            claimed = (rows.filter(claimable, id__in=ids)
                       .update(state=State.PROCESSING, claimed_at=now,
                               claimed_by=this_process()))
            if claimed != len(ids):
                raise _Lost
            return ids
    except _Lost:
        return []


def process_inbox(practice: Practice | int, *, limit: int = 500) -> int:
    """Apply up to `limit` accepted rows of the practice, oldest first; how many were done
    (processed or dead). 0 when there is nothing to do, another worker is busy with the
    practice, or the practice's permission is off (rows wait)."""
    _fresh()
    # Fresh from the database: the permission may have been withdrawn since.
    practice = Practice.objects.get(id=practice if isinstance(practice, int) else practice.id)
    if not practice.sync_permitted:
        return 0
    ids = _claim(practice.id, limit)
    if not ids:
        return 0
    rows = list(InboundMessage.objects.filter(id__in=ids).order_by("id")
                .only("id", "message_type", "raw", "incident"))
    runs = list(_runs(rows))
    for n, run in enumerate(runs):
        try:
            _apply_run(practice, run)
        except Busy:
            # The practice list is being synced: these rows wait for the next pass, in
            # their order (kinds never overtake each other).
            waiting = InboundMessage.objects.filter(
                id__in=[row.id for later in runs[n:] for row in later],
                state=State.PROCESSING).update(state=State.ACCEPTED, claimed_by="")
            return len(rows) - waiting
    return len(rows)


def process_all_inboxes(limit: int = 500) -> int:
    """One pass of every permitted practice's inbox (the worker's loop calls this)."""
    done = 0
    practice_ids = (InboundMessage.objects.filter(state__in=[State.ACCEPTED, State.PROCESSING])
                    .values_list("practice_id", flat=True).distinct())
    for practice_id in list(practice_ids):
        done += process_inbox(practice_id, limit=limit)
    return done


def _kind(row: InboundMessage) -> str:
    code = row.message_type.split("^")[0]
    return code if code in ("ADT", "SIU") else "ORU"


def _runs(rows: list[InboundMessage]) -> Iterable[list[InboundMessage]]:
    """Consecutive rows of one kind: applied together, and kinds never overtake each other."""
    run: list[InboundMessage] = []
    for row in rows:
        if run and _kind(run[0]) != _kind(row):
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def _apply_run(practice: Practice, run: list[InboundMessage]) -> None:
    try:
        with transaction.atomic():
            apply = {"ADT": _apply_adt, "SIU": _apply_siu}.get(_kind(run[0]), _apply_oru)
            errors = apply(practice, run)
            _finish(practice, run, errors)
    except Busy:
        raise  # nothing wrong with the rows: they wait
    except Exception as e:  # noqa: BLE001 - one bad row must not hold back the others
        if len(run) > 1:
            for row in run:
                _apply_run(practice, [row])
            return
        log.exception("hl7 inbox row %s could not be applied", run[0].id)
        with transaction.atomic():
            _finish(practice, run, {run[0].id: [f"could not be applied ({type(e).__name__})"]})


def _apply_oru(practice: Practice, run: list[InboundMessage]) -> dict[int, list[str]]:
    from practicesync.results.importer import import_result_rows

    errors: dict[int, list[str]] = {}
    result_rows = []
    for row in run:
        for item in parse_payload(bytes(row.raw)):
            if isinstance(item, MessageError):
                errors.setdefault(row.id, []).append(_describe(item))
            elif item.message_type != "ORU^R01":
                errors.setdefault(row.id, []).append(
                    _describe(unsupported(item, "ORU^R01 for results")))
            else:
                mapped = _mapped(map_oru, item, pms=practice.pms,
                                 pms_id_system=practice.pms_id_system)
                errors.setdefault(row.id, []).extend(_describe(e) for e in mapped.errors)
                result_rows += [(row.id, result) for result in mapped.results]
    report = import_result_rows(practice=practice, raw_rows=result_rows, actor=ACTOR)
    for error in report.errors:
        errors.setdefault(error["row"], []).append(f"{error['field']}: {error['message']}")
    return errors


def _apply_siu(practice: Practice, run: list[InboundMessage]) -> dict[int, list[str]]:
    from practicesync.appointments.importer import import_appointment_rows

    errors: dict[int, list[str]] = {}
    rows = []
    for row in run:
        for item in parse_payload(bytes(row.raw)):
            if isinstance(item, MessageError):
                errors.setdefault(row.id, []).append(_describe(item))
            else:
                mapped = _mapped(map_siu, item, pms=practice.pms,
                                 pms_id_system=practice.pms_id_system)
                errors.setdefault(row.id, []).extend(_describe(e) for e in mapped.errors)
                rows += [(row.id, appointment) for appointment in mapped.appointments]
    report = import_appointment_rows(practice=practice, raw_rows=rows, actor=ACTOR,
                                     source_kind="hl7")
    for error in report.errors:
        if error["field"] == "pms_id":
            # Stored unmatched, as from a file: the appointment is kept and counts once the
            # patient is on the list, so the message is not a dead letter.
            continue
        errors.setdefault(error["row"], []).append(f"{error['field']}: {error['message']}")
    return errors


def _apply_adt(practice: Practice, run: list[InboundMessage]) -> dict[int, list[str]]:
    errors: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="practicesync-hl7-inbox-") as folder:
        for row in run:
            Path(folder, f"{row.id:012d}.hl7").write_bytes(bytes(row.raw))
        # Inside this batch's transaction: a sync of the practice already running means the
        # batch waits (locks.Busy), not this transaction.
        report = sync_patient_list(practice=practice, source=folder, actor=ACTOR, fmt="hl7",
                                   partial=True, wait=False)
    for error in report.errors:
        found = _NAME.match(error["message"])
        row_id = int(found.group(1)) if found else run[0].id
        text = error["message"][found.end():].lstrip(":") if found else error["message"]
        errors.setdefault(row_id, []).append(f"{error['field']}: {text}".strip(": "))
    if report.failure:
        for row in run:
            errors.setdefault(row.id, []).append(report.failure)
    return errors


def _describe(error: MessageError) -> str:
    return f"{error.where}: {error.reason}" if error.where else error.reason


def _finish(practice: Practice, run: list[InboundMessage], errors: dict[int, list[str]]) -> None:
    now = timezone.now()
    dead = [row.id for row in run if errors.get(row.id)]
    for row_id in dead:
        InboundMessage.objects.filter(id=row_id).update(
            state=State.DEAD, error="; ".join(errors[row_id])[:10000], processed_at=now)
    good = [row.id for row in run if row.id not in dead]
    if good:
        InboundMessage.objects.filter(id__in=good).update(state=State.PROCESSED, error="",
                                                          processed_at=now)
    if dead:
        _open_incident(practice.id, dead)
    _close_incidents(practice.id)


# --- dead letters ----------------------------------------------------------------------------

def _incident_key(incident: int) -> str:
    return f"hl7_dead_letter:{incident}"


def _open_incident(practice_id: int, row_ids: list[int]) -> None:
    """Attach new dead letters to the practice's open incident, or open one (and alert once).
    Rows already in an incident (processed again and failed again) keep theirs."""
    rows = InboundMessage.objects.filter(id__in=row_ids, incident__isnull=True)
    if not rows.exists():
        return
    current = (InboundMessage.objects.filter(practice_id=practice_id, state=State.DEAD,
                                             incident__isnull=False)
               .order_by("-incident").values_list("incident", flat=True).first())
    if current is not None:
        rows.update(incident=current)
        return
    incident = min(row_ids)
    rows.update(incident=incident)
    InboundMessage.objects.filter(id=incident).update(alerted=True)
    count = len(row_ids)
    ReviewItem.objects.get_or_create(
        practice_id=practice_id, key=_incident_key(incident),
        defaults={"kind": "hl7_dead_letter",
                  "detail": f"HL7 messages could not be used (dead-letter incident {incident}, "
                            f"{count} message(s) so far). Fix the cause, then run `practicesync "
                            f"hl7 reprocess --practice <slug>`."})
    # Only ids: the reasons may quote patient data, which never goes to the logs.
    log.error("hl7 dead-letter incident %s opened for practice %s (inbox row %s)", incident,
              practice_id, incident)


def _close_incidents(practice_id: int) -> None:
    """An incident none of whose messages is still dead is over: its review item resolved."""
    open_items = ReviewItem.objects.filter(practice_id=practice_id, kind="hl7_dead_letter",
                                           status=ReviewItem.Status.OPEN)
    for item in open_items:
        incident = int(item.key.rsplit(":", 1)[1])
        if not InboundMessage.objects.filter(practice_id=practice_id, incident=incident,
                                             state=State.DEAD).exists():
            item.status = ReviewItem.Status.RESOLVED
            item.save(update_fields=["status"])


def reprocess_dead(practice: Practice, *, limit: int = 500) -> dict:
    """Put every dead letter of the practice back in the queue and process the queue. Safe to
    repeat: the imports are idempotent and incidents are not alerted again."""
    queued = (InboundMessage.objects.filter(practice=practice, state=State.DEAD)
              .update(state=State.ACCEPTED, claimed_at=None))
    done = 0
    while True:
        n = process_inbox(practice, limit=limit)
        if not n:
            break
        done += n
    states = InboundMessage.objects.filter(practice=practice)
    return {"requeued": queued, "processed": done,
            "dead": states.filter(state=State.DEAD).count(),
            "waiting": states.filter(state__in=[State.ACCEPTED, State.PROCESSING]).count()}
