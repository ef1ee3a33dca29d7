"""Outreach in `make bench`: one tick over 100,000 due sequences, and sends under kill -9.

outreach_tick_100k: 100,000 active results sequences of one practice, all due at a Monday
10:00 practice time, each patient with a mobile. One `tick()` in a fresh subprocess takes
every first step (a queued message and audit event each, the sequence moved on) and delivers
all of them through the local outbox provider. Baseline: a raw DB-API executemany INSERT of
the same number of message rows in one transaction, in a fresh subprocess of the same run.
On PostgreSQL it is measured again with two workers: two `practicesync outreach tick`
processes started at once over another 100,000 due sequences, sharing the queue (SKIP
LOCKED); the value is the wall time from starting them until both exited with every message
sent, process start-up included (the notes give a start-up alone for scale).

kill9_duplicate_sends / kill9_lost_sends: 10,000 due sequences; `practicesync outreach tick`
runs as its own process (two at once on PostgreSQL, sharing the queue with SKIP LOCKED) and is
killed with SIGKILL at a random moment, again and again, each restart "later" by more than the
send lease so interrupted sends are recovered; then it runs to the end. Every message must be
in the outbox exactly once: a key there twice is a duplicate, a step with no outbox row a loss.
"""

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, InsaneCounts, Result, check, peak_rss_mb, run_one, scaled

TICK_SEQUENCES = 100_000
TICK_TARGET = 10  # seconds, DESIGN.md section 7
KILL_SENDS = 10_000
KILL_ROUNDS = 12
SEED = 11
ACTOR = "bench"


def monday_10am() -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Australia/Sydney"))


def seed_due_sequences(name: str, count: int) -> int:
    """A Best Practice practice with `count` patients, each with one automatic results group
    whose sequence is active and due now. Returns the practice id."""
    from practicesync.outreach.models import Sequence
    from practicesync.patients.models import Patient
    from practicesync.practices.actions import create_practice
    from practicesync.results.models import ResultGroup

    practice = create_practice(actor=ACTOR, name=name, pms="bestpractice")
    practice.sends_per_hour = 10 * count  # the bench measures the engine, not the throttle
    practice.save()
    template = practice.results_templates.get()
    now, batch = monday_10am(), 5_000
    for start in range(0, count, batch):
        patients = Patient.objects.bulk_create(
            Patient(practice=practice, pms_id=f"B{n}", given_name="Bench", family_name=f"P{n}",
                    date_of_birth=dt.date(1970, 1, 1) + dt.timedelta(days=n % 15_000),
                    mobile_phone=f"+614{n:08d}", email=f"p{n}@example.org")
            for n in range(start, min(start + batch, count)))
        groups = ResultGroup.objects.bulk_create(
            ResultGroup(practice=practice, patient=p, performed_on=dt.date(2026, 11, 20),
                        action="Non-Urgent Appointment", action_key=template.action_key,
                        priority=2, disposition="template", template=template)
            for p in patients)
        Sequence.objects.bulk_create(
            Sequence(practice=practice, group=g, template=template, state="active",
                     state_reason="bench", next_position=1, due_at=now, started_at=now,
                     started_by=ACTOR)
            for g in groups)
    return practice.id


# --- measurements (each in its own subprocess, see bench.run run_child) ---------------------

def tick_counts(practice_id: int) -> dict:
    """What a tick over seed_due_sequences' practice left: every first step sent once."""
    from practicesync.outreach.models import Message, OutboxEntry, Sequence

    return {"messages_sent": Message.objects.filter(
                practice_id=practice_id, status="sent",
                idempotency_key__startswith="results:").count(),
            "outbox": OutboxEntry.objects.filter(practice_id=practice_id).count(),
            "moved_on": Sequence.objects.filter(practice_id=practice_id, next_position=2).count()}


def measure_tick(practice_id: int, source: str) -> dict:
    from practicesync.outreach.dispatch import tick
    from practicesync.practices.models import Practice

    practice = Practice.objects.get(id=practice_id)
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    report = tick(now=monday_10am(), practice=practice)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before,
            "counts": report.as_json(), **tick_counts(practice_id)}


