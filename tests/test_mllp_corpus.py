"""The external HL7 v2 sample corpus (../shared/corpora/hl7v2, read-only) streamed to the running
`practicesync mllp` listener by a lab-style raw-socket sender, one message per MLLP frame.

Issue 5, "Done when": every message is either stored once and ACKed AA, or rejected with AE/AR
and a reason and kept in the dead-letter table; never no answer, never a crash; the listener
survives the whole corpus and exits 0 on SIGTERM.

How files become frames (what a batch-to-MLLP sender does): a file is cut into messages where a
segment starts with MSH; batch envelope segments (FHS, BHS, BTS, FTS) are not sent; the MLLP
control bytes VT and FS, which cannot occur inside a frame, are dropped (one corpus file is
itself MLLP-framed). A file with no message left (empty, or envelope only) is sent as it is, so
it must be rejected with a reason. Line endings, BOMs and everything else go as they are.
"""

import re
import sqlite3
import time
from pathlib import Path

import pytest

from practicesync.connectors.hl7v2.mllp import read_msh
from tests.test_mllp import Client, Running, cli

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "hl7v2"
SLUG = "corpus-lab-surgery"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CORPUS.is_dir(), reason=f"the HL7 v2 sample corpus is not here "
                                                   f"({CORPUS} is absent)"),
]

_MSH_START = re.compile(rb"(?:\r\n|\r|\n)(?=MSH)")
_LINES = re.compile(rb"\r\n|\r|\n")
ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix.lower() == ".hl7")


def messages_of(data: bytes) -> list[bytes]:
    """One file's messages, each to go in its own frame (see the module docstring)."""
    data = data.replace(b"\x0b", b"").replace(b"\x1c", b"")
    out = []
    for piece in _MSH_START.split(data):
        lines = _LINES.split(piece)
        if any(line.lstrip(b"\xef\xbb\xbf")[:3] in ENVELOPE for line in lines):
            piece = b"\r".join(line for line in lines
                               if line.lstrip(b"\xef\xbb\xbf")[:3] not in ENVELOPE)
        if piece.strip(b" \t\r\n\xef\xbb\xbf"):
            out.append(piece)
    return out or [data]


def segments(ack: str) -> dict[str, list[str]]:
    """The ACK's segments by id, split with its own field separator (MSH-1): the listener
    answers in the delimiters of the message."""
    sep = ack[3] if ack.startswith("MSH") and len(ack) > 3 else "|"
    return {line[:3]: line.split(sep) for line in ack.split("\r") if line}


def key_of(header) -> tuple[str, str, str | None]:
    return header.sending_application, header.sending_facility, header.control_id or None


def inbox_rows(home: Path) -> list[tuple]:
    db = sqlite3.connect(f"file:{home / 'practicesync.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(
            "SELECT m.sending_application, m.sending_facility, m.control_id, m.state, m.error, "
            "m.raw, m.refused FROM hl7v2_inboundmessage m JOIN practices_practice p "
            "ON p.id = m.practice_id WHERE p.slug = ?", (SLUG,)).fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("mllp-corpus")
    cli(home, "migrate", "--no-input", "-v", "0")
    cli(home, "practice", "create", "--name", "Corpus Lab Surgery", "--pms", "bestpractice",
        "--slug", SLUG)
    cli(home, "practice", "permit", "--practice", SLUG, "--granted-by", "Dr Data",
        "--dpia-ref", "DPIA-1")
    return home


