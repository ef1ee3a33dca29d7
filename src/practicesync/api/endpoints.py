"""The REST API (DESIGN.md section 5): one practice per token, under /api/practices/{slug}/.

Views are thin: they scope every query to the token's practice, and writes go through the
same actions as the dashboard and the CLI, with `api:<token name>` as the actor. See
docs/adr/0015-rest-api.md."""

from typing import Annotated

from django.db.models import Exists, OuterRef, Q
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django_tasks import TaskResultStatus
from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
from ninja import NinjaAPI, Path, Query, Status
from ninja.openapi.docs import Swagger

from practicesync.appointments.importer import import_appointment_rows
from practicesync.outreach.actions import NotAllowed, change_sequence
from practicesync.outreach.messaging import Refused, send_message
from practicesync.outreach.models import Message
from practicesync.outreach.sequences import Event
from practicesync.patients.actions import NoListSource, queue_sync_now
from practicesync.patients.models import Patient, ReviewItem, SyncRun
from practicesync.patients.tasks import patient_sync_now
from practicesync.practices.access import SyncNotPermitted
from practicesync.results.models import Result, ResultGroup

from . import problems
from .auth import TokenAuth, TokenRate, scoped
from .problems import Problem
from .schemas import (
    AppointmentsIn,
    AppointmentsOut,
    GroupFilters,
    GroupOut,
    GroupPage,
    MessageFilters,
    MessageIn,
    MessageOut,
    MessagePage,
    PatientFilters,
    PatientOut,
    PatientPage,
    ProblemOut,
    ResultFilters,
    ResultPage,
    SequenceEvent,
    SyncQueued,
    SyncRunFilters,
    SyncRunOut,
    SyncRunPage,
    SyncTaskOut,
)

DESCRIPTION = """\
One practice's patients, results, result groups, messages and sync runs, and the same
actions staff take in the dashboard.

**Auth**: `Authorization: Bearer psk_<prefix>_<secret>`, a token made by an admin with
`practicesync apitoken create --practice SLUG --name NAME --role admin|clinician|reception`.
The token works only under `/api/practices/<its practice>/`; any other practice is 404.
Its role decides what it may do, as for a staff member: reading, sequences and messages
for every role; posting appointments and running a sync for admin.

**Rate limit**: per token per clock minute (default 600); over it, 429 with `Retry-After`.

**Errors** are RFC 9457 problem details (`application/problem+json`).

**Twilio webhooks** (not under /api, signed by Twilio, no token): delivery receipts at
`/webhooks/twilio/status`, inbound SMS (STOP/START) at `/webhooks/twilio/inbound`; listed
below with the tag *twilio*.
"""


class PracticeSyncAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs):
        schema = super().get_openapi_schema(**kwargs)
        # ninja documents every response as application/json; errors are sent as problems.
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if int(status) >= 400 and "application/json" in content:
                    content[problems.MEDIA_TYPE] = content.pop("application/json")
        schema["paths"].update(_twilio_webhooks())
        return schema


