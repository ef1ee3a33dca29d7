"""Staff pages of Patient Sync: the runs (counts, row errors, every field change), "Sync now",
and the review queue where staff settle what the sync would not guess.

Every view fetches the practice through `access_practice` (404 for a non-member) and every
object with `practice=practice`. Changes go through patients/actions.py only.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import F
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse

from practicesync.audit.models import AuditEvent
from practicesync.numbers import whole_number
from practicesync.patients import actions
from practicesync.patients.models import Patient, ReviewItem, SyncRun
from practicesync.patients.reconcile import COUNTERS
from practicesync.patients.tasks import sync_now_waiting
from practicesync.practices.access import SyncNotPermitted, access_practice
from practicesync.practices.models import Membership

from .audit import detail_lines
from .outreach import _post_only, actor_of

PAGE_SIZE = 50
ERRORS_PAGE_SIZE = 100
NOTE_LENGTH = 500
COUNTER_WORDS = {"created": "Created", "updated": "Updated", "unchanged": "Unchanged",
                 "non_digital_created": "Non-digital created",
                 "nhs_numbers_added": "NHS numbers added", "phones_filled": "Phones filled",
                 "needs_review": "Needs review", "left_practice": "Left practice",
                 "deceased": "Deceased"}
# The run list's columns; the run page shows every counter.
LIST_COUNTERS = ("created", "updated", "unchanged", "non_digital_created", "needs_review",
                 "left_practice", "deceased")
SYNC_NOW_ROLES = (Membership.Role.ADMIN, Membership.Role.RECEPTION)
LINKERS = (Membership.Role.ADMIN, Membership.Role.CLINICIAN)
KIND_WORDS = {"patients": "Practice list", "patients_partial": "Patient feed (partial)"}
REVIEW_KIND_WORDS = {
    "ambiguous_match": "Ambiguous match", "possible_match": "Possible match",
    "dob_conflict": "Date of birth differs", "ihi_unverified": "IHI not verified",
    "identifier_conflict": "Identifier conflict", "duplicate_identifier": "Duplicate identifier",
    "identifier_not_added": "Identifier not added", "nhs_number_conflict": "NHS number differs",
    "medicare_number_conflict": "Medicare number differs", "ihi_conflict": "IHI differs",
    "deceased_reported_alive": "Deceased, listed alive", "truncated_list": "Truncated list",
    "pms_merge": "PMS merged patients", "unmatched_result": "Result for unknown patient",
    "outreach_failed": "Outreach failed", "hl7_dead_letter": "HL7 messages failed",
}
RESOLUTION_WORDS = {actions.LINKED_BY_STAFF: "Linked", actions.NOT_SAME: "Kept separate",
                    actions.IGNORED: "Ignored"}


def _settings_url(practice) -> str | None:
    """The Settings page owns the schedule; linked when the page exists."""
    try:
        return reverse("settings", kwargs={"practice": practice.slug})
    except NoReverseMatch:
        return None


def _counts(run: SyncRun) -> list[tuple[str, int]]:
    extra = [k for k in run.counts if k not in COUNTER_WORDS]
    return [(COUNTER_WORDS.get(k, k), run.counts.get(k, 0)) for k in (*COUNTERS, *extra)]


@login_required
def sync_runs(request, practice):
    """The practice's sync runs, newest first, with the schedule and "Sync now"."""
    practice, membership = access_practice(request.user, practice)
    page = Paginator(SyncRun.objects.filter(practice=practice).order_by("-started_at", "-id"),
                     PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/sync_runs.html", {
        "practice": practice, "page": page,
        "rows": [(run, KIND_WORDS.get(run.kind, run.kind),
                  [run.counts.get(k, 0) for k in LIST_COUNTERS]) for run in page],
        "counter_words": [COUNTER_WORDS[k] for k in LIST_COUNTERS],
        "can_sync_now": membership.role in SYNC_NOW_ROLES,
        "waiting": sync_now_waiting(practice), "settings_url": _settings_url(practice)})


