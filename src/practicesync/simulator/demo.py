"""The demo practice: a Docman 10 surgery of about 5,000 synthetic patients."""

from pathlib import Path

from django.conf import settings

from practicesync.patients.accounts import import_accounts
from practicesync.patients.sync import sync_patient_list
from practicesync.practices import actions
from practicesync.practices.models import Practice

from .patients import generate_accounts, generate_practice_list, write_accounts, write_docman_export

DEMO_SLUG = "riverside"
DEMO_STAFF = "manager@riverside.example"
ACTOR = "demo"


def load_demo_practice(*, patients: int = 5000, seed: int = 1, staff_password: str) -> dict:
    """Create (or reuse) the demo practice, write its list files, import accounts, sync."""
    folder = Path(settings.HOME) / "demo"
    rows = generate_practice_list(patients, seed=seed, country="GB")
    list_path = write_docman_export(folder / "riverside-practice-list.csv", rows)
    accounts_path = write_accounts(folder / "riverside-accounts.csv",
                                   generate_accounts(rows, seed=seed + 1))
    practice = Practice.objects.filter(slug=DEMO_SLUG).first()
    if practice is None:
        practice = actions.create_practice(actor=ACTOR, name="Riverside Surgery",
                                           pms="docman10", slug=DEMO_SLUG)
        actions.permit_sync(actor=ACTOR, practice=practice, granted_by="Dr A. Partner (demo)",
                            dpia_ref="DPIA-DEMO-001")
    actions.schedule_nightly_sync(actor=ACTOR, practice=practice, source=str(list_path))
    actions.add_staff(actor=ACTOR, practice=practice, email=DEMO_STAFF, role="admin",
                      password=staff_password)
    accounts = import_accounts(practice=practice, source=str(accounts_path), actor=ACTOR)
    report = sync_patient_list(practice=practice, source=str(list_path), actor=ACTOR)
    return {"practice": practice.slug, "accounts": accounts.counts, "sync": report.as_json()}
