"""The audit log page: who did what, when and why, filtered, and as CSV. Read-only: there is
no way to change or delete an event from here (or anywhere)."""

import csv
import datetime as dt
import json
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponseNotAllowed, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from practicesync.audit.models import AuditEvent
from practicesync.practices.access import access_practice
from practicesync.practices.models import Membership

PAGE_SIZE = 50
AUDIT_ROLES = (Membership.Role.ADMIN, Membership.Role.CLINICIAN)
EXPORT_ROLES = (Membership.Role.ADMIN,)
FILTERS = ("action", "actor", "pms_id", "date_from", "date_to")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("at", "actor", "action", "why", "patient_id", "pms_id", "sync_run", "detail")


def csv_cell(value) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_START) else text


def _shown(value) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def detail_lines(detail: dict) -> list[tuple[str, str]]:
    """An event's detail as (label, text) lines; a field change reads "old → new (rule)"."""
    lines = []
    for key, value in detail.items():
        if key == "changes" and isinstance(value, list):
            lines += [(str(c.get("field")), f"{_shown(c.get('old'))} → {_shown(c.get('new'))}"
                       + (f" ({c['rule']})" if c.get("rule") else ""))
                      for c in value if isinstance(c, dict)]
        else:
            lines.append((key.replace("_", " "), _shown(value)))
    return lines


def _day(raw: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def filtered_events(practice, params) -> tuple:
    """The practice's events matching the filters, newest first; the form values as given and
    the filters that could not be used."""
    form = {k: params.get(k, "").strip() for k in FILTERS}
    events = AuditEvent.objects.filter(practice=practice)
    errors = {}
    if action := form["action"]:
        # "patient" finds every patient.* action as well as an exact name.
        events = events.filter(Q(action=action) | Q(action__startswith=action.rstrip(".") + "."))
    if form["actor"]:
        events = events.filter(actor__icontains=form["actor"])
    if form["pms_id"]:
        events = events.filter(patient__pms_id=form["pms_id"])
    for name, after in (("date_from", False), ("date_to", True)):
        if not form[name]:
            continue
        day = _day(form[name])
        if day is None:
            errors[name] = "Give a date as YYYY-MM-DD."
            continue
        start = dt.datetime.combine(day + dt.timedelta(days=after), dt.time.min,
                                    tzinfo=practice.tz)
        events = events.filter(at__lt=start) if after else events.filter(at__gte=start)
    return events.order_by("-at", "-id"), form, errors


def _read_only(request):
    # After the membership check, so that a non-member gets 404 whatever the method.
    return None if request.method in ("GET", "HEAD") else HttpResponseNotAllowed(["GET", "HEAD"])


@login_required
def audit_log(request, practice):
    practice, membership = access_practice(request.user, practice, roles=AUDIT_ROLES)
    if (refused := _read_only(request)) is not None:
        return refused
    events, form, errors = filtered_events(practice, request.GET)
    page = Paginator(events.select_related("patient"), PAGE_SIZE).get_page(
        request.GET.get("page"))
    query = urlencode({k: v for k, v in form.items() if v})
    return render(request, "dashboard/audit_log.html", {
        "practice": practice, "page": page, "form": form, "errors": errors, "query": query,
        "rows": [(e, detail_lines(e.detail)) for e in page],
        "can_export": membership.role in EXPORT_ROLES})


class _Echo:
    def write(self, value):
        return value


@login_required
def audit_csv(request, practice):
    """The filtered log as CSV, every matching event (not one page), for admins."""
    practice, _ = access_practice(request.user, practice, roles=EXPORT_ROLES)
    if (refused := _read_only(request)) is not None:
        return refused
    events, _, _ = filtered_events(practice, request.GET)
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for e in events.select_related("patient").iterator(chunk_size=2000):
            yield writer.writerow([csv_cell(v) for v in (
                timezone.localtime(e.at, practice.tz).isoformat(), e.actor, e.action, e.why,
                e.patient_id, e.patient.pms_id if e.patient else None, e.sync_run_id,
                json.dumps(e.detail, ensure_ascii=False, sort_keys=True))])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="audit-{practice.slug}-{timezone.localdate(timezone=practice.tz)}.csv"')
    return response