@login_required
def sync_run(request, practice, run_id):
    """One run: its counts, row errors and every change it made, per patient."""
    practice, _ = access_practice(request.user, practice)
    run = get_object_or_404(SyncRun, practice=practice, id=run_id)
    changes = Paginator(AuditEvent.objects.filter(practice=practice, sync_run=run)
                        .select_related("patient").order_by("id"), PAGE_SIZE).get_page(
        request.GET.get("page"))
    errors = Paginator(run.errors, ERRORS_PAGE_SIZE).get_page(request.GET.get("errors_page"))
    return render(request, "dashboard/sync_run.html", {
        "practice": practice, "run": run, "counts": _counts(run), "errors": errors,
        "changes": changes, "kind": KIND_WORDS.get(run.kind, run.kind),
        "events": [(e, e.detail.get("changes") or [], detail_lines(
            {k: v for k, v in e.detail.items() if k != "changes"})) for e in changes],
        "reviews": [(r, REVIEW_KIND_WORDS.get(r.kind, r.kind)) for r in
                    ReviewItem.objects.filter(practice=practice, sync_run=run).order_by("id")]})


@login_required
def sync_now(request, practice):
    """Queue what `practicesync sync now` does; the worker runs it as this staff member."""
    practice, _ = access_practice(request.user, practice, roles=SYNC_NOW_ROLES)
    if (refused := _post_only(request)) is not None:
        return refused
    try:
        _, queued = actions.queue_sync_now(actor=actor_of(request.user), practice=practice)
    except SyncNotPermitted:
        messages.error(request, "Not queued: Patient Sync is off until an admin records the "
                                "practice's permission and DPIA reference in Settings.")
    except actions.NoListSource as e:
        messages.error(request, f"Not queued: {e}")
    else:
        if queued:
            messages.success(request, "Sync queued. The worker runs it shortly; the run is "
                                      "listed here once it starts.")
        else:
            messages.info(request, "A sync is already waiting to run.")
    return redirect("sync_runs", practice=practice.slug)


@login_required
def review_queue(request, practice):
    """Open review items (oldest first, so nothing waits forever) and the settled ones."""
    practice, _ = access_practice(request.user, practice)
    items = ReviewItem.objects.filter(practice=practice)
    kind = request.GET.get("kind", "")
    open_items = items.filter(status=ReviewItem.Status.OPEN)
    kinds = sorted(set(open_items.values_list("kind", flat=True)))
    if kind in kinds:
        open_items = open_items.filter(kind=kind)
    else:
        kind = ""
    page = Paginator(open_items.order_by("created_at", "id"), PAGE_SIZE).get_page(
        request.GET.get("page"))
    done = Paginator(items.exclude(status=ReviewItem.Status.OPEN)
                     .order_by(F("resolved_at").desc(nulls_last=True), "-id"), PAGE_SIZE).get_page(
        request.GET.get("done_page"))
    return render(request, "dashboard/review_queue.html", {
        "practice": practice, "page": page, "done": done, "kind": kind,
        "kinds": [(k, REVIEW_KIND_WORDS.get(k, k)) for k in kinds],
        "open_rows": [(i, REVIEW_KIND_WORDS.get(i.kind, i.kind)) for i in page],
        "done_rows": [(i, REVIEW_KIND_WORDS.get(i.kind, i.kind),
                       RESOLUTION_WORDS.get(i.resolution, i.get_status_display())) for i in done],
        "open_count": items.filter(status=ReviewItem.Status.OPEN).count()})


ROWS = (("Name", None), ("Date of birth", "date_of_birth"), ("Sex", "sex"),
        ("PMS id", "pms_id"), ("Account id", "account_id"), ("NHS number", "nhs_number"),
        ("Medicare", "medicare_number"), ("IHI", "ihi"), ("Mobile", "mobile_phone"),
        ("Email", "email"), ("Status", "status"))


