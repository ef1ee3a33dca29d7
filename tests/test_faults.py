"""Faults (issue #8): a Patient Sync, a results import and the MLLP listener killed with
SIGKILL at random moments, a sync's database connection dropped, its SQLite database read-only
or full (the outreach tick under SIGKILL: tests/test_outreach_kill9.py). Real `practicesync`
processes on a database of their own (SQLite in tmp_path, or a new PostgreSQL database when
the suite runs on PostgreSQL), checked by reading the tables directly: every list row stored
once and whole, or not at all.

How the SQLite faults are simulated: the tests run as root, which ignores file modes, so a
read-only database is `PRAGMA query_only=ON` and a full disk is `PRAGMA max_page_count` set just
above the database's size, both through PRACTICESYNC_SQLITE_PRAGMAS (settings.py). SQLite then
fails the writes as a read-only file or a full disk would ("attempt to write a readonly
database", "database or disk is full")."""

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.factories import list_row, write_list

# Every test here runs real processes.
pytestmark = pytest.mark.slow
PG = bool(os.environ.get("DATABASE_URL"))
FIELDS = ("pms_id", "given_name", "family_name", "date_of_birth")


@pytest.fixture
def database(tmp_path):
    """Environment for processes on a database of their own, already migrated, with the
    practice `harbour` permitted to sync."""
    env = {**os.environ, "PRACTICESYNC_HOME": str(tmp_path / "home")}
    env.pop("PRACTICESYNC_SQLITE_PRAGMAS", None)
    url = os.environ.get("DATABASE_URL")
    if not url:
        env.pop("DATABASE_URL", None)
        yield prepared(env)
        return
    name = f"faults_{uuid.uuid4().hex[:12]}"
    server = url.rsplit("/", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield prepared(env | {"DATABASE_URL": f"{server}/{name}"})
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def prepared(env: dict) -> dict:
    for args in (["migrate", "--verbosity", "0"],
                 ["practice", "create", "--name", "Harbour", "--pms", "docman10"],
                 ["practice", "permit", "--practice", "harbour", "--granted-by", "Dr A",
                  "--dpia-ref", "D1"]):
        done = cli(env, *args)
        assert done.returncode == 0, done.stderr[-2000:]
    return env


def command(*args) -> list[str]:
    return [sys.executable, "-m", "practicesync", *map(str, args)]


def cli(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=env, capture_output=True, text=True, timeout=180)


def sync_args(source: Path, fmt: str) -> list:
    return ["patients", "sync", "--practice", "harbour", "--source", source, "--format", fmt,
            "--json"]


def query(env: dict, sql: str) -> list[tuple]:
    if url := env.get("DATABASE_URL"):
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []
    conn = sqlite3.connect(Path(env["PRACTICESYNC_HOME"]) / "practicesync.sqlite3", timeout=20)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def stored(env: dict) -> list[tuple]:
    return query(env, f"SELECT {', '.join(FIELDS)} FROM patients_patient ORDER BY id")


def runs(env: dict) -> list[tuple]:
    return query(env, "SELECT id, status FROM patients_syncrun ORDER BY id")


def checksum(env: dict) -> str:
    """Every row of the tables a sync writes, so any change to them shows."""
    rows = [query(env, f"SELECT * FROM {table} ORDER BY id") for table in
            ("patients_patient", "patients_syncrun", "audit_auditevent", "patients_reviewitem")]
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def synthetic_rows(n: int, start: int = 0) -> list[dict]:
    return [list_row(pms_id=f"S{i:05d}", given_name=f"Given{i}", family_name=f"Family{i}",
                     date_of_birth=f"{1940 + i % 60}-{1 + i % 12:02d}-{1 + i % 28:02d}")
            for i in range(start, start + n)]


def expected(rows: list[dict]) -> dict[str, tuple]:
    return {r["pms_id"]: tuple(r[f] for f in FIELDS) for r in rows}


def assert_whole_or_absent(env: dict, rows: list[dict]) -> set[str]:
    """No patient twice, none half-written; the pms_ids stored."""
    want = expected(rows)
    have = [tuple(str(v) for v in row) for row in stored(env)]
    pms_ids = [row[0] for row in have]
    assert len(pms_ids) == len(set(pms_ids)), "a patient was stored twice"
    assert [row for row in have if want.get(row[0]) != row] == []
    return set(pms_ids)


def write_hl7_folder(folder: Path, rows: list[dict], per_file: int = 100) -> Path:
    """The rows as ADT^A04 messages, `per_file` to a file, as a PMS's drop folder holds them."""
    folder.mkdir()
    for start in range(0, len(rows), per_file):
        messages = [
            "\r".join([rf"MSH|^~\&|PMS|RIVERSIDE|PS|PS|20260101120000||ADT^A04|C{r['pms_id']}|P|2.4",
                       "EVN|A04",
                       f"PID|1||{r['pms_id']}^^^^PI||{r['family_name']}^{r['given_name']}||"
                       f"{r['date_of_birth'].replace('-', '')}"]) + "\r"
            for r in rows[start:start + per_file]]
        (folder / f"adt{start:05d}.hl7").write_text("".join(messages))
    return folder


# --- kill -9 ---------------------------------------------------------------------------------

ROWS = 3000
KILLS = 4


def wait_for_run(env: dict, known: int, proc: subprocess.Popen, limit: float = 60) -> None:
    """Until the process has started its run (its SyncRun row exists) or has ended."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and time.monotonic() < deadline:
        if len(runs(env)) > known:
            return
        time.sleep(0.02)


@pytest.mark.parametrize("fmt", ["csv", "hl7"])
def test_a_sync_killed_at_any_moment_loses_and_duplicates_no_patient(database, tmp_path, fmt):
    env = database
    rows = synthetic_rows(ROWS)
    source = (write_list(tmp_path / "list.csv", rows) if fmt == "csv"
              else write_hl7_folder(tmp_path / "adt", rows))
    rng = random.Random()
    interrupted = 0
    for round_ in range(KILLS):
        known = runs(env)
        proc = subprocess.Popen(command(*sync_args(source, fmt)), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Half the kills land anywhere from start-up on, half while the run is applying.
        if round_ % 2:
            wait_for_run(env, len(known), proc)
            time.sleep(rng.uniform(0, 0.4))
        else:
            time.sleep(rng.uniform(0.2, 2.0))
        interrupted += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        present = assert_whole_or_absent(env, rows)
        # The list applies in one transaction: all of it or none of it.
        assert present in (set(), set(expected(rows))), len(present)
        for run_id, status in runs(env)[len(known):]:
            # A killed run is left "running" until the next sync sees its process gone; it
            # must never look like it completed unless its changes are all stored.
            assert status in ("running", "completed"), status
            assert status == "running" or present, (run_id, status)
        if not PG:
            assert query(env, "PRAGMA integrity_check") == [("ok",)]
    assert interrupted > 0  # the runs must really have been cut short

    done = cli(env, *sync_args(source, fmt))
    assert done.returncode == 0, done.stderr[-2000:]
    assert assert_whole_or_absent(env, rows) == set(expected(rows))
    assert runs(env)[-1][1] == "completed"
    # The killed runs are closed as interrupted: none is left "running" for staff to wait on.
    failures = dict(query(env, "SELECT id, failure FROM patients_syncrun WHERE status = 'failed'"))
    assert "running" not in {status for _, status in runs(env)}
    assert all(f.startswith("interrupted: the process applying it ended") for f in failures.values())


def result_rows(n: int, patients: int) -> list[dict]:
    from practicesync.connectors.csvfile.results import RESULT_COLUMNS

    rows = []
    for i in range(n):
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(result_id=f"R{i:05d}", pms_id=f"S{i % patients:05d}", test_name="FBC",
                   performed_on="2026-11-20", reported_on="2026-11-21",
                   actioned_on="2026-11-22", action="Non-Urgent Appointment",
                   filed_under="Investigation Report")
        rows.append(row)
    return rows


def test_a_results_import_killed_at_any_moment_stores_all_or_none_of_it(database, tmp_path):
    from practicesync.connectors.csvfile.results import RESULT_COLUMNS

    env = database
    assert cli(env, *sync_args(write_list(tmp_path / "list.csv", synthetic_rows(300)),
                               "csv")).returncode == 0
    rows = result_rows(ROWS, 300)
    source = write_list(tmp_path / "results.csv", rows, RESULT_COLUMNS)
    args = ["results", "sync", "--practice", "harbour", "--source", source, "--json"]
    rng, interrupted = random.Random(), 0
    for _ in range(KILLS):
        proc = subprocess.Popen(command(*args), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))
        interrupted += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        ids = [r for (r,) in query(env, "SELECT result_id FROM results_result")]
        assert len(ids) == len(set(ids)) and len(ids) in (0, ROWS), len(ids)
        if ids:
            break  # it finished before the kill: nothing left to interrupt
    assert interrupted > 0
    done = cli(env, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [r for (r,) in query(env, "SELECT result_id FROM results_result")]
    assert sorted(ids) == [r["result_id"] for r in rows]


# --- the database connection dropped ---------------------------------------------------------

def drop_sync_connection(env: dict, proc: subprocess.Popen) -> list:
    """Once the run's transaction has written patients, an operator ends its backend."""
    terminated = []
    deadline = time.monotonic() + 60
    while not terminated and proc.poll() is None and time.monotonic() < deadline:
        terminated = query(env, """
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND backend_xid IS NOT NULL AND query LIKE '%patients_patient%'""")
        time.sleep(0.01)
    return terminated


def test_two_syncs_of_one_practice_at_once_run_one_after_the_other(database, tmp_path):
    """A nightly sync and a Sync now at the same moment (H-051 (c)): the second waits for the
    first and plans from what it stored, so it finds every patient there. (Planned from
    before the first's commit, its new patients collided with the first's and it failed.)"""
    env = database
    rows = synthetic_rows(20_000)
    source = write_list(tmp_path / "list.csv", rows)
    both = [subprocess.Popen(command(*sync_args(source, "csv")), env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in both]
    assert [p.returncode for p in both] == [0, 0], [e[-2000:] for _, e in outputs]
    reports = sorted((json.loads(out) for out, _ in outputs), key=lambda r: r["run_id"])
    assert [(r["created"], r["unchanged"]) for r in reports] == [(20_000, 0), (0, 20_000)]
    assert [status for _, status in runs(env)] == ["completed", "completed"]
    assert assert_whole_or_absent(env, rows) == set(expected(rows))


HOLD_THE_SYNC_LOCK = """
import time, django
django.setup()
from practicesync.patients.sync import SYNC_LOCK
from practicesync.practices.models import Practice
from practicesync.runtime.locks import practice_lock
with practice_lock(SYNC_LOCK, Practice.objects.get(slug="harbour").id, wait=0):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_sync_killed_while_holding_the_practice_lets_the_next_one_go_at_once(database,
                                                                               tmp_path):
    """The sync lock is held by a database session (PostgreSQL) or an open file (SQLite):
    kill -9 its holder and the sync waiting for it goes on, without a timeout."""
    env = database | {"DJANGO_SETTINGS_MODULE": "practicesync.settings"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_SYNC_LOCK], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert holder.stdout.readline() == "held\n", holder.stderr.read()[-2000:]
    rows = synthetic_rows(50)
    waiting = subprocess.Popen(command(*sync_args(write_list(tmp_path / "l.csv", rows), "csv")),
                               env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    time.sleep(3)
    assert waiting.poll() is None  # waiting for the lock
    assert stored(env) == []
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    stdout, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stderr[-2000:]
    assert json.loads(stdout)["created"] == 50


def test_a_dropped_database_connection_fails_the_run_and_stores_nothing(database, tmp_path):
    if not PG:
        pytest.skip("PostgreSQL only: an embedded SQLite database has no connection to drop")
    env = database
    rows = synthetic_rows(ROWS)
    source = write_list(tmp_path / "list.csv", rows)
    proc = subprocess.Popen(command(*sync_args(source, "csv")), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    terminated = drop_sync_connection(env, proc)
    stdout, stderr = proc.communicate(timeout=60)
    assert terminated, "the sync ended before its connection could be dropped"

    assert proc.returncode != 0
    # psycopg's words depend on what the backend was doing (a COPY, a query) when it ended.
    assert any(words in stderr for words in (
        "terminating connection", "server closed the connection", "connection is lost",
        "connection is closed")), stderr[-2000:]
    output = stdout + stderr
    assert not any(r["given_name"] in output or r["pms_id"] in output for r in rows), output[-3000:]
    assert stored(env) == []
    # The failed rollback closes the connection and the failure is recorded on a new one.
    [(status, failure)] = query(env, "SELECT status, failure FROM patients_syncrun")
    assert status == "failed" and failure.startswith("OperationalError("), failure

    done = cli(env, *sync_args(source, "csv"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert assert_whole_or_absent(env, rows) == set(expected(rows))


def test_a_dropped_connection_fails_a_queued_sync_and_the_worker_carries_on(database, tmp_path):
    if not PG:
        pytest.skip("PostgreSQL only: an embedded SQLite database has no connection to drop")
    env = database
    rows = synthetic_rows(ROWS)
    source = write_list(tmp_path / "list.csv", rows)
    assert cli(env, "practice", "schedule", "--practice", "harbour", "--source", source
               ).returncode == 0
    query(env, "UPDATE practices_practice SET next_sync_due = now() - interval '1 minute'")
    proc = subprocess.Popen(command("worker", "--once"), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    terminated = drop_sync_connection(env, proc)
    stdout, stderr = proc.communicate(timeout=60)
    assert terminated, "the sync ended before its connection could be dropped"

    # The task fails and is logged; the worker goes on to the other tasks of its pass.
    assert proc.returncode == 0, stderr[-2000:]
    tasks = query(env, "SELECT task_path, status, exception_class_path "
                       "FROM django_tasks_database_dbtaskresult")
    assert ("practicesync.patients.tasks.nightly_patient_sync", "FAILED",
            "django.db.utils.OperationalError") in tasks
    assert {status for path, status, _ in tasks if "nightly" not in path} == {"SUCCESSFUL"}
    output = stdout + stderr
    assert not any(r["given_name"] in output or r["pms_id"] in output for r in rows), output[-3000:]
    assert stored(env) == []
    [(status, failure)] = query(env, "SELECT status, failure FROM patients_syncrun")
    assert status == "failed" and failure.startswith("OperationalError("), failure

    done = cli(env, "sync", "now", "--practice", "harbour", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert assert_whole_or_absent(env, rows) == set(expected(rows))


# --- read-only database, full disk (SQLite) --------------------------------------------------

sqlite_only = pytest.mark.skipif(PG, reason="SQLite faults: the suite runs on PostgreSQL")


@sqlite_only
def test_a_read_only_database_refuses_the_sync_and_is_left_unchanged(database, tmp_path):
    env = database
    first = synthetic_rows(200)
    assert cli(env, *sync_args(write_list(tmp_path / "first.csv", first), "csv")).returncode == 0
    before = checksum(env)
    rows = first + synthetic_rows(500, start=200)

    done = cli(env | {"PRACTICESYNC_SQLITE_PRAGMAS": "PRAGMA query_only=ON;"},
               *sync_args(write_list(tmp_path / "list.csv", rows), "csv"))

    assert done.returncode == 1
    assert "attempt to write a readonly database" in done.stderr
    assert not any(r["given_name"] in done.stderr for r in rows)
    assert checksum(env) == before
    assert len(stored(env)) == 200


@sqlite_only
def test_a_full_disk_fails_the_sync_stores_nothing_and_a_rerun_succeeds(database, tmp_path):
    env = database
    first = synthetic_rows(200)
    assert cli(env, *sync_args(write_list(tmp_path / "first.csv", first), "csv")).returncode == 0
    before = stored(env)
    [(pages,)] = query(env, "PRAGMA page_count")
    rows = first + synthetic_rows(ROWS, start=200)
    source = write_list(tmp_path / "list.csv", rows)

    full = cli(env | {"PRACTICESYNC_SQLITE_PRAGMAS": f"PRAGMA max_page_count={pages + 20};"},
               *sync_args(source, "csv"))

    assert full.returncode == 1
    assert "database or disk is full" in full.stderr
    assert not any(r["given_name"] in full.stderr for r in rows[200:])
    assert stored(env) == before
    # The run that failed is on record as failed, with SQLite's reason.
    assert query(env, "SELECT status, failure FROM patients_syncrun ORDER BY id") == [
        ("completed", ""), ("failed", "OperationalError('database or disk is full')")]

    done = cli(env, *sync_args(source, "csv"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert assert_whole_or_absent(env, rows) == set(expected(rows))


@sqlite_only
def test_a_database_error_is_reported_in_one_line_naming_the_database(database, tmp_path):
    env = database | {"PRACTICESYNC_SQLITE_PRAGMAS": "PRAGMA query_only=ON;"}
    done = cli(env, *sync_args(write_list(tmp_path / "list.csv", synthetic_rows(5)), "csv"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "practicesync.sqlite3" in line and "readonly" in line


# --- the MLLP listener killed mid-stream -----------------------------------------------------

LAB_MESSAGES = 400
LISTENER_KILLS = 4


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_listener(env: dict, port: int, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        proc = subprocess.Popen(command("mllp", "--port", port, "--practice", "harbour"),
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "mllp listening" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    return proc


def lab_oru(control: str) -> bytes:
    return ("\r".join([
        rf"MSH|^~\&|SUPERLIS|QML|PRACTICESYNC|SURGERY|20260101120000||ORU^R01|{control}|P|2.4",
        "PID|1||S00001^^^^PI||Family1^Given1||19410202|F", "ORC|RE",
        f"OBR|1||{control}^SUPERLIS|FBC^Full blood count|||20260101",
        "OBX|1|NM|HB^Haemoglobin||140|g/L|115-165|N|||F"]) + "\r").encode()


def send_and_wait_for_ack(sock, message: bytes) -> bytes:
    sock.sendall(b"\x0b" + message + b"\x1c\r")
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the listener closed the connection")
        data += chunk
    return data


def test_a_listener_killed_mid_stream_loses_no_acked_message_and_stores_none_twice(
        database, tmp_path):
    """A lab's interface engine sends one ORU at a time and waits for its ACK; a message
    whose ACK did not come is sent again once the listener is back, as MLLP engines do. The
    listener (storing and applying) is killed with SIGKILL at random moments and restarted."""
    import socket

    env = database
    patients = write_list(tmp_path / "list.csv", synthetic_rows(2))
    assert cli(env, *sync_args(patients, "csv")).returncode == 0
    port = free_port()
    controls = [f"KILL-{i:04d}" for i in range(LAB_MESSAGES)]
    acked, kills_mid_stream = set(), 0
    rng = random.Random()
    i = 0
    for round_ in range(LISTENER_KILLS + 1):
        listener = start_listener(env, port, tmp_path / f"mllp-{round_}.log")
        # Killed a random few milliseconds after a random message of the round was ACKed:
        # while the next one is being read, stored, acknowledged or applied.
        kill_after = rng.randint(10, 70) if round_ < LISTENER_KILLS else None
        killer, sent_this_round = None, 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                while i < len(controls):
                    ack = send_and_wait_for_ack(sock, lab_oru(controls[i]))
                    assert b"MSA|AA|" + controls[i].encode() in ack, ack
                    acked.add(controls[i])
                    i += 1
                    sent_this_round += 1
                    if sent_this_round == kill_after:
                        killer = threading.Timer(rng.uniform(0, 0.05), listener.send_signal,
                                                 [signal.SIGKILL])
                        killer.start()
        except OSError:  # killed: reconnect to the restarted listener, send message i again
            kills_mid_stream += 1
        if killer is not None:
            killer.join()
        if round_ < LISTENER_KILLS:
            listener.send_signal(signal.SIGKILL)
        else:
            listener.send_signal(signal.SIGTERM)
        listener.wait(timeout=30)
    assert kills_mid_stream == LISTENER_KILLS and i == len(controls), (kills_mid_stream, i)
    assert acked == set(controls)

    # What the killed listeners had accepted but not applied is applied by the worker.
    worker = cli(env, "worker", "--once")
    assert worker.returncode == 0, worker.stderr[-2000:]
    inbox = query(env, "SELECT control_id, state FROM hl7v2_inboundmessage")
    assert sorted(c for c, _ in inbox) == sorted(controls), "an ACKed message lost or stored twice"
    assert {state for _, state in inbox} == {"processed"}
    results = query(env, "SELECT result_id FROM results_result")
    ids = [r for (r,) in results]
    assert len(ids) == len(set(ids)) == LAB_MESSAGES
    assert all(any(c in r for c in controls) for r in ids)
