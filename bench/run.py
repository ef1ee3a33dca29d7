"""`make bench`: the quality bars of DESIGN.md section 7: Patient Sync and HL7 ingest (here),
outreach (bench/outreach.py), matching on FEBRL 4 (bench/matching.py).

Runs every bench on a throwaway SQLite database in a temp dir, then again on PostgreSQL when
the server at PRACTICESYNC_BENCH_PG (default postgres://postgres@127.0.0.1:5432/) is
reachable, in a database practicesync_bench_<pid> created for the run and dropped after it
(DATABASE_URL is ignored). Each backend runs in a child process of its own. Results carry
their backend and workers: SQLite has one writer, so everything there runs with one worker;
on PostgreSQL the outreach tick and the MLLP listener are measured with one and with two
processes sharing the queue / inbox. Writes bench/results.json (DESIGN.md section 7) and
bench/results.md (the same as a Markdown table, with notes), and prints the table.
`--backend sqlite|postgresql|all`, `--only PART` and `--scale 0.05` (every count times 0.05)
give a quick try; a run at another scale adds "scale" to every result.

Every figure is measured in a fresh subprocess (`python -m bench.run --one KIND ...`), so no
measurement inherits another's memory, caches or garbage, and each subprocess's peak RSS
(see peak_rss_mb) belongs to its one measurement. The parent only prepares the database and
the lists, checks the counts and reports.

HL7 ingest (hl7_ingest_mllp): `python -m practicesync mllp --no-process` (store, commit,
acknowledge; applying the inbox is the worker's job, DESIGN.md section 5) runs as its own
process on a free 127.0.0.1 port, for a practice created and permitted through the CLI (on
PostgreSQL also as two such processes on two ports, sharing the practice's inbox, as a
practice would scale it); HL7_CLIENTS raw-socket MLLP clients (threads of the parent, spread
over the ports) stream HL7_MESSAGES synthetic AU-style ORU^R01 messages (distinct MSH-10),
each waiting for its message's ACK before sending the next; every ACK must be AA.
Its baseline (also its own row, hl7_ingest_parse_only) is full python-hl7 parsing (`hl7.parse`)
of the same messages, measured in a fresh subprocess of the same run.

Exit status is non-zero only when something crashed or a run's counts are not sane (the
other backend still runs, and the results of the backends that finished are written, the
failure named in the notes); a missed target is shown as MISSED in the table, not treated
as a failure.

To see where the time goes (py-spy is a dev dependency; it follows the subprocesses):
    .venv/bin/py-spy record --subprocesses -o profile.svg -- .venv/bin/python -m bench.run
"""

import argparse
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import matching, outreach
from bench.common import (
    REPO,
    InsaneCounts,
    Result,
    check,
    migrate,
    peak_rss_mb,
    run_one,
    scaled,
    set_scale,
    setup_django,
)

PATIENTS = 100_000
CHANGED_SHARE = 0.01
SEED = 7
ACTOR = "bench"
PMS, COUNTRY = "docman10", "GB"


# --- setup ----------------------------------------------------------------------------------

def new_practice(name: str) -> int:
    from practicesync.practices.actions import create_practice, permit_sync

    practice = create_practice(actor=ACTOR, name=name, pms=PMS, country=COUNTRY)
    permit_sync(actor=ACTOR, practice=practice, granted_by="bench", dpia_ref="BENCH-ONLY")
    return practice.id


@dataclass(frozen=True)
class Lists:
    patients: int
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

    patients = scaled(PATIENTS)
    rows = generate_practice_list(patients, seed=SEED, country=COUNTRY)
    changed = change_some(rows, share=CHANGED_SHARE)
    full = write_canonical_list(work / "list_full.csv", rows)
    rerun = write_canonical_list(work / "list_rerun_1pct.csv", changed)
    valid, _, _ = check_rows(read_patient_list(str(full), get_profile(PMS)), COUNTRY)
    return Lists(patients, full, rerun, valid_rows=len(valid),
                 changed_rows=sum(a != b for a, b in zip(rows, changed, strict=True)))


