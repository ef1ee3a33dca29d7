"""`make bench`: the Patient Sync quality bars of DESIGN.md section 7.

Uses a throwaway SQLite database in a temp dir, or DATABASE_URL when it is set (point that at
a throwaway PostgreSQL database: the bench's practices and patients are left in it). Writes
bench/results.json and prints the same figures as a Markdown table.

Every figure is measured in a fresh subprocess (`python -m bench.run --one KIND ...`), so no
measurement inherits another's memory, caches or garbage, and each subprocess's peak RSS
(see peak_rss_mb) belongs to its one measurement. The parent only prepares the database and
the lists, checks the counts and reports.

Exit status is non-zero only when something crashed or a run's counts are not sane; a missed
target is shown as MISSED in the table, not treated as a failure.

To see where the time goes (py-spy is a dev dependency; it follows the subprocesses):
    .venv/bin/py-spy record --subprocesses -o profile.svg -- .venv/bin/python -m bench.run
"""

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results.json"

PATIENTS = 100_000
CHANGED_SHARE = 0.01
SEED = 7
ACTOR = "bench"
PMS, COUNTRY = "docman10", "GB"


class InsaneCounts(Exception):
    """A run did not do what the list asked: its timing means nothing."""


# --- setup ----------------------------------------------------------------------------------

def setup_django(home: Path) -> str:
    """Point practicesync at `home` (its SQLite file lives there) and start Django.
    Returns the database backend: "sqlite" or "postgresql"."""
    os.environ["PRACTICESYNC_HOME"] = str(home)
    os.environ["DJANGO_SETTINGS_MODULE"] = "practicesync.settings"
    import django

    django.setup()
    from django.db import connection

    return connection.vendor


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def new_practice(name: str) -> int:
    from practicesync.practices.actions import create_practice, permit_sync

    practice = create_practice(actor=ACTOR, name=name, pms=PMS, country=COUNTRY)
    permit_sync(actor=ACTOR, practice=practice, granted_by="bench", dpia_ref="BENCH-ONLY")
    return practice.id


@dataclass(frozen=True)
class Lists:
    full: Path
    rerun: Path
    valid_rows: int  # rows of the full list that check_row accepts
    changed_rows: int  # rows of the re-run list that differ from the full list


def write_lists(work: Path) -> Lists:
    from practicesync.connectors.csvfile.patient_list import read_patient_list
    from practicesync.connectors.profiles import get_profile
    from practicesync.patients.sync import check_rows
    from practicesync.simulator.patients import (
        change_some,
        generate_practice_list,
        write_canonical_list,
    )

    rows = generate_practice_list(PATIENTS, seed=SEED, country=COUNTRY)
    changed = change_some(rows, share=CHANGED_SHARE)
    full = write_canonical_list(work / "list_full.csv", rows)
    rerun = write_canonical_list(work / "list_rerun_1pct.csv", changed)
    valid, _, _ = check_rows(read_patient_list(str(full), get_profile(PMS)), COUNTRY)
    return Lists(full, rerun, valid_rows=len(valid),
                 changed_rows=sum(a != b for a, b in zip(rows, changed, strict=True)))


# --- measurements (each runs in its own subprocess) -----------------------------------------

