"""Hostile input: what arrives from outside (HL7 v2 bytes and MLLP streams, CSV files, FHIR
JSON) never crashes the product, never raises anything but the documented errors, and every
refusal says where (segment and field, row and column, resource path).

Example counts come from a Hypothesis profile chosen with HYPOTHESIS_PROFILE: `fuzz` (the
default: small, for the normal suite) or `soak` (`make soak`). The HL7 soak loop
(`test_hl7_mutation_loop`) is a plain seeded mutation loop, faster than Hypothesis per input:
FUZZ_HL7_INPUTS inputs (1,000,000 under soak), FUZZ_SEED to replay a run.

Seeds are synthetic messages written here plus, when present, the permissively licensed
folders of the shared sample corpus (read in place, never copied; the GPL folders are left
alone)."""

import csv
import gc
import io
import json
import os
import random
import re
import resource
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from practicesync.connectors.hl7v2.mapping import map_adt, map_oru, map_siu
from practicesync.connectors.hl7v2.mllp import ERROR_NAMES, VT, build_ack, read_msh
from practicesync.connectors.hl7v2.parse import Message, MessageError, parse_payload

FS, CR = b"\x1c", b"\r"
SOAK = os.environ.get("HYPOTHESIS_PROFILE") == "soak"
settings.register_profile("fuzz", max_examples=200, deadline=None,
                          # The database tests' examples share one test's transaction: fine,
                          # each example only adds rows.
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("soak", parent=settings.get_profile("fuzz"), max_examples=20_000)
# Applied per test, not loaded globally: the other test files keep their own settings.
FUZZ = settings.get_profile("soak" if SOAK else "fuzz")
# Tests that start a process or touch the database per example get fewer.
FUZZ_FEW = settings(FUZZ, max_examples=2_000 if SOAK else 25)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora"
# Permissive licences (MIT, Apache-2.0, BSD-3) and the corpus's malformed samples, read in
# place: nothing of the corpus is copied here.
CORPUS_HL7 = ("microsoft-fhir-converter", "cdcgov-trusted-intermediary", "python-hl7",
              "malformed")


# --- HL7 v2 seeds and mutations --------------------------------------------------------------

def _msh(kind: str, control: str, seps: str = "|^~\\&") -> str:
    f = seps[0]
    return f.join(["MSH", seps[1:], "LAB", "QML", "PRACTICESYNC", "SURGERY", "20260101120000",
                   "", kind, control, "P", "2.4"])


SEEDS = [
    "\r".join([_msh("ORU^R01", "C1"), "PID|1||P1^^^^PI~9990000018^^^NHS^NH||Lee^Ann||19800102|F",
               "ORC|RE", "OBR|1||A1^LAB|FBC^Full blood count|||20260101",
               "OBX|1|NM|HB^Haemoglobin||140|g/L|115-165|N|||F",
               "NTE|1||Repeat in \\.br\\ three months \\X0041\\ \\F\\ done"]) + "\r",
    "\r".join([_msh("ADT^A04", "C2"), "EVN|A04|20260101120000",
               "PID|1||P2^^^^PI~9990000026^^^NHS^NH||O'Brien^Zoë^^^Ms||19700101|F|||"
               "1 High St^^Leeds^^LS1 1AA||07912345678^PRN^CP~^NET^Internet^z@example.org"]) + "\r",
    "\r".join([_msh("ADT^A40", "C3"), "EVN|A40|20260101", "PID|1||P3^^^^PI||Hall^Bo||19900505|M",
               "MRG|P4^^^^PI"]) + "\r",
    "\r".join([_msh("SIU^S12", "C4"), "SCH|1|APT1^PMS|||||||||^^^20261201093000||||||||||||||Booked",
               "PID|1||P1^^^^PI||Lee^Ann||19800102|F", "AIS|1||GP^General"]) + "\r",
    "\r".join([_msh("ORU^R01", "C5", "#@*$%"), "PID#1##P1@@@@PI##Lee@Ann##19800102#F",
               "OBR#1##A2@LAB#FBC@Full blood count###20260101"]) + "\r",
    "FHS|^~\\&\rBHS|^~\\&\r" + _msh("ADT^A08", "C6") + "\rPID|1||P5^^^^PI||Ward^Cy||19500304|M\r"
    "BTS|1\rFTS|1\r",
]


def _corpus_seeds() -> list[bytes]:
    folder = CORPUS / "hl7v2"
    if not folder.is_dir():
        return []
    return [p.read_bytes() for name in CORPUS_HL7 if (folder / name).is_dir()
            for p in sorted((folder / name).iterdir()) if p.is_file()]


ALL_SEEDS = [s.encode("utf-8") for s in SEEDS] + _corpus_seeds()
TOKENS = [b"\x00", b"\xff", b"\xfe\xff", b"\xc3", b"\xef\xbb\xbf", b"\r", b"\n", b"\r\n", b"|",
          b"^", b"~", b"\\", b"&", b"\x0b", b"\x1c", b"\x7f", b"\t", b" ", b"MSH|^~\\&|",
          b"\rMSH|", b"\rPID|", b"\rOBR|", b"\rBHS|", b"\rBTS|9", b"\rFTS|", b"\\X00\\",
          b"\\X0D0A\\", b"\\Xzz\\", b"\\.br\\", b"\\.sp99999\\", b"\\", b"\\E\\", b"\\Z",
          b"\xf0\x9f\x98\x80", b"\xed\xa0\x80", b"99999999999999", b"-1", b"20261301",
          b"19000229", b"^^^^^^^^^^", b"~~~~~~~~", b"&&&&&&&&", b"||||||||||||||||"]


def mutate(rng: random.Random, data: bytes, huge: int = 200_000) -> bytes:
    """A few random edits of `data`: the kinds of damage a sender, a line or an attacker does."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(10)
        at = rng.randint(0, len(data))
        if kind == 0 and data:                     # one byte changed
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind in (1, 2):                       # an interesting token inserted
            data[at:at] = rng.choice(TOKENS)
        elif kind == 3:                            # a slice lost
            del data[at:at + rng.randint(1, 64)]
        elif kind == 4:                            # a slice repeated
            data[at:at] = data[at:at + rng.randint(1, 64)] * rng.randint(2, 20)
        elif kind == 5:                            # another field separator
            new = rng.choice(b"#@*$%!?/:;,.0A \t\x00")
            data = bytearray(bytes(data).replace(b"|", bytes([new])))
        elif kind == 6:                            # other encoding characters (MSH-2)
            msh2 = bytes(rng.choice(b"^~\\&|#@*$%A \x00") for _ in range(rng.randint(0, 7)))
            data = bytearray(re.sub(rb"(MSH.)[^|\r\n]*", lambda m, new=msh2: m.group(1) + new,
                                    bytes(data), count=1))
        elif kind == 7:                            # a huge segment or field
            # Log-uniform: mostly short, now and then `huge` bytes.
            data[at:at] = b"\rOBX|1|TX|||" + b"A" * int(huge ** rng.random()) + b"\r"
        elif kind == 8:                            # cut short
            data = data[:at]
        else:                                      # random bytes
            data[at:at] = rng.randbytes(rng.randint(1, 32))
    if rng.randrange(50) == 0:
        data = bytearray(bytes(data).decode("latin-1").encode(rng.choice(["utf-16", "utf-32"])))
    return bytes(data)


# --- HL7 v2 properties -----------------------------------------------------------------------

MSH_FIELD = re.compile(r"MSH-\d+\Z")
WHERE = re.compile(r"[A-Z][A-Z0-9]{2}(-\d+)?\Z")
MAPPERS = {"ADT": lambda m: map_adt(m, pms="docman10", country="GB"),
           "ORU": lambda m: map_oru(m, pms="bestpractice"),
           "SIU": lambda m: map_siu(m, pms="medicaldirector")}


def check_hl7(data: bytes) -> None:
    """The hot-path MSH reader, the full parser and the mappings on one input."""
    header, rejection = read_msh(data)
    if rejection is not None:
        assert rejection.code in ERROR_NAMES, rejection
        assert rejection.reason and (rejection.field == "" or MSH_FIELD.match(rejection.field))
    ack = build_ack(header, "AR" if rejection else "AA", error=rejection)
    assert ack.startswith(VT) and ack.endswith(FS + CR) and ack[1:4] == b"MSH"
    for item in parse_payload(data):
        if isinstance(item, MessageError):
            check_error(item)
            continue
        assert isinstance(item, Message) and item.segments[0].id == "MSH"
        mapper = MAPPERS.get(item.message_code)
        if mapper is not None:
            for error in mapper(item).errors:
                check_error(error)


def check_error(error: MessageError) -> None:
    # The parser's catch-all: reaching it means a bug, not a bad message.
    assert not error.reason.startswith("could not be read as HL7"), error
    assert error.reason and error.code, error
    if error.message_index:
        # A refusal of one message names the segment or field, or the line it stopped at.
        assert WHERE.match(error.where) or error.reason.startswith("line "), error


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_are_read_or_refused_with_a_reason(data):
    check_hl7(data)
    check_hl7(b"MSH|^~\\&|" + data)


@FUZZ
@given(st.text(max_size=1000))
def test_any_text_is_read_or_refused_with_a_reason(text):
    check_hl7(text.encode("utf-8", "surrogatepass"))
    check_hl7(("MSH|^~\\&|A|B|C|D|20260101||ORU^R01|X|P|2.4\r" + text).encode("utf-8",
                                                                             "surrogatepass"))


@FUZZ
@given(st.sampled_from(ALL_SEEDS), st.randoms(use_true_random=False))
def test_mutated_messages_are_read_or_refused_with_a_reason(seed, rng):
    check_hl7(mutate(rng, seed))


def test_the_seeds_themselves_parse():
    parsed = [item for seed in SEEDS for item in parse_payload(seed)]
    assert all(isinstance(item, Message) for item in parsed), parsed
    for seed in SEEDS[:4]:
        assert read_msh(seed.encode())[1] is None


# The loop mutates the seeds up to 2 KB: python-hl7 splits a large lab message at a few ms
# each, which would make a million inputs take hours; the Hypothesis tests above use them all.
LOOP_SEEDS = [seed for seed in ALL_SEEDS if len(seed) <= 2048]


def test_hl7_mutation_loop():
    """The soak loop: FUZZ_HL7_INPUTS mutated inputs through `check_hl7` (1,000,000 under
    `make soak`). A failure names the seed and input number that reproduce it."""
    count = int(os.environ.get("FUZZ_HL7_INPUTS", 1_000_000 if SOAK else 2_000))
    seed = int(os.environ.get("FUZZ_SEED", 20261123))
    rng = random.Random(seed)
    started = time.monotonic()
    for number in range(count):
        data = mutate(rng, rng.choice(LOOP_SEEDS), huge=50_000)
        try:
            check_hl7(data)
        except AssertionError as e:
            raise AssertionError(f"input {number} of FUZZ_SEED={seed}: {data[:300]!r}") from e
    print(f"\nHL7 mutation loop: {count} inputs (FUZZ_SEED={seed}, {len(LOOP_SEEDS)} seeds) in "
          f"{time.monotonic() - started:.0f} s, every one read or refused with a reason")


# --- MLLP: a real listener fed hostile streams -----------------------------------------------

DEAD_LETTER_CAP = 5


def _frame_of(control: str, kind: str = "ORU^R01") -> bytes:
    return VT + SEEDS[0].replace("ORU^R01|C1", f"{kind}|{control}").encode() + FS + CR


@pytest.fixture(scope="module")
def mllp(tmp_path_factory):
    from tests.test_mllp import Running, cli

    home = tmp_path_factory.mktemp("fuzz-mllp")
    cli(home, "migrate", "--no-input", "-v", "0")
    slug = json.loads(cli(home, "practice", "create", "--name", "Fuzz Lab Surgery", "--pms",
                          "docman10", "--json"))["slug"]
    cli(home, "practice", "permit", "--practice", slug, "--granted-by", "Dr Data",
        "--dpia-ref", "DPIA-1")
    before = os.environ.get("PRACTICESYNC_DEAD_LETTER_CAP")
    os.environ["PRACTICESYNC_DEAD_LETTER_CAP"] = str(DEAD_LETTER_CAP)
    try:
        running = Running(home, slug, "--max-frame", "100000")
    finally:
        if before is None:
            del os.environ["PRACTICESYNC_DEAD_LETTER_CAP"]
        else:
            os.environ["PRACTICESYNC_DEAD_LETTER_CAP"] = before
    try:
        yield running, home
    finally:
        running.kill()
        log = running.log.read_text(errors="replace")
        assert "Traceback" not in log and "could not be handled" not in log, log[-3000:]


def _client(port: int):
    from tests.test_mllp import Client

    return Client(port, timeout=30)


def _msa(ack: str) -> list[str]:
    return next(line for line in ack.split("\r") if line.startswith("MSA")).split("|")


def _still_serving(port: int, control: str) -> None:
    client = _client(port)
    try:
        client.send_raw(_frame_of(control))
        assert _msa(client.receive())[1:3] == ["AA", control]
    finally:
        client.close()


@pytest.mark.slow
def test_mllp_hostile_framing_on_one_connection(mllp):
    running, _ = mllp
    client = _client(running.port)
    try:
        client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff")    # no start byte: dropped
        client.send_raw(SEEDS[0].encode() + FS + CR)                      # no start byte: dropped
        client.send_raw(VT + b"MSH|^~\\&|half a frame, never ended")     # abandoned by the next VT
        client.send_raw(_frame_of("HF-1"))
        client.send_raw(VT + b"MSH|^~\\&|" + b"A" * 2_000_000 + FS + CR)  # over --max-frame
        client.send_raw(b"junk\x00\x1c\r" + _frame_of("HF-2") + b"\xff\xfe junk" + _frame_of("HF-3"))
        answers = [_msa(client.receive()) for _ in range(4)]
    finally:
        client.close()
    assert [a[1:3] for a in answers] == [["AA", "HF-1"], ["AR", ""], ["AA", "HF-2"],
                                         ["AA", "HF-3"]]
    assert "larger than 100000 bytes" in answers[1][3]
    _still_serving(running.port, "HF-4")


@pytest.mark.slow
def test_mllp_partial_frames_and_a_trickling_client_do_not_hold_up_others(mllp):
    import threading

    running, _ = mllp
    for n in range(20):     # a frame cut off by a disconnect, twenty times
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        sock.sendall(_frame_of(f"CUT-{n}")[:n * 7 + 1])
        sock.close()
    trickled: list[list[str]] = []

    def trickle():
        client = _client(running.port)
        try:
            for byte in _frame_of("SLOW-1"):
                client.send_raw(bytes([byte]))
                time.sleep(0.01)
            trickled.append(_msa(client.receive()))
        finally:
            client.close()

    slow = threading.Thread(target=trickle)
    slow.start()
    try:
        time.sleep(0.2)
        for n in range(5):
            _still_serving(running.port, f"FAST-{n}")
        assert slow.is_alive(), "the trickle ended before the other client was served"
    finally:
        slow.join(timeout=60)
    assert [a[1:3] for a in trickled] == [["AA", "SLOW-1"]]


@pytest.mark.slow
def test_mllp_dead_letters_are_capped(mllp):
    import sqlite3

    running, home = mllp
    client = _client(running.port)
    try:
        for n in range(DEAD_LETTER_CAP + 7):
            client.send_raw(_frame_of(f"DL-{n}", kind="MDM^T02"))
            msa = _msa(client.receive())
            assert msa[1:3] == ["AR", f"DL-{n}"] and "MDM" in msa[3]
    finally:
        client.close()
    with sqlite3.connect(f"file:{home / 'practicesync.sqlite3'}?mode=ro", uri=True) as db:
        kept = db.execute("SELECT COUNT(*) FROM hl7v2_inboundmessage WHERE refused "
                          "AND control_id LIKE 'DL-%'").fetchone()[0]
        dropped = db.execute("SELECT COALESCE(SUM(dropped), 0) FROM hl7v2_deadletteroverflow"
                             ).fetchone()[0]
    # Other tests of this module may have been refused first, within the same hour's cap.
    assert kept <= DEAD_LETTER_CAP and kept + dropped >= DEAD_LETTER_CAP + 7
    _still_serving(running.port, "DL-OK")


@pytest.mark.slow
@FUZZ_FEW
@given(st.lists(st.one_of(
    st.binary(max_size=500),
    st.builds(lambda seed, rng: VT + mutate(rng, seed, huge=150_000) + FS + CR,
              st.sampled_from(ALL_SEEDS[:len(SEEDS)]), st.randoms(use_true_random=False)),
    st.sampled_from([VT, FS, CR, FS + CR, VT * 3, b"\x00" * 100])), max_size=8))
def test_mllp_any_stream_leaves_the_listener_serving(mllp, chunks):
    running, _ = mllp
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    try:
        for chunk in chunks:
            sock.sendall(chunk)
    finally:
        sock.close()
    assert running.proc.poll() is None
    _still_serving(running.port, "ANY-OK")


# --- CSV readers: patient list, results, appointments, accounts ------------------------------

CSV_KINDS = {
    "patients": (("patients", "sync"), ["pms_id", "given_name", "family_name", "date_of_birth",
                                        "nhs_number", "mobile_phone"],
                 ["P1", "Ann", "Lee", "1980-01-02", "9990000018", "07912345678"]),
    "results": (("results", "sync"), ["result_id", "pms_id", "test_name", "performed_on",
                                      "action", "comment"],
                ["R1", "P1", "FBC", "2026-11-18", "Non-Urgent Appointment", ""]),
    "appointments": (("appointments", "sync"), ["appointment_id", "pms_id", "starts_at", "status"],
                     ["AP1", "P1", "2026-12-01T09:30", "booked"]),
    "accounts": (("accounts", "import"), ["account_id", "given_name", "family_name",
                                          "date_of_birth", "email", "mobile_phone", "nhs_number"],
                 ["A1", "Ann", "Lee", "1980-01-02", "ann@example.org", "07912345678", ""]),
}


def _csv_text(header: list[str], rows: list[list[str]], end: str = "\r\n") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=end).writerows([header, *rows])
    return out.getvalue()


def run_import(practice, kind: str, path: Path) -> tuple[int, dict | None, str]:
    """The import command of `kind` in this process: (exit code, JSON report or None, output).
    Anything but exit 0/1/2 with a report or a one-line reason fails the test (an exception
    escaping the command is a traceback for the user)."""
    from tests.cli import run

    code, out = run(*CSV_KINDS[kind][0], "--practice", practice.slug, "--source", str(path),
                    "--json")
    assert code in (0, 1, 2), (code, out)
    try:
        report = json.loads(out)
    except ValueError:
        assert code in (1, 2) and out.strip() and "Traceback" not in out, (code, out)
        return code, None, out
    for error in report["errors"]:
        assert {"row", "field", "message"} <= error.keys() and error["message"], error
    failure = report.get("failure", "")     # a patient sync records a refused run
    assert code == (1 if report["errors"] or failure else 0), (code, report)
    return (code, None, failure) if failure else (code, report, out)


HOSTILE_FILES = {
    "bom": lambda h, r: b"\xef\xbb\xbf" + _csv_text(h, [r]).encode(),
    "utf16": lambda h, r: _csv_text(h, [r]).encode("utf-16"),
    "latin1": lambda h, r: _csv_text(h, [[r[0] + "Zoë", *r[1:]]]).encode("latin-1"),
    "nul": lambda h, r: _csv_text(h, [[r[0], "A\x00nn", *r[2:]]]).encode(),
    "huge_field": lambda h, r: _csv_text(h, [r, [r[0] + "X", "B" * 10_000_000, *r[2:]]]).encode(),
    "missing_column": lambda h, r: _csv_text(h[:-2] + ["x"], [r]).encode(),
    "extra_column": lambda h, r: _csv_text([*h, "surprise"], [[*r, "=1+1"], [*r[:2]]]).encode(),
    "duplicate_column": lambda h, r: _csv_text([*h, h[1]], [[*r, ""]]).encode(),
    "cr_line_ends": lambda h, r: _csv_text(h, [r], end="\r").encode(),
    "lf_line_ends": lambda h, r: _csv_text(h, [r], end="\n").encode(),
    "unterminated_quote": lambda h, r: (_csv_text(h, [r]) + '"' + ",".join(r) + "\r\n"
                                        + _csv_text(h, [r])).encode(),
    "header_only": lambda h, r: _csv_text(h, []).encode(),
    "empty": lambda h, r: b"",
    "binary": lambda h, r: bytes(range(256)) * 10,
}


@pytest.mark.parametrize("kind", CSV_KINDS)
@pytest.mark.parametrize("variant", HOSTILE_FILES)
def test_hostile_csv_files_are_imported_or_refused_clearly(practice, tmp_path, kind, variant):
    _, header, row = CSV_KINDS[kind]
    path = tmp_path / f"{kind}.csv"
    path.write_bytes(HOSTILE_FILES[variant](header, row))
    code, report, out = run_import(practice, kind, path)
    if variant in ("utf16", "latin1", "binary"):
        assert report is None and "not UTF-8" in out, out
    elif variant == "nul":
        assert report is None and f"line 2, column {header[1]}" in out and "NUL" in out, out
    elif variant == "huge_field":
        assert report is None and "line 3" in out and "field larger" in out, out
    elif variant == "missing_column":
        # Refused when a required column is missing, else imported without the others.
        assert report is not None or "missing column" in out, out
    elif variant == "duplicate_column":
        assert report is None and f"column(s) {header[1]} appear more than once" in out, out
    elif variant == "unterminated_quote":
        assert report is None and "unterminated quote" in out, out
    elif variant in ("bom", "cr_line_ends", "lf_line_ends", "extra_column"):
        # The row is read as written: nothing is wrong with its first column.
        assert report is not None and not [e for e in report["errors"]
                                           if e["field"] == header[0] and e["row"] == 2], report
    if report is not None and variant != "header_only":
        assert sum(report.get(k, 0) for k in ("created", "updated", "unchanged")) >= 1, report


@FUZZ_FEW
@given(cells=st.lists(st.text(max_size=40), min_size=4, max_size=4),
       kind=st.sampled_from(list(CSV_KINDS)))
def test_any_cell_values_give_row_errors_not_tracebacks(practice, tmp_path, cells, kind):
    _, header, row = CSV_KINDS[kind]
    values = [*cells, *row[4:]]
    path = tmp_path / f"{kind}-cells.csv"
    path.write_text(_csv_text(header, [row, values]), encoding="utf-8")
    run_import(practice, kind, path)


# --- formula injection in the CSVs the product writes ----------------------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Cells a spreadsheet would run, and text that only looks close.
CELLS = st.one_of(
    st.text(max_size=30),
    st.builds(lambda start, rest: start + rest, st.sampled_from(FORMULA_START + ("'", " =")),
              st.text(max_size=30)),
    st.sampled_from(['=HYPERLINK("http://x.example","click")', "+447912345678", "-1+1",
                     "@SUM(A1)", "\t=1", "\r=1", '=cmd|" /C calc"!A0']),
)


def _defused(cells: list[str]) -> None:
    for cell in cells:
        assert not cell.startswith(FORMULA_START), repr(cell)


@FUZZ
@given(st.lists(CELLS, max_size=8))
def test_csv_cells_never_start_a_formula(values):
    from practicesync.dashboard.audit import csv_cell

    out = io.StringIO()
    csv.writer(out).writerow([csv_cell(v) for v in values])
    (read,) = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    _defused(read)
    for value, cell in zip(values, read, strict=True):
        assert cell in (value, f"'{value}")     # defused by one quote, nothing else changed


@FUZZ_FEW
@given(st.lists(st.tuples(CELLS, CELLS, CELLS), min_size=1, max_size=4))
def test_the_audit_csv_export_defuses_every_cell(practice, events):
    from django.test import Client
    from django.urls import reverse

    from practicesync.audit.events import record
    from practicesync.practices.actions import add_staff
    from tests.factories import ACTOR, log_in

    admin = add_staff(actor=ACTOR, practice=practice, email="fuzz-admin@example.org",
                      role="admin").user
    for actor, why, note in events:
        actor, why, note = (text.replace("\x00", "") for text in (actor, why, note))
        record(practice=practice, actor=actor[:100] or "x", action="fuzz.event", why=why,
               detail={"note": note})
    response = log_in(Client(), admin).get(reverse("audit_csv",
                                                   kwargs={"practice": practice.slug}))
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode(),
                                       newline="")))
    assert len(rows) > len(events)
    for row in rows:
        _defused(row)


# --- FHIR: invalid resources, junk, huge bundles, references to nowhere ----------------------

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=20))
JSON = st.recursive(JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=30)
FHIR_KEYS = ("resourceType", "id", "identifier", "name", "birthDate", "subject", "status",
             "code", "result", "effectiveDateTime", "issued", "link", "telecom", "address",
             "gender", "deceasedBoolean", "participant", "start", "extension", "entry",
             "fullUrl", "resource", "request", "contained", "meta")
RESOURCE_TYPES = st.sampled_from(["Patient", "DiagnosticReport", "Observation", "Appointment",
                                  "Bundle", "Binary", "patient", "", None, 7])


def _corpus_fhir() -> list[dict]:
    folder = CORPUS / "fhir" / "au-core-test-data"   # CC0
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_bytes())
        if data.get("resourceType") in ("Patient", "DiagnosticReport", "Observation"):
            found.append(data)
    return found


WHEN = "2026-01-01T10:00:00+00:00"


def _good() -> tuple[dict, dict]:
    from tests.test_fhir import patient, report

    return patient(pid="good"), report(rid="good-r", subject="Patient/good", effectiveDateTime=WHEN)


FHIR_SEEDS = [*_good(), *_corpus_fhir()]


@st.composite
def junk_resources(draw):
    """A real resource with parts replaced by junk, or junk dressed as a resource."""
    if draw(st.booleans()):
        resource = json.loads(json.dumps(draw(st.sampled_from(FHIR_SEEDS))))
        for _ in range(draw(st.integers(1, 4))):
            resource[draw(st.sampled_from(FHIR_KEYS))] = draw(JSON)
        return resource
    resource = draw(st.dictionaries(st.sampled_from(FHIR_KEYS), JSON, max_size=6))
    resource["resourceType"] = draw(RESOURCE_TYPES)
    return resource


def _feeds(documents):
    from practicesync.connectors.fhir import read_patient_feed, read_result_feed
    from practicesync.connectors.fhir.feeds import read_appointment_feed

    return [read_patient_feed(documents, country="AU"),
            read_result_feed(documents, country="GB"),
            read_appointment_feed(documents, country="AU", pms_id_system="urn:oid:1.2.3")]


def _check_feed(feed) -> None:
    for error in feed.errors:
        # A resource's error names its FHIR path; a whole file's names the file.
        assert error["message"] and (error["field"] or error["row"] == 0), error
        # The feeds' catch-all: reaching it means a mapping bug, not a bad resource.
        assert "could not be mapped" not in error["message"], error


@FUZZ
@given(st.lists(junk_resources(), max_size=5), st.lists(JSON, max_size=2))
def test_junk_resources_get_per_entry_errors_and_the_rest_is_imported(resources, documents):
    good_patient, good_report = _good()
    entries = [{"fullUrl": f"urn:uuid:{n}", "resource": r} for n, r in enumerate(resources)]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": good_patient}, *entries, {"resource": good_report}]}
    patients, results, appointments = _feeds(
        [("junk.json", bundle), *((f"doc{n}.json", d) for n, d in enumerate(documents))])
    for feed in (patients, results, appointments):
        _check_feed(feed)
    assert "good" in [row["pms_id"] for _, row in patients.rows]
    assert "DiagnosticReport/good-r" in [row["result_id"] for _, row in results.rows]


@FUZZ
@given(junk_resources())
def test_a_junk_document_on_its_own_is_refused_with_a_reason(resource):
    for feed in _feeds([("one.json", resource)]):
        _check_feed(feed)


@pytest.mark.parametrize("depth", [50, 900, 5_000, 200_000])
def test_deeply_nested_junk_is_refused_not_a_crash(tmp_path, depth):
    good_patient, _ = _good()
    nested = "[" * depth + "]" * depth
    (tmp_path / "deep.json").write_text(
        '{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": '
        + json.dumps(good_patient) + '}, {"resource": {"resourceType": "Patient", "id": "deep", '
        '"extension": ' + nested + '}}]}')
    patients, _, _ = _feeds(str(tmp_path))
    _check_feed(patients)
    assert [row["pms_id"] for _, row in patients.rows] in (["good"], [])
    assert patients.rows or patients.errors


def test_references_to_nowhere_are_per_entry_errors(tmp_path):
    from tests.test_fhir import bundle, patient, report

    resources = [patient(pid="p1"),
                 report(rid="r-ok", subject="Patient/p1", effectiveDateTime=WHEN),
                 report(rid="r-gone", subject="Patient/nowhere", effectiveDateTime=WHEN,
                        result=[{"reference": "Observation/nowhere"}]),
                 report(rid="r-urn", subject="urn:uuid:00000000-0000-0000-0000-999999999999",
                        effectiveDateTime=WHEN),
                 report(rid="r-empty", subject="", effectiveDateTime=WHEN),
                 report(rid="r-no-time", subject="Patient/p1", result=[
                     {"reference": "Observation/nowhere"}])]
    (tmp_path / "b.json").write_text(json.dumps(bundle(*resources)))
    _, results, _ = _feeds(str(tmp_path))
    _check_feed(results)
    ids = [row["result_id"] for _, row in results.rows]
    assert "DiagnosticReport/r-ok" in ids
    # A subject that names a Patient not in the source keeps its id (a PMS server's id); one
    # that names nothing usable is refused, by path.
    refused = {ref.split(" ")[-1]: code for ref, code in results.rejected}
    assert {"DiagnosticReport/r-urn", "DiagnosticReport/r-empty",
            "DiagnosticReport/r-no-time"} <= refused.keys(), (refused, ids)
    for error in results.errors:
        assert error["field"].startswith("DiagnosticReport"), error


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_a_bundle_of_50000_entries_is_read_in_bounded_memory(tmp_path):
    """Memory, not time (bench/ measures time): the peak RSS growth while reading a bundle of
    50,000 entries (every 100th invalid), printed, and bounded loosely."""
    from practicesync.connectors.fhir import read_patient_feed
    from tests.test_fhir import patient

    entries = []
    for n in range(50_000):
        one = patient(pid=f"p{n}", family=f"Family{n}", birth="1980-01-02")
        if n % 100 == 0:
            one["birthDate"] = "not a date"
        entries.append({"fullUrl": f"urn:uuid:{n}", "resource": one})
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                "entry": entries}))
    size_mb = path.stat().st_size / 2**20
    del entries
    gc.collect()
    before, peak_before = _rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    feed = read_patient_feed(str(path), country="GB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows, errors = len(feed.rows), len(feed.errors)
    del feed
    gc.collect()
    print(f"\nFHIR bundle of 50,000 entries ({size_mb:.0f} MB of JSON): {rows} rows, {errors} "
          f"errors; RSS {before:.0f} MB before, peak {max(peak, peak_before):.0f} MB "
          f"(+{max(0.0, peak - before):.0f} MB), {_rss_mb():.0f} MB after")
    assert (rows, errors) == (49_500, 500)
    assert peak - before < 2_000     # MB; the whole bundle is held as JSON and as models