def _side_by_side(patients: list[Patient]) -> list[dict]:
    """One row per fact, one cell per record; a fact the records disagree on is marked."""
    rows = []
    for label, name in ROWS:
        if name is None:
            cells = [f"{p.title} {p.given_name} {p.family_name.upper()}".strip()
                     for p in patients]
        elif name == "date_of_birth":
            cells = [p.date_of_birth.strftime("%d/%m/%Y") for p in patients]
        elif name == "status":
            cells = [p.get_status_display() for p in patients]
        else:
            cells = [getattr(p, name) or "" for p in patients]
        rows.append({"label": label, "cells": cells,
                     "differs": len({c for c in cells if c}) > 1})
    return rows


def _item_context(practice, membership, item: ReviewItem, **extra) -> dict:
    patients = list(item.patients.filter(practice=practice).order_by("id"))
    pairs = actions.link_pairs(item, patients) if membership.role in LINKERS else []
    return {"practice": practice, "item": item, "patients": patients,
            "rows": _side_by_side(patients),
            "pairs": [{"value": f"{lp.id}:{ap.id}", "list": lp, "account": ap,
                       "dob_differs": lp.date_of_birth != ap.date_of_birth} for lp, ap in pairs],
            "dob_differs": any(lp.date_of_birth != ap.date_of_birth for lp, ap in pairs),
            "can_separate": bool(actions.separate_pairs(item, patients)),
            "kind_words": REVIEW_KIND_WORDS.get(item.kind, item.kind),
            "resolution_words": RESOLUTION_WORDS.get(item.resolution, item.get_status_display()),
            "note_length": NOTE_LENGTH, "form": {}, "error": None, "error_for": ""} | extra


@login_required
def review_item(request, practice, item_id):
    practice, membership = access_practice(request.user, practice)
    item = get_object_or_404(ReviewItem.objects.select_related("sync_run"), practice=practice,
                             id=item_id)
    return render(request, "dashboard/review_item.html", _item_context(practice, membership, item))


def _pair(value: str) -> tuple[int, int] | None:
    ids = [whole_number(part, digits=18) for part in value.partition(":")[::2]]
    return None if None in ids else (ids[0], ids[1])


@login_required
def review_resolve(request, practice, item_id, how):
    """Link, keep separate or ignore; a refusal is shown on the item's page, never in a
    cookie (it is about patients)."""
    practice, membership = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    item = get_object_or_404(ReviewItem, practice=practice, id=item_id)
    if how not in RESOLUTION_WORDS:
        raise Http404("No such resolution")
    if how == actions.LINKED_BY_STAFF and membership.role not in LINKERS:
        # Joining two records decides whose results and messages a person gets (H-038).
        raise PermissionDenied("Linking records needs the admin or clinician role")
    form = {k: request.POST.get(k, "") for k in ("pair", "note", "reason", "dob_checked")}
    note = form["note"][:NOTE_LENGTH]
    actor = actor_of(request.user)
    try:
        if how == actions.LINKED_BY_STAFF:
            pair = _pair(form["pair"])
            if pair is None:
                raise actions.ReviewRefused("Choose which list patient the account belongs to.")
            actions.link_review_item(actor=actor, item=item, list_patient_id=pair[0],
                                     account_patient_id=pair[1], note=note,
                                     dob_checked=form["dob_checked"] == "yes")
            done = "Linked: the digital account and the list patient are now one record."
        elif how == actions.NOT_SAME:
            actions.keep_separate(actor=actor, item=item, note=note)
            done = "Kept separate: the sync will not propose these records again."
        else:
            actions.ignore_review_item(actor=actor, item=item,
                                       reason=form["reason"][:NOTE_LENGTH])
            done = "Ignored. The reason is kept with the item."
    except actions.ReviewRefused as e:
        item.refresh_from_db()
        return render(request, "dashboard/review_item.html", _item_context(
            practice, membership, item, form=form, error=str(e), error_for=how), status=400)
    messages.success(request, done)
    return redirect("review_queue", practice=practice.slug)