def measure_raw_messages(practice_id: int, source: str) -> dict:
    """The least a send can cost: one message row each, written with executemany."""
    from django.db import connection, transaction
    from django.utils import timezone

    from practicesync.patients.models import Patient

    patients = list(Patient.objects.filter(practice_id=practice_id).values_list("id", flat=True))
    now = timezone.now()
    rows = [(practice_id, pid, "results", "sms", f"+614{n:08d}", "", "Hello, this is a bench.",
             "sent", f"raw:{practice_id}:{pid}", 1, now, "outbox", "", "", ACTOR, now)
            for n, pid in enumerate(patients)]
    placeholder = "%s"
    sql = ("INSERT INTO outreach_message (practice_id, patient_id, kind, channel, \"to\", subject, "
           "body, status, idempotency_key, attempts, not_before, provider, provider_ref, error, "
           "created_by, created_at) VALUES (" + ", ".join([placeholder] * 16) + ")")
    start = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(),
            "rows": len(rows)}


MEASUREMENTS = {"outreach_tick": measure_tick, "raw_messages": measure_raw_messages}


# --- kill -9 --------------------------------------------------------------------------------

def tick_process(slug: str, now: dt.datetime) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "practicesync", "outreach", "tick", "--practice", slug, "--now",
         now.isoformat(), "--json"], cwd=REPO, env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def tick_processes(slug: str, workers: int) -> float:
    """`workers` tick processes started at once; the seconds until the last one exited."""
    start = time.perf_counter()
    procs = [tick_process(slug, monday_10am()) for _ in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise InsaneCounts(f"`outreach tick` exited {p.returncode}: {err[-2000:]}")
    return time.perf_counter() - start


# Seconds after a tick process starts (interpreter start-up included) to kill it: a tick of
# 10,000 sends takes about 1.5 s on SQLite and longer on PostgreSQL.
KILL_AFTER = (0.3, 1.5)


def kill9_run(slug: str, workers: int, rounds: int = KILL_ROUNDS,
              kill_after: tuple[float, float] = KILL_AFTER) -> dict:
    from practicesync.outreach.dispatch import LEASE

    rng = random.Random(SEED)
    now, kills, done = monday_10am(), 0, 0
    for _ in range(rounds):
        procs = [tick_process(slug, now) for _ in range(workers)]
        time.sleep(rng.uniform(*kill_after))
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.wait()
        done += 1
        now += 2 * LEASE  # interrupted sends are due for recovery (a lease runs from its claim)
    # Then run to the end, as a restarted worker would.
    for _ in range(5):
        procs = [tick_process(slug, now) for _ in range(workers)]
        for p in procs:
            if p.wait() != 0:
                raise InsaneCounts(f"a tick after the kills failed: {p.stderr.read()[-2000:]}")
        done += 1
        now += 2 * LEASE
    return {"kills": kills, "rounds": done}


def kill9_counts(practice_id: int) -> dict:
    from django.db.models import Count

    from practicesync.outreach.models import Message, OutboxEntry, Sequence

    expected = {f"results:{s}:1" for s in Sequence.objects.filter(practice_id=practice_id)
                .values_list("id", flat=True)}
    per_key = dict(OutboxEntry.objects.filter(practice_id=practice_id)
                   .values_list("idempotency_key").annotate(n=Count("id")))
    statuses = dict(Message.objects.filter(practice_id=practice_id).values_list("status")
                    .annotate(n=Count("id")))
    return {"duplicates": sum(n - 1 for n in per_key.values() if n > 1),
            "lost": len(expected - set(per_key)),
            "unexpected": len(set(per_key) - expected), "statuses": statuses}


# --- the bench ------------------------------------------------------------------------------

def bench_tick_workers(backend: str, sequences: int, workers: int, raw_seconds: float
                       ) -> tuple[Result, str]:
    """outreach_tick_100k with `workers` tick processes sharing one practice's queue."""
    from practicesync.practices.actions import create_practice
    from practicesync.practices.models import Practice

    print(f"Seeding {sequences:,} due sequences for {workers} tick processes ...", flush=True)
    practice_id = seed_due_sequences(f"Bench Outreach Tick x{workers}", sequences)
    slug = Practice.objects.get(id=practice_id).slug
    idle = create_practice(actor=ACTOR, name="Bench Idle Tick", pms="bestpractice").slug
    startup = tick_processes(idle, 1)
    print(f"  outreach tick x{workers} ...", end=" ", flush=True)
    seconds = tick_processes(slug, workers)
    print(f"{seconds:.2f} s")
    counts = tick_counts(practice_id) | kill9_counts(practice_id)
    check(counts["messages_sent"] == counts["outbox"] == counts["moved_on"] == sequences
          and counts["duplicates"] == counts["lost"] == 0,
          f"{workers} tick processes should send {sequences} first steps once each", counts)
    return (Result("outreach_tick_100k", round(seconds, 2), "s", backend, round(raw_seconds, 2),
                   f"< {TICK_TARGET} s", TICK_TARGET, workers=workers),
            f"outreach_tick_100k x{workers}: {workers} `practicesync outreach tick` processes "
            f"started at once over {sequences:,} due sequences of one practice (SKIP LOCKED), "
            f"wall time until both exited, each with its process start-up (one tick process "
            f"with nothing due: {startup:.2f} s); every message sent once. baseline = the "
            f"same raw INSERT as the one-worker row.")


def bench_outreach(work: Path, backend: str) -> tuple[list[Result], list[str]]:
    from practicesync.practices.models import Practice

    sequences, sends = scaled(TICK_SEQUENCES), scaled(KILL_SENDS)
    rounds = scaled(KILL_ROUNDS, least=3)
    print(f"Seeding {sequences:,} due results sequences ...", flush=True)
    tick_practice = seed_due_sequences("Bench Outreach Tick", sequences)
    print("Measuring, each in a fresh subprocess:", flush=True)
    raw = run_one("raw_messages", tick_practice, "-")
    ticked = run_one("outreach_tick", tick_practice, "-")
    check(ticked["messages_sent"] == ticked["outbox"] == ticked["moved_on"] == sequences,
          f"the tick should send {sequences} first steps", ticked)
    check(raw["rows"] == sequences, "the raw baseline should write one row per patient", raw)

    # SQLite has one writer: a second tick process would only wait for the first.
    workers = 2 if backend == "postgresql" else 1
    more = ([bench_tick_workers(backend, sequences, workers, raw["seconds"])]
            if workers > 1 else [])

    print(f"Seeding {sends:,} due sequences for the kill -9 run ...", flush=True)
    kill_practice = seed_due_sequences("Bench Kill Nine", sends)
    slug = Practice.objects.get(id=kill_practice).slug
    print(f"Killing `outreach tick` ({workers} at once) at random moments ...", flush=True)
    run = kill9_run(slug, workers, rounds)
    counts = kill9_counts(kill_practice)
    print(f"  {run['kills']} kills in {run['rounds']} rounds: {counts}")
    check(run["kills"] > 0, "the kill -9 run must really kill ticks mid-way", run)
    check(counts["unexpected"] == 0, "the outbox holds only this run's keys", counts)
    check(counts["statuses"].get("sent") == sends,
          f"all {sends} messages should end sent", counts)

    results = [
        Result("outreach_tick_100k", round(ticked["seconds"], 2), "s", backend,
               round(raw["seconds"], 2), f"< {TICK_TARGET} s", TICK_TARGET),
        *(result for result, _ in more),
        Result("kill9_duplicate_sends", counts["duplicates"], "sends", backend, None, "0", 1,
               workers=workers),
        Result("kill9_lost_sends", counts["lost"], "sends", backend, None, "0", 1,
               workers=workers),
    ]
    notes = [
        f"outreach_tick_100k: one tick() over {sequences:,} due sequences: "
        + ", ".join(f"{k} {v:,}" for k, v in ticked["counts"].items() if v)
        + f"; peak RSS {ticked['peak_rss_mb']:.0f} MB. baseline = raw executemany INSERT of "
        f"{sequences:,} message rows in one transaction.",
        *(note for _, note in more),
        f"kill9: {sends:,} sends, `practicesync outreach tick` x{workers} killed with "
        f"SIGKILL {run['kills']} times at random moments over {rounds} rounds, then run to "
        f"the end; messages by status {counts['statuses']}.",
    ]
    return results, notes


def main(argv=None) -> int:
    """`python -m bench.outreach kill9`: the kill -9 run alone, on the database the
    environment names (PRACTICESYNC_HOME's SQLite or DATABASE_URL), printing its counts as
    JSON. The test suite runs it small on both backends (tests/test_outreach_kill9.py)."""
    import argparse

    from bench.common import migrate, setup_django

    parser = argparse.ArgumentParser(prog="python -m bench.outreach")
    parser.add_argument("run", choices=["kill9"])
    parser.add_argument("--sends", type=int, default=KILL_SENDS)
    parser.add_argument("--rounds", type=int, default=KILL_ROUNDS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--kill-after", type=float, nargs=2, default=KILL_AFTER)
    args = parser.parse_args(argv)
    setup_django(Path(os.environ.get("PRACTICESYNC_HOME", "var")))
    migrate()
    from practicesync.practices.models import Practice

    practice_id = seed_due_sequences("Kill Nine", args.sends)
    run = kill9_run(Practice.objects.get(id=practice_id).slug, args.workers, args.rounds,
                    tuple(args.kill_after))
    print(json.dumps(run | kill9_counts(practice_id)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