# --- measurements (each runs in its own subprocess) -----------------------------------------

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


MEASUREMENTS = {"sync": measure_sync, "raw_upsert": measure_raw_upsert, **outreach.MEASUREMENTS,
                **matching.MEASUREMENTS}


# --- checks and results ---------------------------------------------------------------------

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
    check(raw["stored"] == lists.patients, f"raw upsert should leave {lists.patients} rows", raw)


def bench_patient_sync(work: Path, backend: str) -> tuple[list[Result], list[str]]:
    lists = write_lists(work)
    print(f"Wrote two lists of {lists.patients:,} synthetic patients", flush=True)
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



# --- HL7 ingest over MLLP -------------------------------------------------------------------

HL7_MESSAGES = 5_000
HL7_CLIENTS = 8
HL7_TARGET = 1_000      # msg/s, PostgreSQL (DESIGN.md section 7)
HL7_TIME_LIMIT = 300    # seconds: the whole stream, start to last ACK
HL7_SOCKET_TIMEOUT = 30
VT, FS, CR = b"\x0b", b"\x1c", b"\r"

# (OBR-4 code^name, [(OBX-3 code^name, unit, low, high, decimals)]): AU pathology panels.
PANELS = [
    ("26604-7^Full blood count^LN", [
        ("718-7^Haemoglobin^LN", "g/L", 115, 165, 0), ("6690-2^White cell count^LN", "x10*9/L",
                                                       4.0, 11.0, 1),
        ("777-3^Platelets^LN", "x10*9/L", 150, 400, 0), ("4544-3^Haematocrit^LN", "L/L", 0.35,
                                                         0.47, 2)]),
    ("24362-6^Urea, electrolytes and creatinine^LN", [
        ("2951-2^Sodium^LN", "mmol/L", 135, 145, 0), ("2823-3^Potassium^LN", "mmol/L", 3.5, 5.2, 1),
        ("2160-0^Creatinine^LN", "umol/L", 45, 90, 0), ("62238-1^eGFR^LN", "mL/min/1.73m2", 60,
                                                         120, 0)]),
    ("4548-4^Haemoglobin A1c^LN", [("4548-4^HbA1c^LN", "%", 4.0, 6.0, 1),
                                   ("59261-8^HbA1c (IFCC)^LN", "mmol/mol", 20, 42, 0)]),
    ("24331-1^Lipid studies^LN", [
        ("14647-2^Cholesterol^LN", "mmol/L", 3.0, 5.5, 1), ("14927-8^Triglycerides^LN", "mmol/L",
                                                           0.5, 2.0, 1),
        ("14646-4^HDL cholesterol^LN", "mmol/L", 1.0, 2.2, 1)]),
    ("24325-3^Liver function tests^LN", [
        ("1751-7^Albumin^LN", "g/L", 35, 50, 0), ("1975-2^Bilirubin^LN", "umol/L", 3, 20, 0),
        ("1742-6^ALT^LN", "U/L", 5, 40, 0)]),
]
GIVEN = ["Olivia", "Jack", "Charlotte", "William", "Mia", "Noah", "Ava", "Oliver", "Isla", "Leo"]
FAMILY = ["Nguyen", "Smith", "Wilson", "Kelly", "O'Brien", "Taylor", "Papadopoulos", "Singh"]
SUBURBS = [("BRISBANE", "4000"), ("TOOWONG", "4066"), ("CAIRNS", "4870"), ("IPSWICH", "4305")]