def peak_rss_mb() -> float:
    """This process's own peak RSS. On Linux that is VmHWM, not ru_maxrss: the kernel starts
    a spawned child's ru_maxrss at the parent's RSS, which here holds 200,000 generated rows."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        kib = 1 / 1024 if sys.platform == "darwin" else 1  # macOS reports bytes
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 1024


def measure_sync(practice_id: int, source: str) -> dict:
    """One `sync_patient_list` run, as the nightly worker would do it."""
    from practicesync.patients.models import Patient
    from practicesync.patients.sync import sync_patient_list
    from practicesync.practices.models import Practice

    practice = Practice.objects.get(id=practice_id)
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    report = sync_patient_list(practice=practice, source=source, actor=ACTOR)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before,
            "status": report.status, "counts": report.summary, "errors": len(report.errors),
            "stored": Patient.objects.filter(practice=practice).count()}


# The list's columns as patients_patient stores them (registration_status becomes status).
LIST_COLUMNS = ("pms_id", "nhs_number", "medicare_number", "ihi", "title", "given_name",
                "family_name", "date_of_birth", "sex", "mobile_phone", "home_phone", "email",
                "address_line1", "address_line2", "locality", "postcode", "status",
                "date_of_death")
NULL_WHEN_EMPTY = {"nhs_number", "medicare_number", "ihi", "mobile_phone", "home_phone",
                   "email", "date_of_death"}
FIXED_COLUMNS = ("practice_id", "digital", "link_reason", "list_fingerprint", "created_at",
                 "updated_at")


def upsert_sql(table: str, placeholder: str) -> str:
    columns = (*LIST_COLUMNS, *FIXED_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in (*LIST_COLUMNS[1:], "updated_at"))
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join([placeholder] * len(columns))}) "
            f"ON CONFLICT (practice_id, pms_id) WHERE pms_id IS NOT NULL "
            f"DO UPDATE SET {updates}")


def raw_values(raw: dict, fixed: tuple) -> tuple:
    raw = {**raw, "status": raw["registration_status"] or "active"}
    return (*((raw[c] or None) if c in NULL_WHEN_EMPTY else raw[c] for c in LIST_COLUMNS),
            *fixed)


def driver_cursor(connection):
    """The database driver's own DB-API cursor, without Django's wrapper. On PostgreSQL that
    is psycopg's plain Cursor (server-side binding, pipelined executemany), not the
    client-side-binding cursor Django uses by default. Returns (cursor, placeholder)."""
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        import psycopg

        return psycopg.Cursor(connection.connection), "%s"
    return connection.connection.cursor(), "?"


def measure_raw_upsert(practice_id: int, source: str) -> dict:
    """The baseline: the least work any loader of this list into this table must do.

    It reads the same CSV file and writes every row into the same patients_patient table
    with one plain `INSERT ... ON CONFLICT (practice_id, pms_id) WHERE pms_id IS NOT NULL
    DO UPDATE` through the driver's own DB-API cursor (executemany, one transaction), into a
    practice of its own. No checking, normalising, matching, fingerprints, audit events or
    review items: those are exactly what Patient Sync adds, so ratio = sync / baseline is the
    price of the sync's rules on this backend and, unlike the seconds, depends little on how
    fast or how busy the machine is.

    On a re-run it rewrites all rows, changed or not, as a naive nightly loader would; the
    sync writes only what changed, so its re-run ratio can fall below 1. The baseline runs
    just before the sync it is compared with, so its table holds fewer rows at that moment:
    if anything, the ratios are overstated.
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from practicesync.patients.models import Patient

    start = time.perf_counter()
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    fixed = (practice_id, False, "raw_baseline", "", now, now)
    with open(source, newline="", encoding="utf-8") as f, transaction.atomic():
        cursor, placeholder = driver_cursor(connection)
        cursor.executemany(upsert_sql(Patient._meta.db_table, placeholder),
                           (raw_values(raw, fixed) for raw in csv.DictReader(f)))
        cursor.close()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "stored": Patient.objects.filter(practice_id=practice_id).count()}


MEASUREMENTS = {"sync": measure_sync, "raw_upsert": measure_raw_upsert}


