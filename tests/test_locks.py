"""Per-practice locks (runtime/locks.py, ADR 0021). Holders in other processes, and holders
that die, are in tests/test_faults.py."""

import os
import tempfile
from pathlib import Path

import pytest
from django.db import connection

from practicesync.runtime import locks
from tests.factories import another_sync_of, list_row, write_list


@pytest.mark.parametrize(("name", "folder"), [
    (":memory:", Path(tempfile.gettempdir()) / f"practicesync-locks-{os.getpid()}"),
    ("file:memorydb_default?mode=memory&cache=shared",
     Path(tempfile.gettempdir()) / f"practicesync-locks-{os.getpid()}"),
    ("/srv/practicesync/practicesync.sqlite3", Path("/srv/practicesync/practicesync.sqlite3.locks")),
    # sqlite:///db.sqlite3: every process in the same folder must find the same locks.
    ("db.sqlite3", Path.cwd() / "db.sqlite3.locks"),
])
def test_the_lock_folder_is_beside_the_database_file_or_private_to_a_database_in_memory(
        name, folder, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "NAME", name)
    assert locks._lock_folder() == folder


@pytest.mark.django_db
def test_a_lock_is_one_holders_until_let_go(practice):
    with (another_sync_of(practice), pytest.raises(locks.Busy),
          locks.practice_lock("patient-sync", practice.id, wait=0)):
        pass
    with locks.practice_lock("patient-sync", practice.id, wait=0):
        pass  # let go: free again


def test_a_lock_that_cannot_be_opened_says_why(tmp_path, monkeypatch):
    (tmp_path / "db.sqlite3.locks").write_text("a file where the lock folder should be")
    monkeypatch.setattr(locks, "_lock_folder", lambda: tmp_path / "db.sqlite3.locks")
    lock = locks._FileLock("patient-sync", 7)
    with pytest.raises(locks.LockUnavailable, match="could not be opened"):
        lock.try_acquire()


@pytest.mark.django_db
def test_a_sync_whose_lock_cannot_be_taken_is_a_failed_run_that_says_why(practice, tmp_path,
                                                                          monkeypatch):
    """Not a traceback: a run staff see, which the nightly retry counts."""
    from practicesync.patients.models import Patient
    from practicesync.patients.sync import sync_patient_list

    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL holds the lock in the database session: no file to fail")
    blocked = tmp_path / "db.sqlite3.locks"
    blocked.write_text("not a folder")
    monkeypatch.setattr(locks, "_lock_folder", lambda: blocked)
    report = sync_patient_list(practice=practice, actor="test",
                               source=str(write_list(tmp_path / "l.csv", [list_row()])))
    assert report.status == "failed" and report.exit_code == 1
    assert "could not be opened" in report.failure and "did not start" in report.failure
    assert not Patient.objects.filter(practice=practice).exists()