def synthetic_oru(rng: random.Random, n: int) -> str:
    """One typical AU pathology ORU^R01 (HL7 AU v2.4 style, 1-3 OBR/OBX groups, ~1-2 KB)."""
    when = f"2026{rng.randint(1, 11):02d}{rng.randint(1, 28):02d}{rng.randint(7, 17):02d}" \
           f"{rng.randint(0, 59):02d}00"
    day = when[:8]
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    suburb, postcode = rng.choice(SUBURBS)
    doctor = f"0{rng.randint(100000, 999999)}A^Chen^Mei^^^DR^^^AUSHICPR"
    accession = f"26-{n:07d}"
    segments = [
        rf"MSH|^~\&|SUPERLIS^2.16.840.1.113883.2.13^ISO|QML PATHOLOGY^2184^AUSNATA|PRACTICESYNC|"
        rf"HARBOUR^8003621566684455^AUSHICPR|{when}+1000||ORU^R01^ORU_R01|QML{n:09d}|P|"
        rf"2.4^AUS&&ISO3166_1|||AL|NE|AUS",
        f"PID|1||{rng.randint(1000000, 9999999)}^^^QML^MR~{rng.randint(2000000000, 6999999999)}"
        f"^{rng.randint(1, 9)}^^AUSHIC^MC~800360{rng.randint(1000000000, 9999999999)}^^^AUSHIC^NI"
        f"||{family.upper()}^{given}^^^{rng.choice(['MR', 'MS', 'MRS'])}||"
        f"{rng.randint(1935, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}|"
        f"{rng.choice('MF')}|||{rng.randint(1, 200)} {rng.choice(['GEORGE', 'ANN', 'WICKHAM'])} "
        f"ST^^{suburb}^QLD^{postcode}^AUS||^PRN^CP^^^^04{rng.randint(10000000, 99999999)}",
        f"PV1|1|O|||||{doctor}",
        f"ORC|RE|{rng.randint(100000, 999999)}^HARBOUR|{accession}^QML||CM||||{when}|||{doctor}",
    ]
    for g, (test, observations) in enumerate(rng.sample(PANELS, rng.randint(1, 3)), 1):
        segments.append(
            f"OBR|{g}|{rng.randint(100000, 999999)}^HARBOUR|{accession}-{g}^QML|{test}|||"
            f"{day}0830|||||||{day}0915|Blood&Venous|{doctor}||||||{when}||CH|F||^^^^^R|"
            f"{doctor}")
        for o, (code, unit, low, high, decimals) in enumerate(observations, 1):
            value = round(rng.uniform(low * 0.8, high * 1.2), decimals)
            flag = "L" if value < low else "H" if value > high else "N"
            segments.append(f"OBX|{o}|NM|{code}||{value:.{decimals}f}|{unit}|{low}-{high}|{flag}"
                            f"|||F|||{day}0830")
        segments.append(f"NTE|1|L|Reported by QML Pathology, {suburb.title()}. Results "
                        rf"checked and validated.\.br\Please contact the laboratory on "
                        f"1300 000 000 with any query.")
    return "\r".join(segments) + "\r"


def write_hl7_messages(work: Path, count: int) -> Path:
    rng = random.Random(SEED)
    path = work / "oru_messages.mllp"
    with path.open("wb") as f:
        for n in range(count):
            f.write(VT + synthetic_oru(rng, n).encode("utf-8") + FS + CR)
    return path


def read_hl7_messages(path: Path | str) -> list[bytes]:
    """The framed file written by write_hl7_messages, one message (no framing) per item."""
    return [chunk[1:] for chunk in Path(path).read_bytes().split(FS + CR) if chunk]


def measure_hl7_parse(practice_id: int, source: str) -> dict:
    """The baseline: full python-hl7 parsing (hl7.parse) of every message, nothing stored."""
    import hl7

    texts = [m.decode("utf-8") for m in read_hl7_messages(source)]
    start = time.perf_counter()
    segments = sum(len(hl7.parse(text)) for text in texts)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "messages": len(texts),
            "segments": segments}


MEASUREMENTS["hl7_parse"] = measure_hl7_parse


