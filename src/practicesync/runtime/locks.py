"""Per-practice locks for work that must never run twice at once (a practice's Patient Sync).

A lock is held by a database session (PostgreSQL advisory lock) or by an open file (SQLite,
whose database lives on one host), so a holder that dies (kill -9, OOM, a dropped
connection) lets go at once: nobody waits for a timeout or a row to be tidied up.
"""

import contextlib
import fcntl
import os
import tempfile
import time
import zlib
from pathlib import Path

from django.db import DatabaseError, connection

POLL_SECONDS = 1.0


class Busy(Exception):
    """Another process holds the lock."""


@contextlib.contextmanager
def practice_lock(name: str, practice_id: int, *, wait: float):
    """Hold the lock `name` of the practice for the block; Busy if another holder keeps it
    for `wait` seconds (0: one try). Inside a transaction on PostgreSQL it is held until
    that transaction ends, so what the block wrote is committed before anyone else holds
    it. (On SQLite that transaction holds the database's write lock, and the next holder's
    first write waits for it.)"""
    lock = (_AdvisoryLock if connection.vendor == "postgresql" else _FileLock)(name, practice_id)
    deadline = time.monotonic() + wait
    while not lock.try_acquire():
        left = deadline - time.monotonic()
        if left <= 0:
            raise Busy(f"{name} of practice {practice_id}")
        time.sleep(min(POLL_SECONDS, left))
    try:
        yield
    finally:
        lock.release()


def advisory_key(name: str, practice_id: int) -> list[int]:
    """PostgreSQL's two-int4 advisory lock key: a number for the name, the practice id."""
    return [zlib.crc32(name.encode()) - 2**31, practice_id]


class _AdvisoryLock:
    def __init__(self, name: str, practice_id: int):
        self.key = advisory_key(name, practice_id)
        self.in_transaction = connection.in_atomic_block

    def try_acquire(self) -> bool:
        function = "pg_try_advisory_xact_lock" if self.in_transaction else "pg_try_advisory_lock"
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {function}(%s, %s)", self.key)
            return cursor.fetchone()[0]

    def release(self) -> None:
        if self.in_transaction:
            return  # the end of the transaction lets go
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", self.key)
        except DatabaseError:
            connection.close()  # a broken session: closing it lets go


class _FileLock:
    def __init__(self, name: str, practice_id: int):
        self.path = _lock_folder() / f"{name}-{practice_id}.lock"
        self.file = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")  # noqa: SIM115 - held open as the lock
        try:
            # flock belongs to this open file: another open, even in this process, waits.
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            self.file.close()
            return False

    def release(self) -> None:
        self.file.close()


def _lock_folder() -> Path:
    name = str(connection.settings_dict["NAME"])
    if os.path.isabs(name):
        return Path(f"{name}.locks")  # beside the database file, for every process using it
    # A database in memory has only this process.
    return Path(tempfile.gettempdir()) / f"practicesync-locks-{os.getpid()}"
