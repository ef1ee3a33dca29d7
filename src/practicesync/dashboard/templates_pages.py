"""Templates: the practice's Results templates (one per automatic action) and their steps.

Any member may read and edit the steps; the text check of `outreach.wording` runs as staff
type (an htmx fragment) and again on save, where `save_step` refuses result details. Only
an admin turns auto-start on or off. Every object is fetched with the practice in the filter.
"""

import datetime as dt
import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from practicesync.numbers import whole_number
from practicesync.outreach import wording
from practicesync.outreach.actions import TextRejected, remove_step, save_step
from practicesync.outreach.models import MESSAGE_CHANNELS, Channel, Step
from practicesync.outreach.wording import PLACEHOLDERS, placeholders_in, sms_length, text_problems
from practicesync.practices.access import access_practice
from practicesync.practices.models import Membership
from practicesync.results.actions import set_template_auto_start
from practicesync.results.models import ResultsTemplate

from .outreach import _post_only, actor_of

# The preview's patient is made up: the page shows what a message looks like, never a
# real patient's name.
PREVIEW_NAME = "Alex"
MAX_DELAY_DAYS = 365
# Wording that reaches patients is for the clinical side and the practice admin to change.
TEMPLATE_EDITORS = (Membership.Role.ADMIN, Membership.Role.CLINICIAN)


def text_check(practice, channel: str, body: str, subject: str = "") -> dict:
    """What the page shows next to the text: SMS size, the problems `save_step` would refuse
    it for, and the text as the made-up patient would read it."""
    problems = text_problems(channel, body, subject) if body.strip() else []
    try:
        known = all(name in PLACEHOLDERS for name in placeholders_in(body + subject))
    except ValueError:
        known = False

    def preview(text):
        return wording.render(text, first_name=PREVIEW_NAME, practice_name=practice.name,
                              booking_link=practice.booking_url) if known else None

    # A call or a letter step is a note for staff: no patient reads it as written.
    sample = preview(body) if body.strip() and channel in MESSAGE_CHANNELS else None
    # Counted on the preview: the placeholders' words, not their names, are what is sent.
    return {"channel": channel, "problems": problems,
            "sms": sms_length(sample or body) if channel == Channel.SMS and body else None,
            "preview": sample, "preview_subject": preview(subject) if subject else None,
            "preview_name": PREVIEW_NAME}


def _template(practice, action_key) -> ResultsTemplate:
    return get_object_or_404(ResultsTemplate, practice=practice, action_key=action_key)


def _days(delay: dt.timedelta) -> str:
    return f"{delay.total_seconds() / 86400:g}"


def _form_of(step: Step | None, position: int) -> dict:
    if step is None:
        return {"position": position, "channel": Channel.SMS, "delay_days": "3", "subject": "",
                "body": "", "not_booked": True}
    return {"position": position, "channel": step.channel, "delay_days": _days(step.delay),
            "subject": step.subject, "body": step.body,
            "not_booked": step.condition == Step.Condition.NOT_BOOKED}


def _page(request, practice, membership, template, *, form=None, errors=None, status=200):
    steps = list(template.steps.all())
    for step in steps:
        step.delay_days = _days(step.delay)
        step.check = text_check(practice, step.channel, step.body, step.subject)
    form = form or _form_of(None, len(steps) + 1)
    return render(request, "dashboard/template_detail.html", {
        "practice": practice, "template": template, "steps": steps, "form": form,
        "errors": errors or {}, "editing": form["position"] <= len(steps),
        "is_admin": membership.role == Membership.Role.ADMIN,
        "can_edit": membership.role in TEMPLATE_EDITORS,
        "channels": Channel.choices, "placeholders": PLACEHOLDERS,
        "check": text_check(practice, form["channel"], form["body"], form["subject"]),
        "max_delay_days": MAX_DELAY_DAYS}, status=status)


@login_required
def templates(request, practice):
    practice, _ = access_practice(request.user, practice)
    shown = ResultsTemplate.objects.filter(practice=practice).order_by("name", "id")
    rows = [(t, t.steps.count()) for t in shown]
    return render(request, "dashboard/template_list.html", {"practice": practice, "rows": rows})


@login_required
def template(request, practice, action_key):
    """A template's steps; `?step=N` opens step N in the edit form (without it: add a step)."""
    practice, membership = access_practice(request.user, practice)
    found = _template(practice, action_key)
    form = None
    if (wanted := whole_number(request.GET.get("step", ""), digits=4)) is not None:
        step = found.steps.filter(position=wanted).first()
        form = _form_of(step, step.position if step else found.steps.count() + 1)
    return _page(request, practice, membership, found, form=form)


