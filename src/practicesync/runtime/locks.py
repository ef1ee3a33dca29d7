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


class LockUnavailable(Busy):
    """The lock itself could not be taken (its folder cannot be written, no locks on this
    file system): the work waits, as when busy, and the reason is worth showing."""


@contextlib.contextmanager
def practice_lock(name: str, practice_id: int, *, wait: float):
    """Hold the lock `name` of the practice for the block; Busy if another holder keeps it
    for `wait` seconds (0: one try). Inside a transaction it is tried once, never waited for
    (waiting would hold the transaction's own locks, which the holder may need), and on
    PostgreSQL it is held until that transaction ends, so what the block wrote is committed
    before anyone else holds it. (On SQLite that transaction holds the database's write
    lock, and the next holder's first write waits for it.)"""
    lock = (_AdvisoryLock if connection.vendor == "postgresql" else _FileLock)(name, practice_id)
    if connection.in_atomic_block:
        wait = 0
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
        self.fd = -1

    def try_acquire(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Read-only is enough for flock, so a file another user made does not stop it.
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o660)
        except OSError as e:
            raise LockUnavailable(f"the lock {self.path} could not be opened ({e.strerror})") from e
        try:
            # flock belongs to this open file: another open, even in this process, waits.
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            os.close(self.fd)
            return False
        except OSError as e:
            os.close(self.fd)
            raise LockUnavailable(f"the lock {self.path} could not be taken ({e.strerror})") from e

    def release(self) -> None:
        os.close(self.fd)


def _lock_folder() -> Path:
    name = str(connection.settings_dict["NAME"])
    if name == ":memory:" or "mode=memory" in name:
        # A database in memory has only this process.
        return Path(tempfile.gettempdir()) / f"practicesync-locks-{os.getpid()}"
    return Path(f"{Path(name).resolve()}.locks")  # beside the file, for every process using it