def practicesync_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "practicesync", *args], cwd=REPO,
                          env=os.environ.copy(), check=True, stdout=subprocess.PIPE, text=True,
                          timeout=120)
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MllpListener:
    """`python -m practicesync mllp` as its own process, on loopback; stopped with SIGTERM."""

    def __init__(self, work: Path, slug: str):
        self.port = free_port()
        self.log = work / f"mllp-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "practicesync", "mllp", "--host", "127.0.0.1", "--port",
                 str(self.port), "--practice", slug, "--no-process"], cwd=REPO,
                env=os.environ.copy(),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while "mllp listening" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise InsaneCounts(f"the mllp listener did not start: {self.tail()}")
            time.sleep(0.1)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def stop(self, timeout: float = 60) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class ClientRun:
    """What one MLLP client saw: when it sent its first frame and got its last ACK."""

    first_send: float = 0.0
    last_ack: float = 0.0
    acks: dict = field(default_factory=dict)  # MSA-1 code -> count
    bad: list = field(default_factory=list)   # (sent MSH-10, ACK) of every non-AA answer
    error: str = ""


def control_id(message: bytes) -> str:
    return message.split(b"\r", 1)[0].split(b"|")[9].decode("utf-8")


def mllp_client(port: int, messages: list[bytes], start: threading.Barrier,
                run: ClientRun) -> None:
    """Send each message framed, wait for its ACK, check MSA-1 is AA and MSA-2 its MSH-10."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HL7_SOCKET_TIMEOUT) as sock:
            start.wait(timeout=HL7_SOCKET_TIMEOUT)
            pending = b""
            run.first_send = time.perf_counter()
            for message in messages:
                sock.sendall(VT + message + FS + CR)
                while FS + CR not in pending:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("the listener closed the connection before an ACK")
                    pending += chunk
                ack, pending = pending.split(FS + CR, 1)
                msa = next((line.split(b"|") for line in ack.lstrip(VT).split(b"\r")
                            if line.startswith(b"MSA")), [b"MSA", b"(none)", b""])
                code = msa[1].decode("utf-8", "replace") if len(msa) > 1 else "(none)"
                echoed = msa[2].decode("utf-8", "replace") if len(msa) > 2 else ""
                sent = control_id(message)
                if code != "AA" or echoed != sent:
                    code = code if code != "AA" else "AA-wrong-MSA-2"
                    run.bad.append((sent, ack.decode("utf-8", "replace")[:300]))
                run.acks[code] = run.acks.get(code, 0) + 1
            run.last_ack = time.perf_counter()
    except Exception as e:  # noqa: BLE001 - reported as insane counts by the parent
        run.error = f"{type(e).__name__}: {e}"


def stream_mllp(ports: list[int], messages: list[bytes], clients: int
                ) -> tuple[float, list[ClientRun]]:
    """`clients` concurrent clients, message i going to client i % clients and client c to
    port c % len(ports); the seconds from the first send to the last ACK."""
    runs = [ClientRun() for _ in range(clients)]
    start = threading.Barrier(clients)
    threads = [threading.Thread(target=mllp_client, daemon=True,
                                args=(ports[i % len(ports)], messages[i::clients], start,
                                      runs[i]))
               for i in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + HL7_TIME_LIMIT
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise InsaneCounts(f"the MLLP stream took longer than {HL7_TIME_LIMIT} s")
    firsts = [r.first_send for r in runs if r.first_send]
    lasts = [r.last_ack for r in runs if r.last_ack]
    seconds = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
    return seconds, runs


def ingest_over_mllp(work: Path, backend: str, messages: list[bytes], sizes: list[int],
                     listeners: int, parse_rate: float) -> tuple[Result, str]:
    """One stream into `listeners` listener processes of one new practice, sharing its inbox
    (a duplicate MSH key is refused by the inbox's unique constraint whichever listener
    stores it); HL7_CLIENTS clients spread over their ports."""
    from practicesync.connectors.hl7v2.models import InboundMessage

    count = len(messages)
    slug = json.loads(practicesync_cli("practice", "create", "--name",
                                       f"Bench HL7 Ingest x{listeners}", "--pms",
                                       "bestpractice", "--json"))["slug"]
    practicesync_cli("practice", "permit", "--practice", slug, "--granted-by", "bench",
                     "--dpia-ref", "BENCH-ONLY")
    procs: list[MllpListener] = []
    try:
        for _ in range(listeners):
            procs.append(MllpListener(work, slug))
        ports = [p.port for p in procs]
        print(f"  mllp x{listeners}    {HL7_CLIENTS} clients -> 127.0.0.1:"
              f"{','.join(map(str, ports))} ...", end=" ", flush=True)
        seconds, runs = stream_mllp(ports, messages, HL7_CLIENTS)
        print(f"{seconds:.2f} s", flush=True)
        stops = [p.stop() for p in procs]
    finally:
        for p in procs:
            p.kill()

    acks: dict[str, int] = {}
    for run in runs:
        for k, v in run.acks.items():
            acks[k] = acks.get(k, 0) + v
    stream = {"acks": acks, "errors": [r.error for r in runs if r.error],
              "bad": [b for r in runs for b in r.bad][:3], "seconds": seconds,
              "listener_exits": [code for code, _ in stops]}
    check(not stream["errors"], "every MLLP client should finish its stream", stream)
    check(acks == {"AA": count}, f"every one of {count} messages should be answered AA "
                                 f"echoing its MSH-10", stream)
    check(seconds > 0, "the stream should take some time", stream)
    check(all(code == 0 for code, _ in stops),
          f"every listener should exit 0 on SIGTERM (log: {procs[0].tail()})", stream)
    rows = InboundMessage.objects.filter(practice__slug=slug)
    stored = rows.count()
    distinct = rows.values("control_id").distinct().count()
    check(stored == distinct == count, f"the inbox should hold each of the {count} messages once",
          {**stream, "stored": stored, "distinct": distinct})
    states = {s: rows.filter(state=s).count() for s in InboundMessage.State.values}

    result = Result("hl7_ingest_mllp", round(count / seconds, 1), "msg/s", backend,
                    round(parse_rate, 1),
                    f">= {HL7_TARGET:,} msg/s" if backend == "postgresql"
                    else f"none on SQLite (>= {HL7_TARGET:,} msg/s on PostgreSQL)",
                    HL7_TARGET if backend == "postgresql" else 0, workers=listeners,
                    higher=True)
    note = (
        f"hl7_ingest_mllp x{listeners}: {count:,} synthetic AU ORU^R01 messages ("
        f"{sizes[len(sizes) // 2]:,} bytes median, {sizes[0]:,}-{sizes[-1]:,}; 1-3 OBR/OBX "
        f"groups) streamed by {HL7_CLIENTS} raw-socket MLLP clients to {listeners} "
        f"`practicesync mllp` process(es) of one practice on their own ports (commit mode: ACK "
        f"after the inbox commit), each client waiting for every ACK before its next message; "
        f"{acks.get('AA', 0):,} AA, first send to last ACK {seconds:.2f} s. The listeners only "
        f"store and acknowledge (--no-process; the worker applies the inbox); at SIGTERM "
        f"(exit {', '.join(str(code) for code, _ in stops)} after "
        f"{max(t for _, t in stops):.1f} s) the inbox held "
        + ", ".join(f"{n:,} {s}" for s, n in states.items() if n) + ".")
    return result, note


def bench_hl7_ingest(work: Path, backend: str) -> tuple[list[Result], list[str]]:
    count = scaled(HL7_MESSAGES, least=HL7_CLIENTS)
    print(f"Writing {count:,} synthetic AU ORU^R01 messages ...", flush=True)
    source = write_hl7_messages(work, count)
    messages = read_hl7_messages(source)
    sizes = sorted(len(m) for m in messages)
    check(len({control_id(m) for m in messages}) == count,
          "every synthetic message should have its own MSH-10", {"messages": len(messages)})

    print("Measuring parse-only (hl7.parse) in a fresh subprocess:", flush=True)
    parse = run_one("hl7_parse", 0, source)
    check(parse["messages"] == count, f"parse-only should parse {count} messages", parse)
    parse_rate = count / parse["seconds"]

    # SQLite has one writer: a second listener process would only queue on its lock.
    results, notes = [], []
    for listeners in (1, 2) if backend == "postgresql" else (1,):
        result, note = ingest_over_mllp(work, backend, messages, sizes, listeners, parse_rate)
        results.append(result)
        notes.append(note)
    results.append(Result("hl7_ingest_parse_only", round(parse_rate, 1), "msg/s", backend, None,
                          "- (baseline of hl7_ingest_mllp)", 0, higher=True))
    notes.append(f"hl7_ingest_parse_only = baseline: hl7.parse of the same {count:,} messages "
                 f"in a fresh subprocess ({parse['seconds']:.2f} s); no storing, no sockets.")
    if backend != "postgresql":
        notes.append("The hl7_ingest_mllp target applies to PostgreSQL; on SQLite the figure "
                     "is reported, not judged, with one listener (one writer).")
    return results, notes


def markdown(results: list[Result], notes: list[str], scale: float) -> str:
    def num(v):
        return "" if v is None else f"{v:g}"

    lines = []
    if scale != 1:
        lines += [f"Scale {scale:g}: every count is {scale:g} x the DESIGN.md size, so the "
                  f"figures cannot be held against the targets.", ""]
    lines += ["| name | value | unit | backend | workers | baseline | ratio | target | result |",
              "|---|---:|---|---|---:|---:|---:|---|---|"]
    lines += [f"| {r.name} | {num(r.value)} | {r.unit} | {r.backend} | {r.workers} | "
              f"{num(r.baseline)} | {num(r.ratio)} | {r.target} | {'ok' if r.met else 'MISSED'} |"
              for r in results]
    return "\n".join([*lines, "", *(f"- {n}" for n in notes)]) + "\n"


# --- entry points ---------------------------------------------------------------------------

BENCHES = {"patient_sync": bench_patient_sync, "hl7_ingest": bench_hl7_ingest,
           "outreach": outreach.bench_outreach, "matching": matching.bench_matching}
BACKENDS = ("sqlite", "postgresql")
PG_SERVER = "postgres://postgres@127.0.0.1:5432/"


def pg_url(server: str, database: str) -> str:
    return urlunsplit(urlsplit(server)._replace(path=f"/{database}"))


def pg_unreachable(server: str) -> str:
    """Why the PostgreSQL server cannot be used, or "" when it can."""
    import psycopg

    try:
        psycopg.connect(pg_url(server, "postgres"), connect_timeout=5).close()
    except psycopg.Error as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ""


@contextmanager
def temporary_database(server: str, keep: bool):
    """A new database practicesync_bench_<pid> on the server; its URL. Dropped afterwards
    (even with processes of the run still connected) unless `keep`."""
    import psycopg
    from psycopg import sql

    database = f"practicesync_bench_{os.getpid()}"
    name = sql.Identifier(database)
    with psycopg.connect(pg_url(server, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        yield pg_url(server, database)
    finally:
        if not keep:
            with psycopg.connect(pg_url(server, "postgres"), autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def run_backend(backend: str, only: str | None, keep: bool, results_to: Path) -> int:
    """Every bench (or `only` one) on the database the environment names; the results and
    notes go to `results_to` as JSON for the parent."""
    work = Path(tempfile.mkdtemp(prefix=f"practicesync-bench-{backend}-"))
    try:
        vendor = setup_django(work)
        if vendor != backend:
            print(f"bench: asked for {backend}, the database is {vendor}", file=sys.stderr)
            return 2
        migrate()
        try:
            results, notes = [], []
            for name, bench in BENCHES.items():
                if only in (None, name):
                    more, more_notes = bench(work, backend)
                    results += more
                    notes += more_notes
        except InsaneCounts as e:
            print(f"\nbench: counts are not sane on {backend}, no results: {e}", file=sys.stderr)
            return 1
        results_to.write_text(json.dumps({"results": [asdict(r) for r in results],
                                          "notes": notes}))
        return 0
    finally:
        if keep:
            print(f"Kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_all(backend: str, only: str | None, scale: float, keep: bool, out: Path) -> int:
    """Each backend in a child process of its own (Django binds one database per process)."""
    server = os.environ.get("PRACTICESYNC_BENCH_PG", PG_SERVER)
    backends, skipped = list(BACKENDS if backend == "all" else (backend,)), []
    if "postgresql" in backends and (why := pg_unreachable(server)):
        if backend == "postgresql":
            print(f"bench: PostgreSQL at PRACTICESYNC_BENCH_PG is not reachable: {why}",
                  file=sys.stderr)
            return 2
        backends.remove("postgresql")
        skipped.append(f"postgresql: skipped, the server at PRACTICESYNC_BENCH_PG is not "
                       f"reachable ({why}).")
    results, notes, failed = [], [], []
    for name in backends:
        print(f"\n=== {name} ===", flush=True)
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        with tempfile.TemporaryDirectory() as tmp, (
                temporary_database(server, keep) if name == "postgresql" else nullcontext()
        ) as url:
            if url:
                env["DATABASE_URL"] = url
                print(f"Database: {url}" + (" (kept)" if keep else " (dropped afterwards)"))
            part = Path(tmp) / "part.json"
            code = subprocess.run(
                [sys.executable, "-m", "bench.run", "--backend-run", name, "--scale", str(scale),
                 "--results-to", str(part), *(["--only", only] if only else []),
                 *(["--keep"] if keep else [])], cwd=REPO, env=env).returncode
            if code != 0 or not part.exists():
                failed.append(f"{name}: FAILED (exit {code}); see the output above.")
                continue
            got = json.loads(part.read_text())
        results += [Result(**r) for r in got["results"]]
        notes += [f"{name}: {n}" for n in got["notes"]]
    if not results:
        print("\nbench: no results, nothing written", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, [*notes, *skipped, *failed], scale)
    (out / "results.json").write_text(
        json.dumps([r.as_json() | ({"scale": scale} if scale != 1 else {}) for r in results],
                   indent=2) + "\n")
    (out / "results.md").write_text(table)
    print(f"\n{table}")
    print(f"Wrote {out / 'results.json'} and {out / 'results.md'}")
    return 1 if failed else 0


def run_child(kind: str, practice_id: int, source: str) -> int:
    setup_django(Path(os.environ["PRACTICESYNC_HOME"]))
    print(json.dumps(MEASUREMENTS[kind](practice_id, source)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dirs and the PostgreSQL database")
    parser.add_argument("--only", choices=BENCHES, help="run only this part of the bench")
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all",
                        help="all (default): SQLite, then PostgreSQL when reachable")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every count (default 1.0; e.g. 0.05 for a quick try)")
    parser.add_argument("--out", type=Path, default=REPO / "bench",
                        help="where results.json and results.md go (default bench/)")
    parser.add_argument("--backend-run", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--results-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--one", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--practice", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be above 0")
    if args.one:
        return run_child(args.one, args.practice, args.source)
    if args.backend_run:
        set_scale(args.scale)
        return run_backend(args.backend_run, args.only, args.keep, args.results_to)
    return run_all(args.backend, args.only, args.scale, args.keep, args.out)


if __name__ == "__main__":
    sys.exit(main())
