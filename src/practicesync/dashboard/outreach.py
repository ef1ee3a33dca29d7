"""Staff pages of the outreach engine: sequence buttons on Results, staff tasks, messages and
the local outbox, and the patient page's Message form.

Every view fetches the practice through `access_practice` (404 for anyone who is not a
member) and every object through a query filtered by that practice. Actions are POST only;
the membership is checked first, so a non-member gets 404 whatever the method.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseNotAllowed, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from practicesync.outreach.actions import NotAllowed, change_sequence, mark_task_done
from practicesync.outreach.messaging import DIRECT_CHANNELS, Refused, send_message
from practicesync.outreach.models import Message, OutboxEntry, StaffTask
from practicesync.outreach.sequences import Event
from practicesync.patients.models import Patient
from practicesync.practices.access import access_practice
from practicesync.results.models import ResultGroup

from .results import STAFF_EVENT_DONE, STAFF_EVENTS

PAGE_SIZE = 50
NOTE_LENGTH = 200  # the audit record's "why"
# The Results page's own query parameters, kept when a button sends staff back to it.
RESULTS_QUERY = ("disposition", "state", "page")
CHANNEL_WORDS = {"sms": "SMS", "email": "Email"}


def actor_of(user) -> str:
    """Who did it, as the audit log records staff (the same as Recalls > Summary)."""
    return user.email or user.username


def _post_only(request):
    return None if request.method == "POST" else HttpResponseNotAllowed(["POST"])


@login_required
def sequence_action(request, practice, group_id, event):
    """Start, Pause, Cancel or Restart a group's sequence from the Results page."""
    practice, _ = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    group = get_object_or_404(ResultGroup.objects.select_related("sequence"),
                              practice=practice, id=group_id)
    if event not in STAFF_EVENTS or not hasattr(group, "sequence"):
        raise Http404("No such sequence action")
    event = Event(event)
    if group.state == ResultGroup.State.DONE:
        messages.error(request, "Not changed: this group's results are marked done.")
    else:
        try:
            change_sequence(actor=actor_of(request.user), sequence=group.sequence, event=event)
        except NotAllowed as e:
            # The state machine's reason ("cannot start a sequence that is active"): no
            # patient details, so it may travel in the messages cookie.
            messages.error(request, f"Not changed: {e}.")
        else:
            messages.success(request, STAFF_EVENT_DONE[event])
    back = QueryDict(mutable=True)
    sent_back = QueryDict(request.POST.get("back", ""))
    for key in RESULTS_QUERY:
        if sent_back.get(key):
            back[key] = sent_back[key]
    url = reverse("results", kwargs={"practice": practice.slug})
    return redirect(f"{url}?{back.urlencode()}#group-{group.id}" if back
                    else f"{url}#group-{group.id}")


@login_required
def tasks(request, practice):
    """Staff tasks: calls, letters and sends to check, open ones first."""
    practice, _ = access_practice(request.user, practice)
    show_done = request.GET.get("show") == "done"
    shown = StaffTask.objects.filter(practice=practice).select_related("patient")
    if not show_done:
        shown = shown.filter(status=StaffTask.Status.OPEN)
    page = Paginator(shown.order_by("-status", "created_at", "id"), PAGE_SIZE).get_page(
        request.GET.get("page"))
    return render(request, "dashboard/tasks.html", {
        "practice": practice, "page": page, "show_done": show_done,
        "open_count": StaffTask.objects.filter(practice=practice,
                                               status=StaffTask.Status.OPEN).count(),
        "note_length": NOTE_LENGTH})


@login_required
def task_done(request, practice, task_id):
    practice, _ = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    task = get_object_or_404(StaffTask, practice=practice, id=task_id)
    was_open = task.status == StaffTask.Status.OPEN
    note = " ".join(request.POST.get("note", "").split())[:NOTE_LENGTH]
    mark_task_done(actor=actor_of(request.user), task=task, note=note)
    if was_open:
        messages.success(request, "Task marked done.")
    else:
        messages.info(request, "That task was already done.")
    url = reverse("tasks", kwargs={"practice": practice.slug})
    return redirect(f"{url}?show=done" if request.POST.get("show") == "done" else url)


@login_required
def message_list(request, practice):
    """Every message of the practice, newest first."""
    practice, _ = access_practice(request.user, practice)
    shown = Message.objects.filter(practice=practice).select_related("patient")
    page = Paginator(shown.order_by("-created_at", "-id"), PAGE_SIZE).get_page(
        request.GET.get("page"))
    return render(request, "dashboard/messages.html", {"practice": practice, "page": page})


@login_required
def outbox(request, practice):
    """The local outbox provider's rows: exactly what would have been sent."""
    practice, _ = access_practice(request.user, practice)
    page = Paginator(OutboxEntry.objects.filter(practice=practice).order_by("-created_at", "-id"),
                     PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/outbox.html", {"practice": practice, "page": page})


def patient_context(practice, patient, **extra) -> dict:
    # Imported here: patient_pages builds its views on this module's helpers.
    from .patient_pages import patient_sections

    return {"practice": practice, "patient": patient,
            "reviews": patient.review_items.filter(status="open"),
            "patient_messages": patient.messages.filter(practice=practice)
            .order_by("-created_at", "-id")[:PAGE_SIZE],
            "channels": [(c, CHANNEL_WORDS.get(c, c)) for c in DIRECT_CHANNELS],
            "form": {"channel": "sms", "subject": "", "body": ""}} \
        | patient_sections(practice, patient) | extra


@login_required
def patient_message(request, practice, pms_id):
    """The patient page's Message form: one SMS or email from staff."""
    practice, _ = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    patient = get_object_or_404(Patient, practice=practice, pms_id=pms_id)
    form = {k: request.POST.get(k, "") for k in ("channel", "subject", "body")}
    error = None
    if form["channel"] not in DIRECT_CHANNELS:
        error = "Not sent: choose SMS or email."
    else:
        try:
            send_message(actor=actor_of(request.user), patient=patient, channel=form["channel"],
                         body=form["body"],
                         subject=form["subject"] if form["channel"] == "email" else "")
        except Refused as e:
            # Shown on the page, not through the messages cookie: the reason is about the
            # patient (deceased, opted out, no mobile...).
            error = f"Not sent: {e.reason}."
    if error is not None:
        return render(request, "dashboard/patient.html",
                      patient_context(practice, patient, form=form, message_error=error),
                      status=400)
    messages.success(request, "Message queued. It goes out in the practice's send window.")
    return redirect(reverse("patient", kwargs={"practice": practice.slug, "pms_id": pms_id})
                    + "#messages")