def _parse(post, steps: int) -> tuple[dict, dict, dt.timedelta | None]:
    """The posted form, its field errors, and the delay when it reads as one."""
    form = {"position": post.get("position", ""), "channel": post.get("channel", ""),
            "delay_days": post.get("delay_days", "").strip(), "subject": post.get("subject", ""),
            "body": post.get("body", ""), "not_booked": post.get("not_booked") == "on"}
    errors, delay = {}, None
    if form["channel"] not in Channel.values:
        errors["channel"] = "Choose a channel."
    try:
        days = float(form["delay_days"])
        if not math.isfinite(days) or not 0 <= days <= MAX_DELAY_DAYS:
            raise ValueError
        delay = dt.timedelta(days=days)
    except ValueError:
        errors["delay_days"] = f"Give the delay in days, 0 to {MAX_DELAY_DAYS} (e.g. 3 or 0.5)."
    position = form["position"]
    form["position"] = whole_number(position, digits=4)
    if form["position"] is None:
        form["position"] = steps + 1
    if not 1 <= form["position"] <= steps + 1:
        errors["position"] = f"Steps are numbered 1 to {steps + 1}."
    return form, errors, delay


@login_required
def template_step_save(request, practice, action_key):
    """Save the step form: replace step N, or add one at the end."""
    practice, membership = access_practice(request.user, practice, roles=TEMPLATE_EDITORS)
    if (refused := _post_only(request)) is not None:
        return refused
    found = _template(practice, action_key)
    form, errors, delay = _parse(request.POST, found.steps.count())
    if not errors:
        try:
            save_step(actor=actor_of(request.user), template=found, position=form["position"],
                      channel=form["channel"], delay=delay, body=form["body"],
                      subject=form["subject"] if form["channel"] == Channel.EMAIL else "",
                      condition=Step.Condition.NOT_BOOKED if form["not_booked"] else "")
        except TextRejected as e:
            errors["body"] = "Not saved: " + "; ".join(e.problems) + "."
        except ValueError as e:
            errors["position"] = f"Not saved: {e}."
    if errors:
        return _page(request, practice, membership, found, form=form, errors=errors, status=400)
    messages.success(request, f"Step {form['position']} saved.")
    return redirect(reverse("template", kwargs={"practice": practice.slug,
                                                "action_key": found.action_key})
                    + f"#step-{form['position']}")


@login_required
def template_step_remove(request, practice, action_key, position):
    practice, _ = access_practice(request.user, practice, roles=TEMPLATE_EDITORS)
    if (refused := _post_only(request)) is not None:
        return refused
    found = _template(practice, action_key)
    try:
        remove_step(actor=actor_of(request.user), template=found, position=position)
    except ValueError as e:
        # A count and a step number: nothing about a patient, so it may go in the cookie.
        messages.error(request, f"Not removed: {e}.")
    else:
        messages.success(request, f"Step {position} removed; the later steps moved up.")
    return redirect("template", practice=practice.slug, action_key=found.action_key)


@login_required
def template_auto_start(request, practice, action_key):
    """Admins only, as `results template --auto-start`: groups already waiting stay paused."""
    practice, _ = access_practice(request.user, practice, roles=(Membership.Role.ADMIN,))
    if (refused := _post_only(request)) is not None:
        return refused
    found = _template(practice, action_key)
    on = request.POST.get("auto_start") == "on"
    set_template_auto_start(actor=actor_of(request.user), template=found, auto_start=on)
    messages.success(request, "Auto-start is on: new groups start by themselves." if on else
                     "Auto-start is off: new groups wait as To action – Paused.")
    return redirect("template", practice=practice.slug, action_key=found.action_key)


@login_required
def template_step_check(request, practice):
    """The live check while staff type (htmx). POST so the text stays out of access logs."""
    practice, _ = access_practice(request.user, practice)
    if (refused := _post_only(request)) is not None:
        return refused
    channel = request.POST.get("channel", "")
    if channel not in Channel.values:
        channel = Channel.SMS
    subject = request.POST.get("subject", "") if channel == Channel.EMAIL else ""
    return render(request, "dashboard/template_check.html", {
        "check": text_check(practice, channel, request.POST.get("body", ""), subject)})
