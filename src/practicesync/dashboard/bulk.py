"""Bulk messages (admins only), on the rails of `outreach.messaging`: a saved and scanned
template, a recipient filter (the CLI's filters), a preview with counts and samples, a
confirm with the count typed in, a second admin's approval over the threshold, the first
batch, then Release; Halt at any time; progress and each recipient's outcome.

Every view fetches the practice through `access_practice` with the admin role (404 for a
non-member, 403 for a member who is not an admin) and every bulk with the practice in the
filter. Reasons shown through the messages cookie name bulks and staff, never a patient.
"""

import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from practicesync.numbers import whole_number
from practicesync.outreach.actions import TextRejected
from practicesync.outreach.messaging import (
    CORRECTION_BATCHES,
    DIRECT_CHANNELS,
    REACHED,
    BadFilter,
    BulkNotAllowed,
    approve_bulk,
    bulk_status,
    confirm_bulk,
    correct_bulk,
    create_bulk,
    halt_bulk,
    preview_bulk,
    release_bulk,
    same_bulk_recently,
    save_template,
)
from practicesync.outreach.models import BulkMessage, Message, MessageTemplate
from practicesync.patients.models import Patient
from practicesync.practices.access import access_practice
from practicesync.practices.models import Membership

from .outreach import CHANNEL_WORDS, PAGE_SIZE, _post_only, actor_of

ADMIN = (Membership.Role.ADMIN,)
EXCLUSION_WORDS = {
    "deceased": "Deceased",
    "left": "Left the practice",
    "opted_out": "Opted out of this channel (STOP or unsubscribe)",
    "no_address": "No mobile number or email address for this channel",
    "under_age": "Under the practice's age for SMS",
    "sent_today": "Had the same text from another bulk in the last day",
}
YES_NO = ("yes", "no")
FILTER_FIELDS = ("digital", "has_mobile", "has_email", "age_min", "age_max", "pms_ids",
                 "family_name_prefix")
WAITING_FOR_APPROVAL = "Waiting for approval by another admin"
# A record merged into another by the review queue is history, not a patient to count.
SELECTABLE_STATUSES = [(v, label) for v, label in Patient.Status.choices
                       if v != Patient.Status.MERGED]
PHASE_WORDS = {
    BulkMessage.Phase.DRAFT: "Draft",
    BulkMessage.Phase.APPROVED: "Approved",
    BulkMessage.Phase.FIRST_BATCH: "First batch sent; the rest wait for Release",
    BulkMessage.Phase.RELEASED: "Released to everyone",
    BulkMessage.Phase.HALTED: "Halted",
}
ALL_IN_FIRST_BATCH = "Sent to everyone: the first batch was all of them"


def excluded_rows(excluded: dict) -> list[tuple[str, str, int]]:
    """(reason, in words, how many) in the order `messaging.EXCLUSIONS` gives them."""
    return [(reason, EXCLUSION_WORDS.get(reason, reason), n) for reason, n in excluded.items()]


# --- the filter form -----------------------------------------------------------------------

def _filter_form(data) -> tuple[dict, dict, dict]:
    """The filter form as posted (or in the query), the recipient filter it asks for (as
    `normalise_filter` takes it), and field errors."""
    form = {k: data.get(k, "").strip() for k in ("template", *FILTER_FIELDS)}
    form["status"] = [s for s in data.getlist("status") if s in dict(SELECTABLE_STATUSES)] or [
        Patient.Status.ACTIVE]
    flt, errors = {"status": form["status"]}, {}
    for key in ("digital", "has_mobile", "has_email"):
        if form[key] in YES_NO:
            flt[key] = form[key] == "yes"
        else:
            form[key] = ""
    for key in ("age_min", "age_max"):
        if form[key]:
            if (years := whole_number(form[key], digits=3)) is not None:
                flt[key] = years
            else:
                errors[key] = "A whole number of years."
    if form["pms_ids"]:
        flt["pms_ids"] = [p for p in re.split(r"[\s,]+", form["pms_ids"]) if p]
    if form["family_name_prefix"]:
        flt["family_name_prefix"] = form["family_name_prefix"]
    return form, flt, errors


