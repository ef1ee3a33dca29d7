"""The patient page's own sections and actions: the history of changes to the record, the
patient's follow-ups, video invites, and non-digital requests (a patient who phoned or came to
the desk), with the practice's list of those requests.

As everywhere in the dashboard, the practice comes from `access_practice` (404 for anyone who
is not a member) and every object from a query filtered by that practice. Actions are POST
only and checked for membership first.
"""

from dataclasses import dataclass, field

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import F, Q
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import urlencode

from practicesync.audit.models import AuditEvent
from practicesync.outreach.messaging import DIRECT_CHANNELS, Refused, invite_to_video
from practicesync.outreach.models import Message, Sequence
from practicesync.patients.actions import add_patient_request, close_patient_request
from practicesync.patients.erasure import ErasureRefused, erase_patient, erasure_refusal
from practicesync.patients.models import Patient, PatientRequest
from practicesync.practices.access import access_practice
from practicesync.practices.actions import record_export
from practicesync.practices.export import export_json
from practicesync.practices.models import Membership

from .outreach import _post_only, actor_of, patient_context

HISTORY_SHOWN = 20
HISTORY_PAGE = 100
PAGE_SIZE = 50
# What happened to the record itself, whoever did it (sync, account import, review queue).
RECORD_ACTIONS = ("patient.created", "patient.updated", "patient.merged")
ACTION_WORDS = {"patient.created": "Created", "patient.updated": "Updated",
                "patient.merged": "Merged into another record",
                "sequence.cancelled": "Follow-up stopped"}
ASSIGNEE_FILTERS = ("mine", "unassigned")
STATUS_FILTERS = ("open", "done", "all")


@dataclass
class HistoryRow:
    event: AuditEvent
    words: str
    changes: list = field(default_factory=list)
    run_url: str | None = None


def sync_run_url(practice, run_id: int) -> str | None:
    """The sync run's page, while the dashboard has one; otherwise the run id is shown as
    text."""
    try:
        return reverse("sync_run", args=[practice.slug, run_id])
    except NoReverseMatch:
        return None


def _history(practice, patient):
    return (AuditEvent.objects.filter(practice=practice, patient=patient)
            .filter(Q(sync_run__isnull=False) | Q(action__in=RECORD_ACTIONS))
            .order_by("-at", "-id"))


def history_rows(practice, events) -> list[HistoryRow]:
    return [HistoryRow(event=e, words=ACTION_WORDS.get(e.action, e.action),
                       changes=e.detail.get("changes", []),
                       run_url=sync_run_url(practice, e.sync_run_id) if e.sync_run_id else None)
            for e in events]


@dataclass
class SequenceRow:
    sequence: Sequence
    next_step: str


def next_step_words(sequence: Sequence, steps: list) -> str:
    """Where a follow-up is: the step it takes next and when, or how it ended."""
    if sequence.state not in Sequence.LIVE:
        return sequence.state_reason or "Nothing more goes out."
    step = next((s for s in steps if s.position == sequence.next_position), None)
    if step is None:
        return "No steps left."
    words = f"Step {step.position} of {len(steps)}: {step.get_channel_display()}"
    if sequence.state == Sequence.State.TO_ACTION_PAUSED:
        return f"{words}, once staff press Start"
    if sequence.state == Sequence.State.PAUSED_BOOKING:
        return f"{words}, if the booking is cancelled or missed"
    return words


def _sequences(practice, patient) -> list[SequenceRow]:
    found = (Sequence.objects.filter(practice=practice, group__patient=patient)
             .select_related("group", "template").prefetch_related("template__steps")
             .order_by("-group__performed_on", "-id"))
    return [SequenceRow(s, next_step_words(s, list(s.template.steps.all()))) for s in found]