@pytest.fixture(scope="module")
def streamed(home):
    """Every corpus message sent, one per frame, each answered before the next; then the inbox
    once it has settled (nothing left to process) and the listener stopped with SIGTERM.
    Returns the (where, payload, ACK segments) sent and the practice's inbox rows."""
    files = corpus_files()
    assert files, f"no .hl7 files under {CORPUS}"
    sent: list[tuple[str, bytes, dict[str, list[str]]]] = []
    running = Running(home, SLUG)
    try:
        client = Client(running.port, timeout=30)
        try:
            for path in files:
                name = str(path.relative_to(CORPUS))
                for n, payload in enumerate(messages_of(path.read_bytes()), 1):
                    where = f"{name} message {n}"
                    try:
                        client.send_raw(b"\x0b" + payload + b"\x1c\r")
                        ack = client.receive()
                    except (OSError, ConnectionError) as e:
                        pytest.fail(f"{where}: no answer ({type(e).__name__}: {e})\n"
                                    f"{running.log.read_text()[-3000:]}")
                    sent.append((where, payload, segments(ack)))
        finally:
            client.close()
        assert running.proc.poll() is None, running.log.read_text()[-3000:]

        def settled():
            rows = inbox_rows(home)
            return rows if not any(r[3] in ("accepted", "processing") for r in rows) else None

        deadline = time.monotonic() + 45
        rows = settled()
        while rows is None and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = settled()
        assert rows is not None, "the inbox was not processed within 45 s"
        assert running.proc.poll() is None, running.log.read_text()[-3000:]
        code, took = running.stop()
        assert code == 0 and took < 10, running.log.read_text()[-3000:]
        assert "mllp stopped" in running.log.read_text()
    finally:
        running.kill()
    return sent, rows


def outcomes(sent, rows) -> tuple[list[str], dict[str, int]]:
    """(problems, answer counts). A message answered AA is kept once under its MSH key (a
    resend must be the same bytes); one answered AR/AE is kept as a refused dead letter with
    a reason, and never holds the key."""
    kept = {row[:3]: row for row in rows if not row[6]}
    refused = [row for row in rows if row[6]]
    problems: list[str] = []
    codes: dict[str, int] = {}
    acked_keys: set[tuple] = set()
    rejected = 0
    for where, payload, ack in sent:
        header, rejection = read_msh(payload)
        msa = ack.get("MSA", [])
        code = msa[1] if len(msa) > 1 else "(no MSA)"
        codes[code] = codes.get(code, 0) + 1
        if code not in ("AA", "AE", "AR"):
            problems.append(f"{where}: answered {code!r}")
            continue
        if len(msa) < 3 or msa[2] != header.control_id:
            problems.append(f"{where}: MSA-2 {msa[2:3]} is not MSH-10 {header.control_id!r}")
        key = key_of(header)
        if code == "AA":
            if rejection is not None:
                problems.append(f"{where}: AA for a message refused on arrival ({rejection})")
                continue
            row = kept.get(key)
            if row is None:
                problems.append(f"{where}: AA but nothing is kept under {key}")
                continue
            if bytes(row[5]) != payload:
                problems.append(f"{where}: AA but other bytes are kept under {key}")
            if row[3] not in ("processed", "dead") or (row[3] == "dead" and not row[4]):
                problems.append(f"{where}: AA but left {row[3]!r} (error {row[4]!r})")
            acked_keys.add(key)
            continue
        err = ack.get("ERR", [])
        if len(err) < 9 or not err[3] or not err[8].strip():
            problems.append(f"{where}: {code} without an ERR segment naming the problem: {err}")
        rejected += 1
        if not any(r[3] == "dead" and r[4] and bytes(r[5]) == payload for r in refused):
            problems.append(f"{where}: {code} but its raw bytes are not a dead letter")
    if len(kept) != len(acked_keys) or len(refused) != rejected:
        problems.append(f"the inbox keeps {len(kept)} messages for {len(acked_keys)} keys "
                        f"answered AA and {len(refused)} dead letters for {rejected} refusals")
    return problems, codes


def test_the_sample_corpus_streamed_over_mllp_is_acked_and_stored_or_dead_lettered(streamed):
    sent, rows = streamed
    problems, codes = outcomes(sent, rows)
    assert problems == [], (f"{len(problems)} of {len(sent)} messages "
                            f"(answers {codes}):\n" + "\n".join(problems))
    assert codes.get("AA", 0) > 0 and codes.get("AR", 0) > 0