def _templates(practice):
    return MessageTemplate.objects.filter(practice=practice).order_by("name")


def _chosen(practice, form, errors) -> MessageTemplate | None:
    chosen = whole_number(form["template"], digits=18)
    found = _templates(practice).filter(id=chosen).first() if chosen is not None else None
    if found is None:
        errors["template"] = "Choose a saved template."
    return found


def _new_page(request, practice, *, form=None, errors=None, preview=None, chosen=None,
              template_form=None, template_errors=None, status=200):
    return render(request, "dashboard/bulk_new.html", {
        "practice": practice, "templates": _templates(practice),
        "form": form or _filter_form(QueryDict())[0],
        "errors": errors or {}, "preview": preview, "chosen": chosen,
        "excluded": preview and excluded_rows(preview["excluded"]), "statuses": SELECTABLE_STATUSES,
        "channels": [(c, CHANNEL_WORDS[c]) for c in DIRECT_CHANNELS],
        "template_form": template_form or {"name": "", "channel": "sms", "subject": "", "body": ""},
        "template_errors": template_errors or {},
        "approval_over": settings.PRACTICESYNC_BULK_APPROVAL_OVER}, status=status)


def _preview(practice, form, flt, errors):
    """The chosen template and its preview, or None where the form or filter is wrong."""
    chosen = _chosen(practice, form, errors)
    if errors:
        return chosen, None
    try:
        return chosen, preview_bulk(practice=practice, recipient_filter=flt, template=chosen)
    except BadFilter as e:
        errors["filter"] = f"{e}."
        return chosen, None


# --- pages ---------------------------------------------------------------------------------

@login_required
def bulk_list(request, practice):
    practice, _ = access_practice(request.user, practice, roles=ADMIN)
    page = Paginator(BulkMessage.objects.filter(practice=practice).select_related("template")
                     .order_by("-id"), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/bulk_list.html", {
        "practice": practice, "page": page})


@login_required
def bulk_new(request, practice):
    """GET: the filter form, and with a template chosen the preview. POST: confirm."""
    practice, _ = access_practice(request.user, practice, roles=ADMIN)
    if request.method != "POST":
        form, flt, errors = _filter_form(request.GET)
        chosen = preview = None
        if "template" in request.GET:
            chosen, preview = _preview(practice, form, flt, errors)
        return _new_page(request, practice, form=form, errors=errors, chosen=chosen,
                         preview=preview and preview.as_json())
    form, flt, errors = _filter_form(request.POST)
    chosen, preview = _preview(practice, form, flt, errors)
    if preview is not None:
        errors |= _confirm_errors(request.POST, preview)
    if not errors and not request.POST.get("again") and (earlier := same_bulk_recently(
            practice=practice, recipient_filter=flt, template=chosen)):
        when = ("is waiting for approval" if earlier.status == BulkMessage.Status.DRAFT
                else "went out in the last day")
        errors["again"] = (f"Bulk {earlier.id} with this text and filter {when}. Tick "
                           f"“Send it again” to send it a second time.")
        errors["again_bulk"] = earlier.id
    if errors:
        return _new_page(request, practice, form=form, errors=errors, chosen=chosen,
                         preview=preview and preview.as_json(), status=400)
    actor = actor_of(request.user)
    try:
        bulk = create_bulk(actor=actor, practice=practice, recipient_filter=flt, template=chosen)
        if not bulk.approval_needed:
            confirm_bulk(actor=actor, bulk=bulk)
    except (TextRejected, BadFilter, BulkNotAllowed) as e:
        errors["confirm"] = f"Not sent: {e}."
        return _new_page(request, practice, form=form, errors=errors, chosen=chosen,
                         preview=preview.as_json(), status=400)
    messages.success(request, f"Bulk {bulk.id} created: waiting for approval by another admin."
                     if bulk.approval_needed else f"Bulk {bulk.id}: the first batch is queued.")
    return redirect("bulk_detail", practice=practice.slug, bulk_id=bulk.id)