class RequestForm(forms.Form):
    reason = forms.CharField(label="What the patient asked for", max_length=200)
    notes = forms.CharField(label="Notes", required=False, widget=forms.Textarea(attrs={"rows": 3}))
    assigned_to = forms.ModelChoiceField(label="Assign to", queryset=Membership.objects.none(),
                                         required=False, empty_label="Nobody yet")
    due_on = forms.DateField(label="Due by (optional)", required=False,
                             widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, practice, **kwargs):
        super().__init__(*args, prefix="request", **kwargs)
        # Only this practice's staff: an id from elsewhere is "not one of the choices".
        field_ = self.fields["assigned_to"]
        field_.queryset = (Membership.objects.filter(practice=practice).select_related("user")
                           .order_by("user__email"))
        field_.label_from_instance = lambda m: f"{m.user.email or m.user.username} ({m.role})"


def _video_link(message: Message) -> str:
    # The invite's text ends with its room link (messaging.invite_to_video).
    return message.body.rsplit(" ", 1)[-1]


def patient_sections(practice, patient) -> dict:
    """The patient page's history, follow-ups, requests and video invite."""
    events = _history(practice, patient)
    video = (Message.objects.filter(practice=practice, patient=patient, kind=Message.Kind.VIDEO)
             .order_by("-created_at", "-id").first())
    return {
        "history": history_rows(practice, events[:HISTORY_SHOWN]),
        "history_count": events.count(),
        "sequences": _sequences(practice, patient),
        "open_requests": PatientRequest.objects.filter(
            practice=practice, patient=patient, status=PatientRequest.Status.OPEN)
        .select_related("assigned_to__user")
        .order_by(F("due_on").asc(nulls_last=True), "created_at", "id"),
        "request_form": RequestForm(practice=practice),
        "video": video, "video_link": _video_link(video) if video else None,
    }


def _patient(practice, pms_id) -> Patient:
    return get_object_or_404(Patient, practice=practice, pms_id=pms_id)


def _back_to_patient(practice, patient, anchor: str):
    return redirect(reverse("patient", kwargs={"practice": practice.slug,
                                               "pms_id": patient.pms_id}) + f"#{anchor}")


@login_required
def patient_history(request, practice, pms_id):
    """Every change to the record, newest first: the patient page shows the latest few."""
    practice, _ = access_practice(request.user, practice)
    patient = _patient(practice, pms_id)
    page = Paginator(_history(practice, patient), HISTORY_PAGE).get_page(request.GET.get("page"))
    return render(request, "dashboard/patient_history.html", {
        "practice": practice, "patient": patient, "page": page,
        "history": history_rows(practice, page)})


@login_required
def patient_video(request, practice, pms_id):
    """Invite the patient to a video consultation: a room link of its own, by SMS or email."""
    practice, _ = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    patient = _patient(practice, pms_id)
    channel = request.POST.get("channel", "")
    if channel not in DIRECT_CHANNELS:
        error = "Not sent: choose SMS or email."
    else:
        try:
            invite_to_video(actor=actor_of(request.user), patient=patient, channel=channel)
        except Refused as e:
            # On the page, not in the messages cookie: the reason is about the patient.
            error = f"Not sent: {e.reason}."
        else:
            messages.success(request, "Video invite queued. The room link is shown below.")
            return _back_to_patient(practice, patient, "video")
    return render(request, "dashboard/patient.html",
                  patient_context(practice, patient, video_error=error, video_channel=channel),
                  status=400)


@login_required
def patient_request_add(request, practice, pms_id):
    """Log a non-digital request (the patient phoned) for a member of staff to do."""
    practice, _ = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    patient = _patient(practice, pms_id)
    form = RequestForm(request.POST, practice=practice)
    if form.is_valid():
        data = form.cleaned_data
        try:
            add_patient_request(actor=actor_of(request.user), patient=patient,
                                reason=data["reason"], notes=data["notes"],
                                assigned_to=data["assigned_to"], due_on=data["due_on"])
        except ValueError as e:
            form.add_error(None, str(e))
        else:
            messages.success(request, "Request added.")
            return _back_to_patient(practice, patient, "requests")
    return render(request, "dashboard/patient.html",
                  patient_context(practice, patient, request_form=form), status=400)


