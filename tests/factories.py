"""Test data builders. Synthetic only."""

import contextlib
import csv
import datetime as dt
import itertools
from pathlib import Path

from practicesync.patients.models import Patient
from practicesync.patients.rows import CANONICAL_COLUMNS
from practicesync.practices import actions

_n = itertools.count(1)
ACTOR = "test"

# Valid synthetic identifiers (999 NHS test range; made-up AU numbers with valid checks).
NHS = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000050", "9990000069"]
MEDICARE = "2953161251"  # 8 digits, check digit, issue number; add the IRN for one person
IHI = "8003608166690503"


def make_practice(*, pms="docman10", permitted=True, slug=None, **kwargs):
    practice = actions.create_practice(actor=ACTOR, name=slug or f"Practice {next(_n)}", pms=pms,
                                       slug=slug, **kwargs)
    if permitted:
        actions.permit_sync(actor=ACTOR, practice=practice, granted_by="Dr Test",
                            dpia_ref="DPIA-1")
    return practice


def make_patient(practice, **fields) -> Patient:
    values = {"given_name": "Ann", "family_name": "Lee", "date_of_birth": dt.date(1980, 1, 2)}
    values.update(fields)
    return Patient.objects.create(practice=practice, **values)


def make_account(practice, account_id=None, **fields) -> Patient:
    return make_patient(practice, account_id=account_id or f"A{next(_n)}", digital=True, **fields)


def list_row(**fields) -> dict:
    """A canonical list row as the CSV would hold it (all strings)."""
    row = dict.fromkeys(CANONICAL_COLUMNS, "")
    row.update(pms_id=f"P{next(_n)}", given_name="Ann", family_name="Lee",
               date_of_birth="1980-01-02", registration_status="active")
    row.update(fields)
    return row


def write_list(path: Path, rows, columns=CANONICAL_COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def log_in(client, user, *, verified=True):
    """Log `user` into the Django test client. With `verified`, the session also carries a
    confirmed TOTP device, as after a real MFA step (admins must have one to use any page)."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    client.force_login(user)
    if verified:
        device = (TOTPDevice.objects.filter(user=user, confirmed=True).first()
                  or TOTPDevice.objects.create(user=user, name="test", confirmed=True))
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return client


@contextlib.contextmanager
def another_sync_of(practice):
    """The practice's sync lock held as another sync would hold it: from another database
    session on PostgreSQL (a session's own advisory locks never block it), from another open
    lock file on SQLite."""
    from django.db import connection

    from practicesync.patients.sync import SYNC_LOCK
    from practicesync.runtime.locks import advisory_key, practice_lock

    if connection.vendor != "postgresql":
        with practice_lock(SYNC_LOCK, practice.id, wait=0):
            yield
        return
    import psycopg

    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"] or None, user=db["USER"],
                         password=db["PASSWORD"] or None, dbname=db["NAME"],
                         autocommit=True) as other:
        [(held,)] = other.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                  advisory_key(SYNC_LOCK, practice.id)).fetchall()
        assert held, "the practice's sync lock is already held"
        yield
