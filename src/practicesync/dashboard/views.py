from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Exists, F, OuterRef, Prefetch, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from practicesync.connectors.profiles import get_profile
from practicesync.numbers import is_digits
from practicesync.patients.models import Patient, ReviewItem
from practicesync.practices.access import access_practice
from practicesync.practices.models import Membership
from practicesync.results.actions import NotOnChecklist, mark_checklist_done
from practicesync.results.models import Result, ResultGroup

from .outreach import _post_only, patient_context
from .results import DISPOSITION_WORDS, GroupRow

PAGE_SIZE = 50
DONE_SHOWN = 50


@login_required
def home(request):
    memberships = Membership.objects.filter(user=request.user).select_related("practice")
    if len(memberships) == 1:
        return redirect("patients", practice=memberships[0].practice.slug)
    return render(request, "dashboard/home.html", {"memberships": memberships})


@login_required
def patients(request, practice):
    practice, _ = access_practice(request.user, practice)
    query = request.GET.get("q", "").strip()
    shown = Patient.objects.filter(practice=practice)
    if query:
        shown = shown.filter(Q(family_name__icontains=query) | Q(given_name__icontains=query)
                             | Q(pms_id=query) | Q(nhs_number=query.replace(" ", "")))
    if request.GET.get("digital") in ("yes", "no"):
        shown = shown.filter(digital=request.GET["digital"] == "yes")
    page = Paginator(shown.order_by("family_name", "given_name", "id"), PAGE_SIZE).get_page(
        request.GET.get("page"))
    counts = {
        "all": Patient.objects.filter(practice=practice).count(),
        "digital": Patient.objects.filter(practice=practice, digital=True).count(),
        "review": ReviewItem.objects.filter(practice=practice, status="open").count(),
    }
    last_run = practice.sync_runs.first()
    return render(request, "dashboard/patients.html", {
        "practice": practice, "page": page, "query": query, "counts": counts,
        "last_run": last_run, "digital_filter": request.GET.get("digital", "")})


@login_required
def patient_by_pms_id(request, practice, pms_id):
    """Deep link for a PMS toolbar button: /p/<practice>/patients/<pms_id>."""
    practice, _ = access_practice(request.user, practice)
    patient = get_object_or_404(Patient, practice=practice, pms_id=pms_id)
    return render(request, "dashboard/patient.html", patient_context(practice, patient))


def _groups(practice):
    """The practice's result groups that are on the dashboard: those with at least one
    doctor-actioned, eligible result. Unactioned and wrongly filed results never show, and
    only the eligible results of a group are listed."""
    eligible = Result.objects.filter(group=OuterRef("pk"), eligible=True)
    return (ResultGroup.objects.filter(practice=practice).filter(Exists(eligible))
            .select_related("patient", "template", "sequence")
            .prefetch_related(Prefetch("results", to_attr="shown_results",
                                       queryset=Result.objects.filter(eligible=True)
                                       .order_by("test_name", "id"))))


@login_required
def results(request, practice):
    """Results dashboard: one row per patient per performed day, newest day first."""
    practice, _ = access_practice(request.user, practice)
    groups = _groups(practice)
    disposition = request.GET.get("disposition", "")
    state = request.GET.get("state", "")
    if disposition in DISPOSITION_WORDS:
        groups = groups.filter(disposition=disposition)
    else:
        disposition = ""
    if state in ResultGroup.State.values:
        groups = groups.filter(state=state)
    else:
        state = ""
    page = Paginator(groups.order_by("-performed_on", "patient__family_name",
                                     "patient__given_name", "id"), PAGE_SIZE).get_page(
        request.GET.get("page"))
    rows = [GroupRow.of(group, practice) for group in page]
    all_groups = _groups(practice)
    counts = {
        "all": all_groups.count(),
        "to_tick": all_groups.filter(disposition=ResultGroup.Disposition.CHECKLIST,
                                     state=ResultGroup.State.OPEN,
                                     checklist_done_at__isnull=True).count(),
    }
    return render(request, "dashboard/results.html", {
        "practice": practice, "page": page, "rows": rows, "counts": counts,
        "disposition_filter": disposition, "state_filter": state,
        "dispositions": DISPOSITION_WORDS.items(),
        "carries_results": get_profile(practice.pms).carries_results})


@login_required
def recalls_summary(request, practice):
    """Recalls > Summary: the action checklist of groups staff must handle themselves."""
    practice, _ = access_practice(request.user, practice)
    checklist = _groups(practice).filter(disposition=ResultGroup.Disposition.CHECKLIST)
    to_do = checklist.filter(state=ResultGroup.State.OPEN, checklist_done_at__isnull=True)
    # Most pressing first (Return Urgent before the rest), then whoever has waited longest.
    page = Paginator(to_do.order_by("-priority", "performed_on", "id"), PAGE_SIZE).get_page(
        request.GET.get("page"))
    done = checklist.filter(Q(checklist_done_at__isnull=False) | Q(state=ResultGroup.State.DONE))
    done_count = done.count()
    done = done.order_by(F("checklist_done_at").desc(nulls_last=True), "-performed_on", "-id")
    return render(request, "dashboard/recalls_summary.html", {
        "practice": practice, "page": page,
        "to_do": [GroupRow.of(g, practice) for g in page],
        "done": [GroupRow.of(g, practice) for g in done[:DONE_SHOWN]],
        "done_count": done_count, "done_shown": DONE_SHOWN,
        "carries_results": get_profile(practice.pms).carries_results})


@login_required
def mark_done(request, practice, group_id):
    """Recalls > Summary "Mark done": who and when are kept, and audited."""
    practice, _ = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    group = get_object_or_404(ResultGroup, practice=practice, id=group_id)
    try:
        mark_checklist_done(actor=request.user.email or request.user.username, group=group)
    except NotOnChecklist:
        return render(request, "dashboard/not_on_checklist.html", {
            "practice": practice, "row": GroupRow.of(_groups(practice).filter(id=group.id)
                                                     .first() or group, practice)},
            status=400)
    # No patient details in the message: it travels in a cookie.
    messages.success(request, "Marked done. It is now in the Done list below.")
    back = reverse("recalls_summary", kwargs={"practice": practice.slug})
    page = request.POST.get("page", "")
    return redirect(f"{back}?page={page}" if is_digits(page) and page != "1" else back)