def _confirm_errors(post, preview) -> dict:
    """The confirm's own checks: the text passes, someone gets it, the count typed in is
    the count now (the list may have changed since the preview), and the box is ticked."""
    errors = {}
    if preview.problems:
        errors["confirm"] = "Not sent: the text was refused: " + "; ".join(preview.problems) + "."
    elif not preview.recipients:
        errors["confirm"] = "Not sent: nobody would get this message."
    typed = post.get("count", "").strip()
    if typed != str(preview.recipients):
        errors["count"] = (f"Type the number of patients who would get it: "
                           f"{preview.recipients} now.")
    if post.get("checked") != "on":
        errors["checked"] = "Tick the box once you have checked the wording."
    return errors


@login_required
def bulk_template_save(request, practice):
    """Save (or replace) a bulk template; the text is scanned (refusals are audited)."""
    practice, _ = access_practice(request.user, practice, roles=ADMIN)
    if (refused := _post_only(request)) is not None:
        return refused
    form = {k: request.POST.get(k, "") for k in ("name", "channel", "subject", "body")}
    errors = {}
    if form["channel"] not in DIRECT_CHANNELS:
        errors["channel"] = "Choose SMS or email."
    else:
        try:
            saved = save_template(actor=actor_of(request.user), practice=practice,
                                  name=form["name"], channel=form["channel"], body=form["body"],
                                  subject=form["subject"])
        except TextRejected as e:
            errors["body"] = "Not saved: the text was refused: " + "; ".join(e.problems) + "."
        except ValueError as e:
            errors["name"] = f"Not saved: {e}."
    if errors:
        return _new_page(request, practice, template_form=form, template_errors=errors,
                         status=400)
    messages.success(request, f"Template “{saved.name}” saved.")
    return redirect(reverse("bulk_new", kwargs={"practice": practice.slug})
                    + f"?template={saved.id}")


def filter_words(flt: dict) -> list[str]:
    """A stored recipient filter (messaging.normalise_filter) in staff's words."""
    # A correction has no filter: it goes to the patients the corrected bulk reached.
    words = [" or ".join(Patient.Status(s).label.lower() for s in flt["status"]) + " patients"
             ] if "status" in flt else []
    flags = {"digital": ("digital only", "non-digital only"),
             "has_mobile": ("with a mobile", "without a mobile"),
             "has_email": ("with an email address", "without an email address")}
    words += [flags[key][0 if flt[key] else 1] for key in flags if key in flt]
    if "age_min" in flt or "age_max" in flt:
        words.append(f"aged {flt.get('age_min', 0)} to {flt['age_max']}" if "age_max" in flt
                     else f"aged {flt['age_min']} and over")
    if "family_name_prefix" in flt:
        words.append(f"family name starting “{flt['family_name_prefix']}”")
    if "pms_ids" in flt:
        words.append(f"{len(flt['pms_ids'])} chosen PMS ids")
    return words


def _status_context(request, practice, bulk) -> dict:
    status = bulk_status(bulk)
    by = status["by_status"]
    actor = actor_of(request.user)
    draft = bulk.phase == BulkMessage.Phase.DRAFT and bulk.status == BulkMessage.Status.DRAFT
    return {"practice": practice, "bulk": bulk, "status": status,
            "phase_text": WAITING_FOR_APPROVAL if draft and bulk.approval_needed
            else ALL_IN_FIRST_BATCH if bulk.phase == BulkMessage.Phase.FIRST_BATCH
            and not status["waiting"] else PHASE_WORDS[bulk.phase],
            "filter_words": filter_words(bulk.recipient_filter),
            "excluded": excluded_rows(status["excluded"]),
            "sending": bulk.phase != BulkMessage.Phase.HALTED and by["queued"] + by["sending"] > 0,
            "awaiting_approval": draft and bulk.approval_needed,
            "may_approve": draft and bulk.approval_needed and actor != bulk.created_by,
            "may_release": bulk.phase == BulkMessage.Phase.FIRST_BATCH and status["waiting"] > 0,
            "first_batch_pending": status["first_batch"]["by_status"]["queued"]
            + status["first_batch"]["by_status"]["sending"],
            "may_halt": bulk.phase != BulkMessage.Phase.HALTED
            and (bulk.phase != BulkMessage.Phase.RELEASED or by["queued"] > 0)}