def _twilio_webhooks() -> dict:
    """The Twilio callbacks live in outreach/webhooks.py; documented here, not moved."""
    def post(summary, description):
        return {"post": {
            "tags": ["twilio"], "summary": summary, "description": description, "security": [],
            "requestBody": {"content": {"application/x-www-form-urlencoded": {
                "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}},
            "parameters": [{"name": "X-Twilio-Signature", "in": "header", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "taken (TwiML for inbound)"},
                          "403": {"description": "missing or wrong Twilio signature"}}}}
    return {
        reverse("twilio-status"): post(
            "Twilio delivery receipt",
            "Twilio's status callback (MessageSid, MessageStatus): moves a message to sent, "
            "delivered, read or failed; a failed results step falls back to the next channel."),
        reverse("twilio-inbound"): post(
            "Inbound SMS", "A patient's reply: STOP (and Twilio's other opt-out words) opts the "
                           "number out of SMS, START lifts it."),
    }


api = PracticeSyncAPI(
    title="practicesync API", version="1", description=DESCRIPTION, urls_namespace="api",
    auth=TokenAuth(), throttle=[TokenRate()],
    # Swagger UI from ninja's own static files; no validator badge calling out to the web.
    docs=Swagger(settings={"validatorUrl": None}),
)
problems.install(api)

P = "/practices/{slug}"
ERRORS = {401: ProblemOut, 404: ProblemOut, 422: ProblemOut, 429: ProblemOut}
# 400: a request body that is not JSON at all.
WRITE_ERRORS = {**ERRORS, 400: ProblemOut, 403: ProblemOut, 409: ProblemOut}


def _page(rows, paging) -> dict:
    count = rows.count()
    end = paging.offset + paging.limit
    return {"count": count, "limit": paging.limit, "offset": paging.offset,
            "next_offset": end if end < count else None, "items": list(rows[paging.offset:end])}


# --- patients -------------------------------------------------------------------------------

def _patients(practice):
    in_review = ReviewItem.patients.through.objects.filter(
        patient_id=OuterRef("pk"), reviewitem__status=ReviewItem.Status.OPEN)
    return Patient.objects.filter(practice=practice).annotate(needs_review=Exists(in_review))


@api.get(P + "/patients", response={200: PatientPage, **ERRORS}, tags=["patients"])
def list_patients(request, slug: str, filters: Query[PatientFilters]):
    """The practice's patients by name. `q` finds a name (contains), a PMS id or an NHS
    number (exact), as the Patients page's search does."""
    rows = _patients(scoped(request, slug))
    if query := (filters.q or "").strip():
        rows = rows.filter(Q(family_name__icontains=query) | Q(given_name__icontains=query)
                           | Q(pms_id=query) | Q(nhs_number=query.replace(" ", "")))
    if filters.digital is not None:
        rows = rows.filter(digital=filters.digital)
    if filters.status:
        rows = rows.filter(status=filters.status)
    return _page(rows.order_by("family_name", "given_name", "id"), filters)


@api.get(P + "/patients/{path:pms_id}", response={200: PatientOut, **ERRORS}, tags=["patients"])
def get_patient(request, slug: str,
                # The route's path converter never matches a line break, and PostgreSQL
                # text never holds a NUL: no such id exists.
                pms_id: str = Path(..., pattern=r"^[^\n\x00]+$")):
    """One patient by PMS id (which may hold "/")."""
    return get_object_or_404(_patients(scoped(request, slug)), pms_id=pms_id)


# --- results and groups ---------------------------------------------------------------------

@api.get(P + "/results", response={200: ResultPage, **ERRORS}, tags=["results"])
def list_results(request, slug: str, filters: Query[ResultFilters]):
    """Every stored result, actioned or not (`eligible`, `reason`), oldest first."""
    rows = Result.objects.filter(practice=scoped(request, slug))
    for name in ("pms_id", "group_id", "eligible"):
        if getattr(filters, name) is not None:
            rows = rows.filter(**{name: getattr(filters, name)})
    if filters.performed_from:
        rows = rows.filter(performed_on__gte=filters.performed_from)
    if filters.performed_to:
        rows = rows.filter(performed_on__lte=filters.performed_to)
    return _page(rows.order_by("id"), filters)


def _groups(practice):
    return ResultGroup.objects.filter(practice=practice).select_related(
        "patient", "template", "sequence")


@api.get(P + "/groups", response={200: GroupPage, **ERRORS}, tags=["results"])
def list_groups(request, slug: str, filters: Query[GroupFilters]):
    """Result groups (one patient, one performed day), oldest first."""
    rows = _groups(scoped(request, slug))
    if filters.pms_id:
        rows = rows.filter(patient__pms_id=filters.pms_id)
    if filters.state:
        rows = rows.filter(state=filters.state)
    if filters.disposition:
        rows = rows.filter(disposition=filters.disposition)
    if filters.sequence_state:
        rows = rows.filter(sequence__state=filters.sequence_state)
    return _page(rows.order_by("id"), filters)


@api.get(P + "/groups/{group_id}", response={200: GroupOut, **ERRORS}, tags=["results"])
def get_group(request, slug: str, group_id: int):
    return get_object_or_404(_groups(scoped(request, slug)), id=group_id)


@api.post(P + "/groups/{group_id}/sequence/{event}", response={200: GroupOut, **WRITE_ERRORS},
          tags=["results"])
def change_group_sequence(request, slug: str, group_id: int, event: SequenceEvent):
    """Start, Pause, Cancel or Restart the group's follow-up, as the Results page's buttons
    do. 409 when the sequence's state does not allow it."""
    practice = scoped(request, slug, "sequence")
    group = get_object_or_404(_groups(practice), id=group_id)
    sequence = getattr(group, "sequence", None)
    if sequence is None:
        raise Problem(409, "This group has no sequence: it is on the action checklist or ignored.",
                      kind="no-sequence")
    if group.state == ResultGroup.State.DONE:
        raise Problem(409, "Not changed: this group's results are marked done.", kind="group-done")
    try:
        change_sequence(actor=request.auth.actor, sequence=sequence, event=Event(event))
    except NotAllowed as e:
        raise Problem(409, f"Not changed: {e}.", kind="sequence-not-allowed") from e
    return _groups(practice).get(id=group.id)


# --- messages -------------------------------------------------------------------------------

def _messages(practice):
    return Message.objects.filter(practice=practice).select_related("patient")


@api.post(P + "/messages", response={201: MessageOut, **WRITE_ERRORS}, tags=["messages"])
def post_message(request, slug: str, payload: MessageIn):
    """Queue an SMS or email from staff to one patient; it goes out in the practice's send
    window. Refused as on the patient page: 409 for the patient (deceased, left, opted out,
    no address, under age, a mobile that may not be theirs), 422 for the text."""
    practice = scoped(request, slug, "message")
    patient = Patient.objects.filter(practice=practice, pms_id=payload.pms_id).first()
    if patient is None:
        raise Problem(422, "No patient with this PMS id at this practice.", kind="validation",
                      title="Invalid request", errors=[{
                          "location": "body", "field": "pms_id", "type": "not_found",
                          "message": "no patient with this PMS id at this practice"}])
    try:
        message = send_message(actor=request.auth.actor, patient=patient, channel=payload.channel,
                               body=payload.body,
                               subject=payload.subject if payload.channel == "email" else "")
    except Refused as e:
        status = 422 if e.code == "text" else 409
        raise Problem(status, f"Not sent: {e.reason}.", kind="message-refused", code=e.code,
                      problems=e.problems) from e
    return Status(201, _messages(practice).get(id=message.id))


@api.get(P + "/messages", response={200: MessagePage, **ERRORS}, tags=["messages"])
def list_messages(request, slug: str, filters: Query[MessageFilters]):
    """Messages of every kind (results steps, staff messages, video invites, bulk), newest
    first."""
    rows = _messages(scoped(request, slug))
    if filters.pms_id:
        rows = rows.filter(patient__pms_id=filters.pms_id)
    for name in ("group_id", "status", "channel", "kind"):
        if getattr(filters, name) is not None:
            rows = rows.filter(**{name: getattr(filters, name)})
    return _page(rows.order_by("-id"), filters)


@api.get(P + "/messages/{message_id}", response={200: MessageOut, **ERRORS}, tags=["messages"])
def get_message(request, slug: str, message_id: int):
    """One message and its delivery status."""
    return get_object_or_404(_messages(scoped(request, slug)), id=message_id)


# --- appointments ---------------------------------------------------------------------------

@api.post(P + "/appointments", response={200: AppointmentsOut, 207: AppointmentsOut,
                                         **WRITE_ERRORS}, tags=["appointments"])
def post_appointments(request, slug: str, payload: AppointmentsIn):
    """Booking events from the PMS or a booking system, imported as `appointments sync`
    imports a file: a booking pauses the patient's running follow-up (Pause on Booking), a
    cancellation or did-not-attend resumes it, attending completes it.

    `row` in an error is the appointment's place in the list (1 for the first). 200: every
    row applied. 207: some rows have errors (a rejected row, or an unknown `pms_id`, which
    is stored and counts once the patient is on the list); the rest applied. 422 (problem,
    with `errors`): no row could be applied."""
    practice = scoped(request, slug, "appointments")
    rows = [(n, a.model_dump()) for n, a in enumerate(payload.appointments, start=1)]
    try:
        report = import_appointment_rows(practice=practice, raw_rows=rows,
                                         actor=request.auth.actor, source_kind="api")
    except SyncNotPermitted as e:
        raise Problem(403, str(e), kind="sync-not-permitted") from e
    applied = sum(report.counts[k] for k in ("created", "updated", "unchanged"))
    if not applied:
        raise Problem(422, "No appointment could be applied; see errors.", kind="rows-rejected",
                      errors=report.errors)
    return Status(207 if report.errors else 200, report.as_json())


# --- sync runs ------------------------------------------------------------------------------

@api.post(P + "/sync-runs", response={202: SyncQueued, **WRITE_ERRORS}, tags=["sync"])
def post_sync_run(request, slug: str):
    """Run the practice's configured Patient Sync now (`practicesync sync now`): queued for
    the worker. Follow it at `task_url`; the run then appears under sync-runs."""
    practice = scoped(request, slug, "sync")
    try:
        task_id, _ = queue_sync_now(actor=request.auth.actor, practice=practice)
    except SyncNotPermitted as e:
        raise Problem(403, str(e), kind="sync-not-permitted") from e
    except NoListSource as e:
        raise Problem(409, str(e), kind="no-list-source") from e
    return Status(202, {"task_id": task_id, "status": "READY", "task_url": reverse(
        "api:get_sync_task", kwargs={"slug": practice.slug, "task_id": task_id})})


@api.get(P + "/sync-runs", response={200: SyncRunPage, **ERRORS}, tags=["sync"])
def list_sync_runs(request, slug: str, filters: Query[SyncRunFilters]):
    """Sync runs, newest first."""
    rows = SyncRun.objects.filter(practice=scoped(request, slug))
    for name in ("kind", "status"):
        if getattr(filters, name) is not None:
            rows = rows.filter(**{name: getattr(filters, name)})
    return _page(rows.order_by("-started_at", "-id"), filters)


@api.get(P + "/sync-runs/{run_id}", response={200: SyncRunOut, **ERRORS}, tags=["sync"])
def get_sync_run(request, slug: str, run_id: int):
    return get_object_or_404(SyncRun, practice=scoped(request, slug), id=run_id)


@api.get(P + "/sync-tasks/{task_id}", response={200: SyncTaskOut, **ERRORS}, tags=["sync"])
def get_sync_task(request, slug: str,
                  # A UUID with the database queue, 32 letters and digits with Redis.
                  task_id: Annotated[str, Path(..., pattern=r"^[A-Za-z0-9-]{1,64}$")]):
    """A sync asked for through the API: queued, running, or done with its run's id."""
    practice = scoped(request, slug)
    try:
        task = patient_sync_now.get_result(task_id)
    except (TaskResultDoesNotExist, TaskResultMismatch):  # unknown, or another task's id
        raise Http404 from None
    if task.kwargs.get("practice_id") != practice.id:
        raise Http404
    done = task.status == TaskResultStatus.SUCCESSFUL
    return {"task_id": task.id, "status": task.status,
            "sync_run_id": (task.return_value or {}).get("run_id") if done else None}
