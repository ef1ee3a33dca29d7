"""What the API returns and takes. Rows use the export's keys and meanings
(`practicesync.export/1`, practices/export.py), so the API and the export agree."""

import datetime as dt
from typing import Annotated, Literal

from ninja import Field, ModelSchema, Schema
from pydantic import AfterValidator, field_validator

from practicesync.outreach.models import Channel, Message, Sequence
from practicesync.patients.models import Patient, SyncRun
from practicesync.practices.export import PATIENT_KEYS, _sequence
from practicesync.results.models import ResultGroup

MAX_PAGE = 200
# The largest number the database compares with an id or takes as an offset (a signed 64-bit
# integer); a larger one would fail in the database instead of being refused here.
MAX_INT = 2**63 - 1


def _no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL (0x00): such input is invalid, not a server error."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (0x00) characters")
    return value


# Every text the API takes in (query, body): compared with or stored in the database.
Text = Annotated[str, AfterValidator(_no_nul)]


def _none_if_blank(value):
    """The export writes an empty text as null for these fields."""
    return value or None


class Page(Schema):
    count: int
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class Paging(Schema):
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=MAX_INT)


# --- patients -------------------------------------------------------------------------------

class PatientOut(ModelSchema):
    needs_review: bool

    class Meta:
        model = Patient
        fields = list(PATIENT_KEYS)


class PatientPage(Page):
    items: list[PatientOut]


class PatientFilters(Paging):
    q: Text | None = Field(None, max_length=100,
                          description="family or given name (contains), PMS id or NHS number "
                                      "(exact)")
    digital: bool | None = None
    status: Literal[tuple(Patient.Status.values)] | None = None


# --- results and groups ---------------------------------------------------------------------

class ResultOut(Schema):
    id: int
    result_id: str
    pms_id: str
    test_name: str
    performed_on: dt.date
    performed_at: dt.datetime | None
    reported_on: dt.date | None
    actioned_on: dt.date | None
    action: str | None
    action_kind: str | None
    comment: str | None
    filed_under: str | None
    tab: str | None
    location: str | None
    eligible: bool
    reason: str | None
    group_id: int | None
    notified: str | None

    _blank = field_validator("action", "action_kind", "comment", "filed_under", "tab", "location",
                             "reason", "notified", mode="before")(_none_if_blank)


class ResultPage(Page):
    items: list[ResultOut]


class ResultFilters(Paging):
    pms_id: Text | None = None
    group_id: int | None = Field(None, ge=-MAX_INT, le=MAX_INT)
    eligible: bool | None = None
    performed_from: dt.date | None = None
    performed_to: dt.date | None = None


def sequence_of(group: ResultGroup) -> tuple:
    """(state, next step, due at) of the group's sequence, by the export's own rule."""
    sequence = getattr(group, "sequence", None)  # None: a checklist group has none
    found = {group.id: (sequence.state, sequence.next_position, sequence.due_at)} if sequence else {}
    return _sequence(found, group.id)


class GroupOut(Schema):
    id: int
    pms_id: str | None
    performed_on: dt.date
    action: str
    priority: int
    disposition: Literal[tuple(ResultGroup.Disposition.values)]
    template: str | None
    state: Literal[tuple(ResultGroup.State.values)]
    sequence_state: str | None
    sequence_next_step: int | None
    sequence_due_at: dt.datetime | None
    checklist_done_by: str | None
    checklist_done_at: dt.datetime | None

    _blank = field_validator("checklist_done_by", mode="before")(_none_if_blank)

    @staticmethod
    def resolve_pms_id(group):
        return group.patient.pms_id

    @staticmethod
    def resolve_template(group):
        return group.template.name if group.template else None

    @staticmethod
    def resolve_sequence_state(group):
        return sequence_of(group)[0]

    @staticmethod
    def resolve_sequence_next_step(group):
        return sequence_of(group)[1]

    @staticmethod
    def resolve_sequence_due_at(group):
        return sequence_of(group)[2]


