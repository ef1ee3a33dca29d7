"""The demo: a Docman 10 surgery of about 5,000 synthetic patients (GB), and a Best Practice
and a Medical Director practice (AU) of a few hundred patients each with actioned results and
a few appointments (so some running sequences show as paused on booking).
Re-running it changes nothing but the staff password."""

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from practicesync.appointments.importer import sync_appointments
from practicesync.appointments.models import Appointment
from practicesync.outreach.models import Sequence
from practicesync.patients.accounts import import_accounts
from practicesync.patients.sync import sync_patient_list
from practicesync.practices import actions
from practicesync.practices.models import Practice
from practicesync.results.actions import set_template_auto_start
from practicesync.results.importer import sync_results
from practicesync.results.models import Result, ResultsTemplate

from .patients import (
    generate_accounts,
    generate_practice_list,
    write_accounts,
    write_canonical_list,
    write_docman_export,
)
from .results import generate_results, write_results

DEMO_SLUG = "riverside"
DEMO_STAFF = "manager@riverside.example"
ACTOR = "demo"


@dataclass(frozen=True)
class ResultsPractice:
    slug: str
    name: str
    pms: str
    patients: int
    seed: int
    # Results templates this practice's admin set to start by themselves (the rest wait as
    # "To action – Paused" until staff press Start).
    auto_start: tuple[str, ...] = ()


RESULTS_PRACTICES = (
    ResultsPractice("harbour", "Harbour Medical Centre", "bestpractice", 400, seed=11),
    ResultsPractice("banksia", "Banksia Family Practice", "medicaldirector", 300, seed=21,
                    auto_start=("discuss",)),
)


def _practice(slug: str, name: str, pms: str) -> Practice:
    practice = Practice.objects.filter(slug=slug).first()
    if practice is None:
        practice = actions.create_practice(actor=ACTOR, name=name, pms=pms, slug=slug)
        actions.permit_sync(actor=ACTOR, practice=practice, granted_by="Dr A. Partner (demo)",
                            dpia_ref="DPIA-DEMO-001")
        # A made-up online booking page for the messages' {booking_link}.
        Practice.objects.filter(id=practice.id).update(
            booking_url=f"https://book.example.org/{slug}")
        practice.refresh_from_db()
    return practice


def _set_auto_start(practice: Practice, action_keys: tuple[str, ...]) -> None:
    for template in ResultsTemplate.objects.filter(practice=practice, action_key__in=action_keys):
        set_template_auto_start(actor=ACTOR, template=template, auto_start=True)


def load_demo_practice(*, patients: int = 5000, seed: int = 1, staff_password: str) -> dict:
    """Create (or reuse) the Docman 10 practice, write its list files, import accounts, sync."""
    folder = Path(settings.HOME) / "demo"
    rows = generate_practice_list(patients, seed=seed, country="GB")
    list_path = write_docman_export(folder / "riverside-practice-list.csv", rows)
    accounts_path = write_accounts(folder / "riverside-accounts.csv",
                                   generate_accounts(rows, seed=seed + 1))
    practice = _practice(DEMO_SLUG, "Riverside Surgery", "docman10")
    actions.schedule_nightly_sync(actor=ACTOR, practice=practice, source=str(list_path))
    actions.add_staff(actor=ACTOR, practice=practice, email=DEMO_STAFF, role="admin",
                      password=staff_password)
    accounts = import_accounts(practice=practice, source=str(accounts_path), actor=ACTOR)
    report = sync_patient_list(practice=practice, source=str(list_path), actor=ACTOR)
    return {"practice": practice.slug, "accounts": accounts.counts, "sync": report.as_json()}


def load_results_practice(spec: ResultsPractice, *, staff_password: str | None) -> dict:
    """An AU practice: its canonical list and accounts synced, then its actioned results.

    The first time, the results are imported as the PMS showed them a few nights ago and then
    as it shows them now, so some sequences have since been cancelled or completed. After
    that only the current snapshot is imported, which changes nothing."""
    folder = Path(settings.HOME) / "demo"
    rows = generate_practice_list(spec.patients, seed=spec.seed, country="AU")
    list_path = write_canonical_list(folder / f"{spec.slug}-practice-list.csv", rows)
    accounts_path = write_accounts(folder / f"{spec.slug}-accounts.csv", generate_accounts(
        rows, seed=spec.seed + 1, share=0.1, extra=5, country="AU"))
    snapshots = generate_results(rows, pms=spec.pms, seed=spec.seed + 2)
    earlier_path = write_results(folder / f"{spec.slug}-results-earlier.csv", snapshots.earlier)
    results_path = write_results(folder / f"{spec.slug}-results.csv", snapshots.final)

    practice = _practice(spec.slug, spec.name, spec.pms)
    _set_auto_start(practice, spec.auto_start)
    actions.schedule_nightly_sync(actor=ACTOR, practice=practice, source=str(list_path))
    actions.add_staff(actor=ACTOR, practice=practice, email=DEMO_STAFF, role="admin",
                      password=staff_password)
    accounts = import_accounts(practice=practice, source=str(accounts_path), actor=ACTOR)
    report = sync_patient_list(practice=practice, source=str(list_path), actor=ACTOR)
    if not Result.objects.filter(practice=practice).exists():
        sync_results(practice=practice, source=str(earlier_path), actor=ACTOR)
    results = sync_results(practice=practice, source=str(results_path), actor=ACTOR)
    appointments = _load_appointments(practice, folder / f"{spec.slug}-appointments.csv")
    return {"practice": practice.slug, "accounts": accounts.counts, "sync": report.as_json(),
            "results": results.as_json(), "appointments": appointments.as_json()}


BOOKED_PATIENTS = 3  # running sequences paused by a booking; the rest stay as they are


def _load_appointments(practice: Practice, path: Path):
    """Bookings next week for the first few patients whose sequences are running, written as
    the canonical appointments CSV and imported as the PMS feed would be. The same patients
    and times on a re-run (a stored appointment keeps its time), so nothing changes."""
    running = (Sequence.objects.filter(practice=practice, state__in=(
        Sequence.State.ACTIVE, Sequence.State.PAUSED_BOOKING)).exclude(group__patient__pms_id=None)
        .order_by("group_id").values_list("group__patient__pms_id", flat=True))
    pms_ids = list(dict.fromkeys(running))[:BOOKED_PATIENTS]
    next_week = (timezone.now().astimezone(practice.tz) + dt.timedelta(days=7)).replace(
        hour=10, minute=0, second=0, microsecond=0)
    stored = dict(Appointment.objects.filter(practice=practice, appointment_id__startswith="DEMO-")
                  .values_list("appointment_id", "starts_at"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["appointment_id", "pms_id", "starts_at", "status"])
        for n, pms_id in enumerate(pms_ids):
            appointment_id = f"DEMO-{pms_id}"
            starts = stored.get(appointment_id) or next_week + dt.timedelta(hours=n)
            writer.writerow([appointment_id, pms_id, starts.isoformat(), "booked"])
    return sync_appointments(practice=practice, source=str(path), actor=ACTOR)


def load_demo(*, patients: int = 5000, seed: int = 1, staff_password: str) -> list[dict]:
    """All three demo practices; the demo staff user is a member of each (the password is
    set once: hashing it is the slowest step of a re-run)."""
    return [load_demo_practice(patients=patients, seed=seed, staff_password=staff_password),
            *(load_results_practice(spec, staff_password=None) for spec in RESULTS_PRACTICES)]
