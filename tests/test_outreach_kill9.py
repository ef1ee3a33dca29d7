"""Sends under kill -9 (DESIGN.md section 7): `practicesync outreach tick` processes are killed
with SIGKILL at random moments and restarted; every message must reach the outbox exactly
once. Runs on the backend of the suite: SQLite, or PostgreSQL with two workers at once."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent
SENDS = 15_000


@pytest.fixture
def database(tmp_path):
    """A database of its own for the processes: SQLite in tmp_path, or a new PostgreSQL one."""
    env = {**os.environ, "PRACTICESYNC_HOME": str(tmp_path)}
    url = os.environ.get("DATABASE_URL")
    if not url:
        env.pop("DATABASE_URL", None)
        yield env, 1
        return
    name = f"kill9_{uuid.uuid4().hex[:12]}"
    server = url.rsplit("/", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield env | {"DATABASE_URL": f"{server}/{name}"}, 2
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.slow
def test_killed_workers_never_send_twice_and_never_lose_a_send(database):
    env, workers = database
    done = subprocess.run(
        [sys.executable, "-m", "bench.outreach", "kill9", "--sends", str(SENDS), "--rounds", "6",
         "--workers", str(workers), "--kill-after", "0.5", "2.0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["kills"] > 0, counts  # the run must really have been interrupted
    assert counts["duplicates"] == 0 and counts["lost"] == 0 and counts["unexpected"] == 0, counts
    assert counts["statuses"] == {"sent": SENDS}, counts