class GroupPage(Page):
    items: list[GroupOut]


class GroupFilters(Paging):
    pms_id: Text | None = None
    state: Literal[tuple(ResultGroup.State.values)] | None = None
    disposition: Literal[tuple(ResultGroup.Disposition.values)] | None = None
    sequence_state: Literal[tuple(Sequence.State.values)] | None = None


SequenceEvent = Literal["start", "pause", "cancel", "restart"]


# --- messages -------------------------------------------------------------------------------

class MessageOut(Schema):
    id: int
    pms_id: str | None
    group_id: int | None
    step: int | None
    channel: str
    to: str
    body: str
    status: Literal[tuple(Message.Status.values)]
    created_at: dt.datetime
    sent_at: dt.datetime | None
    kind: str
    subject: str | None
    delivered_at: dt.datetime | None
    error: str | None
    bulk_id: int | None
    sequence_id: int | None

    _blank = field_validator("subject", "error", mode="before")(_none_if_blank)

    @staticmethod
    def resolve_pms_id(message):
        return message.patient.pms_id


class MessagePage(Page):
    items: list[MessageOut]


class MessageFilters(Paging):
    pms_id: Text | None = None
    group_id: int | None = Field(None, ge=-MAX_INT, le=MAX_INT)
    status: Literal[tuple(Message.Status.values)] | None = None
    channel: Literal[tuple(Channel.values)] | None = None
    kind: Literal[tuple(Message.Kind.values)] | None = None


class MessageIn(Schema):
    pms_id: Text = Field(min_length=1, max_length=64)
    channel: Literal["sms", "email"]
    body: Text = Field(min_length=1, max_length=5000)
    subject: Text = Field("", max_length=200, description="email only")


# --- sync runs ------------------------------------------------------------------------------

class SyncRunOut(Schema):
    id: int
    kind: str
    status: Literal[tuple(SyncRun.Status.values)]
    dry_run: bool = False
    source: str
    triggered_by: str
    counts: dict
    errors: list[dict]
    failure: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_seconds: float | None

    _blank = field_validator("failure", mode="before")(_none_if_blank)


class SyncRunPage(Page):
    items: list[SyncRunOut]


class SyncRunFilters(Paging):
    kind: str | None = None
    status: Literal[tuple(SyncRun.Status.values)] | None = None


class SyncQueued(Schema):
    task_id: str
    status: str = Field(description="the task's status: READY until a worker takes it")
    task_url: str


class SyncTaskOut(Schema):
    task_id: str
    status: str = Field(description="READY, RUNNING, SUCCESSFUL or FAILED")
    sync_run_id: int | None = Field(description="the run it recorded, once finished")


# --- appointments ---------------------------------------------------------------------------

class AppointmentIn(Schema):
    """One booking event, as a row of the appointments CSV. Fields are checked per row
    (like `appointments sync`), so a bad row is reported and the others still apply."""
    appointment_id: Text | None = None
    pms_id: Text | None = None
    starts_at: Text | None = Field(None, description="ISO 8601; practice-local without an offset")
    status: Text | None = Field(None, description="booked, cancelled, dna or attended")


class AppointmentsIn(Schema):
    appointments: list[AppointmentIn] = Field(min_length=1, max_length=1000)


class RowErrorOut(Schema):
    row: int = Field(description="1 for the first appointment of the request")
    pms_id: str | None
    field: str
    message: str


class AppointmentsOut(Schema):
    """The counts and row errors of `appointments sync --json` (importer.COUNTERS)."""
    created: int
    updated: int
    unchanged: int
    unmatched: int
    sequences_paused: int
    sequences_resumed: int
    sequences_completed: int
    errors: list[RowErrorOut]


class ProblemOut(Schema):
    """RFC 9457 problem details (media type application/problem+json). A validation error
    adds `errors` ({location, field, message, type}); a refused message `code`; rejected
    appointment rows `errors` ({row, pms_id, field, message})."""
    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict] | None = None
    code: str | None = None