def run_one(kind: str, practice_id: int, source: Path) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is the result."""
    print(f"  {kind:<10} {source.name} ...", end=" ", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--one", kind, "--practice", str(practice_id),
         "--source", str(source)],
        cwd=REPO, env=os.environ.copy(), check=True, stdout=subprocess.PIPE, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{result['seconds']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


# --- checks and results ---------------------------------------------------------------------

def check(ok: bool, what: str, result: dict) -> None:
    if not ok:
        raise InsaneCounts(f"{what}; got {json.dumps(result, default=str)}")


def check_full(full: dict, lists: Lists) -> None:
    counts = full["counts"]
    check(counts["created"] == lists.valid_rows == full["stored"] and counts["updated"] == 0,
          f"full run should create all {lists.valid_rows} valid rows and update none", full)


def check_rerun(rerun: dict, lists: Lists) -> None:
    counts, expected = rerun["counts"], lists.changed_rows
    check(counts["created"] == 0 and counts["left_practice"] == 0
          and 0.95 * expected <= counts["updated"] <= expected,
          f"re-run should update about {expected} patients (the changed rows), create none "
          f"and mark none as left", rerun)


def check_raw(raw: dict, lists: Lists) -> None:
    check(raw["stored"] == PATIENTS, f"raw upsert should leave {PATIENTS} rows", raw)


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    backend: str
    baseline: float | None
    target: str
    limit: float  # value must be below this to meet the target
    workers: int = 1

    @property
    def ratio(self) -> float | None:
        return round(self.value / self.baseline, 2) if self.baseline else None

    @property
    def met(self) -> bool:
        return self.value < self.limit

    def as_json(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "backend": self.backend, "workers": self.workers, "baseline": self.baseline,
                "ratio": self.ratio, "target": self.target}


def bench_patient_sync(work: Path, backend: str) -> tuple[list[Result], list[str]]:
    print(f"Writing two lists of {PATIENTS:,} synthetic patients ...", flush=True)
    lists = write_lists(work)
    sync_practice = new_practice("Bench Patient Sync")
    raw_practice = new_practice("Bench Raw Upsert")
    print("Measuring, each in a fresh subprocess:", flush=True)
    raw_full = run_one("raw_upsert", raw_practice, lists.full)
    full = run_one("sync", sync_practice, lists.full)
    raw_rerun = run_one("raw_upsert", raw_practice, lists.rerun)
    rerun = run_one("sync", sync_practice, lists.rerun)

    check_raw(raw_full, lists)
    check_raw(raw_rerun, lists)
    check_full(full, lists)
    check_rerun(rerun, lists)

    results = [
        Result("patient_sync_full_100k", round(full["seconds"], 2), "s", backend,
               round(raw_full["seconds"], 2), "< 20 s", 20),
        Result("patient_sync_rerun_1pct", round(rerun["seconds"], 2), "s", backend,
               round(raw_rerun["seconds"], 2), "< 5 s", 5),
        Result("patient_sync_peak_rss", round(full["peak_rss_mb"], 1), "MB", backend,
               None, "< 500 MB", 500),
    ]
    notes = [
        f"Full run: {full['counts']['created']:,} created of {lists.valid_rows:,} valid rows; "
        f"re-run: {rerun['counts']['updated']:,} updated of {lists.changed_rows:,} changed rows.",
        "Each figure was measured in a fresh subprocess. patient_sync_peak_rss is the peak RSS "
        "(VmHWM, see peak_rss_mb) of the subprocess that ran only the full sync, Python and "
        f"Django included ({full['rss_before_mb']:.0f} MB before the sync started).",
        "baseline = raw INSERT ... ON CONFLICT DO UPDATE of the same CSV via DB-API "
        "executemany in one transaction, into a separate practice "
        "(see measure_raw_upsert in bench/run.py).",
    ]
    return results, notes


def markdown(results: list[Result]) -> str:
    def num(v):
        return "" if v is None else f"{v:g}"

    lines = ["| name | value | unit | backend | workers | baseline | ratio | target | result |",
             "|---|---:|---|---|---:|---:|---:|---|---|"]
    lines += [f"| {r.name} | {num(r.value)} | {r.unit} | {r.backend} | {r.workers} | "
              f"{num(r.baseline)} | {num(r.ratio)} | {r.target} | {'ok' if r.met else 'MISSED'} |"
              for r in results]
    return "\n".join(lines)


# --- entry points ---------------------------------------------------------------------------

def run_all(keep: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="practicesync-bench-"))
    try:
        backend = setup_django(work)
        migrate()
        print(f"Database: {backend}" + ("" if os.environ.get("DATABASE_URL")
                                        else f" ({work / 'practicesync.sqlite3'})"))
        try:
            results, notes = bench_patient_sync(work, backend)
        except InsaneCounts as e:
            print(f"\nbench: counts are not sane, no results written: {e}", file=sys.stderr)
            return 1
        RESULTS.write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")
        print(f"\n{markdown(results)}\n")
        print("\n".join(f"- {n}" for n in notes))
        print(f"\nWrote {RESULTS.relative_to(REPO)}")
        return 0
    finally:
        if keep:
            print(f"Kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_child(kind: str, practice_id: int, source: str) -> int:
    setup_django(Path(os.environ["PRACTICESYNC_HOME"]))
    print(json.dumps(MEASUREMENTS[kind](practice_id, source)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and database")
    parser.add_argument("--one", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--practice", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return run_child(args.one, args.practice, args.source)
    return run_all(args.keep)


if __name__ == "__main__":
    sys.exit(main())