@login_required
def request_done(request, practice, request_id):
    practice, _ = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    found = get_object_or_404(PatientRequest.objects.select_related("patient"), practice=practice,
                              id=request_id)
    was_open = found.status == PatientRequest.Status.OPEN
    close_patient_request(actor=actor_of(request.user), request=found)
    if was_open:
        messages.success(request, "Request marked done.")
    else:
        messages.info(request, "That request was already done.")
    if request.POST.get("back") == "patient" and found.patient.pms_id:
        return _back_to_patient(practice, found.patient, "requests")
    url = reverse("requests", kwargs={"practice": practice.slug})
    query = {k: request.POST[k] for k in ("assignee", "status")
             if request.POST.get(k) in ASSIGNEE_FILTERS + STATUS_FILTERS}
    return redirect(f"{url}?{urlencode(query)}" if query else url)


@login_required
def request_list(request, practice):
    """The practice's non-digital requests: open ones by due date, filterable to "mine"."""
    practice, membership = access_practice(request.user, practice)
    assignee = request.GET.get("assignee", "")
    assignee = assignee if assignee in ASSIGNEE_FILTERS else ""
    status = request.GET.get("status", "open")
    status = status if status in STATUS_FILTERS else "open"
    shown = (PatientRequest.objects.filter(practice=practice)
             .select_related("patient", "assigned_to__user"))
    if assignee == "mine":
        shown = shown.filter(assigned_to=membership)
    elif assignee == "unassigned":
        shown = shown.filter(assigned_to__isnull=True)
    if status != "all":
        shown = shown.filter(status=status)
    # Open first ("open" > "done"), then whatever is due soonest; undated after dated.
    page = Paginator(shown.order_by("-status", F("due_on").asc(nulls_last=True), "created_at",
                                    "id"), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/requests.html", {
        "practice": practice, "page": page, "assignee": assignee, "status": status,
        "today": timezone.now().astimezone(practice.tz).date(),
        "open_count": PatientRequest.objects.filter(
            practice=practice, status=PatientRequest.Status.OPEN).count(),
        "mine_count": PatientRequest.objects.filter(
            practice=practice, status=PatientRequest.Status.OPEN,
            assigned_to=membership).count()})


@login_required
def patient_export(request, practice, pms_id):
    """Everything practicesync holds about one patient (a subject access request), for the
    practice's admins only, audited before the first byte goes."""
    practice, _ = access_practice(request.user, practice, roles=(Membership.Role.ADMIN,))
    patient = _patient(practice, pms_id)
    record_export(actor=actor_of(request.user), practice=practice, via="web", patient=patient)
    response = StreamingHttpResponse(export_json(practice, patient),
                                     content_type="application/json")
    # The practice's own record number only: no name in a file name that lands in Downloads.
    response["Content-Disposition"] = (f'attachment; filename="{practice.slug}-patient-'
                                       f'{patient.id}-export.json"')
    return response


class EraseForm(forms.Form):
    family_name = forms.CharField(label="Type the patient's family name to confirm",
                                  max_length=100)
    reason = forms.CharField(label="The request this erasure answers", max_length=200,
                             help_text="Kept in the audit log: who asked, when, how. No "
                                       "clinical details.")

    def __init__(self, *args, patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.patient = patient

    def clean_family_name(self):
        typed = " ".join(self.cleaned_data["family_name"].split())
        if typed.casefold() != " ".join(self.patient.family_name.split()).casefold():
            raise forms.ValidationError("That is not this patient's family name.")
        return typed


@login_required
def patient_erase(request, practice, pms_id):
    """Erase a non-digital patient's personal data on request (admins only): the page says
    what goes and what stays; the patient's family name typed again confirms it."""
    practice, _ = access_practice(request.user, practice, roles=(Membership.Role.ADMIN,))
    patient = _patient(practice, pms_id)
    refusal = erasure_refusal(patient)
    form = EraseForm(request.POST or None, patient=patient)
    if request.method == "POST" and refusal is None and form.is_valid():
        try:
            erase_patient(actor=actor_of(request.user), practice=practice, pms_id=pms_id,
                          reason=form.cleaned_data["reason"])
        except ErasureRefused as e:
            refusal = str(e)
        else:
            messages.success(request, "The patient's personal data was erased.")
            return _back_to_patient(practice, patient, "history")
    return render(request, "dashboard/patient_erase.html",
                  {"practice": practice, "patient": patient, "refusal": refusal, "form": form},
                  status=400 if request.method == "POST" else 200)