@login_required
def bulk_detail(request, practice, bulk_id):
    practice, _ = access_practice(request.user, practice, roles=ADMIN)
    bulk = get_object_or_404(BulkMessage.objects.select_related("template", "corrects"),
                             practice=practice, id=bulk_id)
    page = Paginator(Message.objects.filter(practice=practice, bulk=bulk).select_related("patient")
                     .order_by("id"), PAGE_SIZE).get_page(request.GET.get("page"))
    reached = Message.objects.filter(practice=practice, bulk=bulk, status__in=REACHED).exists()
    return render(request, "dashboard/bulk_detail.html", _status_context(request, practice, bulk) | {
        "page": page, "corrections": reached and _templates(practice).filter(channel=bulk.channel),
        "correction_batches": CORRECTION_BATCHES})


@login_required
def bulk_progress(request, practice, bulk_id):
    """The progress block alone, for the page's poll while messages are going out."""
    practice, _ = access_practice(request.user, practice, roles=ADMIN)
    bulk = get_object_or_404(BulkMessage, practice=practice, id=bulk_id)
    return render(request, "dashboard/bulk_progress.html", _status_context(request, practice, bulk))


def _step(request, practice, bulk_id, step, done: str):
    practice, _ = access_practice(request.user, practice, roles=ADMIN)
    if (refused := _post_only(request)) is not None:
        return refused
    bulk = get_object_or_404(BulkMessage, practice=practice, id=bulk_id)
    try:
        step(actor=actor_of(request.user), bulk=bulk)
    except (TextRejected, BulkNotAllowed) as e:
        messages.error(request, f"Not done: {e}.")
    else:
        messages.success(request, done)
    return redirect("bulk_detail", practice=practice.slug, bulk_id=bulk.id)


@login_required
def bulk_approve(request, practice, bulk_id):
    return _step(request, practice, bulk_id, approve_bulk, "Approved: the first batch is queued.")


@login_required
def bulk_release(request, practice, bulk_id):
    return _step(request, practice, bulk_id, release_bulk, "Released: everyone else is queued.")


@login_required
def bulk_halt(request, practice, bulk_id):
    return _step(request, practice, bulk_id, halt_bulk, "Halted: nothing more of it is sent.")


@login_required
def bulk_correct(request, practice, bulk_id):
    """A correction to the patients the bulk reached, as a new bulk on the same rails."""
    practice, _ = access_practice(request.user, practice, roles=ADMIN)
    if (refused := _post_only(request)) is not None:
        return refused
    bulk = get_object_or_404(BulkMessage, practice=practice, id=bulk_id)
    chosen = request.POST.get("template", "")
    chosen = whole_number(chosen, digits=18)
    template = _templates(practice).filter(id=chosen).first() if chosen is not None else None
    batch = request.POST.get("batch", "all")
    if template is None or batch not in CORRECTION_BATCHES:
        messages.error(request, "Not sent: choose a saved template and who gets the correction.")
        return redirect("bulk_detail", practice=practice.slug, bulk_id=bulk.id)
    try:
        correction = correct_bulk(actor=actor_of(request.user), bulk=bulk, template=template,
                                  batch=batch)
    except (TextRejected, BulkNotAllowed, ValueError) as e:
        messages.error(request, f"Not sent: {e}.")
        return redirect("bulk_detail", practice=practice.slug, bulk_id=bulk.id)
    messages.success(request, f"Correction bulk {correction.id} created.")
    return redirect("bulk_detail", practice=practice.slug, bulk_id=correction.id)
