from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render

from practicesync.patients.models import Patient, ReviewItem
from practicesync.practices.access import access_practice
from practicesync.practices.models import Membership

PAGE_SIZE = 50


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
    return render(request, "dashboard/patient.html", {
        "practice": practice, "patient": patient,
        "reviews": patient.review_items.filter(status="open")})
