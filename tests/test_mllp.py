"""The MLLP listener: `practicesync mllp` as a real process, spoken to over real sockets by a
small independent MLLP client, plus the pieces it is made of (framing, MSH-only reading, ACKs).
"""

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from practicesync.connectors.hl7v2.inbox import Stored
from practicesync.connectors.hl7v2.mllp import (
    FrameDecoder,
    Header,
    Listener,
    Oversize,
    Rejection,
    build_ack,
    frame,
    read_msh,
)
from tests.factories import NHS, list_row, write_list

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


# --- an independent MLLP client --------------------------------------------------------------

class Client:
    """A raw-socket MLLP client: frames out, one ACK frame back per message."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.pending = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> str:
        while FS + CR not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before an ACK ({self.pending!r})")
            self.pending += chunk
        ack, self.pending = self.pending.split(FS + CR, 1)
        assert ack.startswith(VT), ack
        return ack[1:].decode("utf-8")

    def send(self, message: str) -> str:
        self.send_raw(VT + message.encode("utf-8") + FS + CR)
        return self.receive()

    def close(self) -> None:
        self.sock.close()


def segments(ack: str) -> dict[str, list[str]]:
    return {line[:3]: line.split("|") for line in ack.split("\r") if line}


def msh(kind: str, control: str, sender: str = "SUPERLIS", facility: str = "QML") -> str:
    return rf"MSH|^~\&|{sender}|{facility}|PRACTICESYNC|SURGERY|20260101120000||{kind}|{control}|P|2.4"


def oru(control: str, pms_id: str = "P1", order: str | None = None, test="FBC^Full blood count"):
    return "\r".join([
        msh("ORU^R01", control), f"PID|1||{pms_id}^^^^PI||Greyling^Nora||19500304|F",
        "ORC|RE", f"OBR|1||{order or control}^SUPERLIS|{test}|||20260101",
        "OBX|1|NM|HB^Haemoglobin||140|g/L|115-165|N|||F"]) + "\r"


def adt(control: str, pms_id: str, given: str, family: str, nhs: str) -> str:
    return "\r".join([
        msh("ADT^A04", control, "PMS", "SURGERY"),
        "EVN|A04|20260101120000",
        f"PID|1||{pms_id}^^^^PI~{nhs}^^^NHS^NH||{family}^{given}||19700101|F"]) + "\r"


# --- the listener as a process ---------------------------------------------------------------

def env(home: Path) -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DEBUG")}
    out["PRACTICESYNC_HOME"] = str(home)
    return out


def cli(home: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "practicesync", *args], env=env(home),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, home: Path, slug: str, *extra: str):
        self.port = free_port()
        self.log = home / f"mllp-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "practicesync", "mllp", "--port", str(self.port),
                 "--practice", slug, *extra], env=env(home), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while "mllp listening" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"mllp did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("mllp")
    cli(home, "migrate", "--no-input", "-v", "0")
    for name in ("Lab Feed Surgery", "Original Mode Surgery"):
        slug = json.loads(cli(home, "practice", "create", "--name", name, "--pms", "docman10",
                              "--json"))["slug"]
        cli(home, "practice", "permit", "--practice", slug, "--granted-by", "Dr Data",
            "--dpia-ref", "DPIA-1")
        source = write_list(home / f"{slug}.csv", [
            list_row(pms_id="P1", given_name="Nora", family_name="Greyling", nhs_number=NHS[0],
                     date_of_birth="1950-03-04")])
        cli(home, "patients", "sync", "--practice", slug, "--source", str(source))
    cli(home, "practice", "create", "--name", "Unpermitted Surgery", "--pms", "docman10")
    return home


@pytest.fixture(scope="module")
def listener(home):
    running = Running(home, "lab-feed-surgery")
    try:
        yield running
    finally:
        running.kill()


def export(home: Path, slug: str = "lab-feed-surgery") -> dict:
    return json.loads(cli(home, "export", "--practice", slug))


def eventually(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def results_of(home: Path, marker: str, slug: str = "lab-feed-surgery") -> list[dict]:
    return [r for r in export(home, slug)["results"] if marker in r["result_id"]]



@pytest.mark.slow
def test_an_oru_is_acked_after_commit_and_stored_once_even_when_sent_again(home, listener):
    client = Client(listener.port)
    try:
        ack = segments(client.send(oru("ORU-ONE")))
        assert ack["MSA"][1:3] == ["AA", "ORU-ONE"]
        assert ack["MSH"][2:6] == ["PRACTICESYNC", "SURGERY", "SUPERLIS", "QML"]
        assert ack["MSH"][8] == "ACK^R01^ACK"
        again = segments(client.send(oru("ORU-ONE")))
        assert again["MSA"][1:3] == ["AA", "ORU-ONE"]
    finally:
        client.close()
    stored = eventually(lambda: results_of(home, "ORU-ONE"))
    assert [(r["pms_id"], r["performed_on"]) for r in stored] == [("P1", "2026-01-01")]
    time.sleep(1)
    assert len(results_of(home, "ORU-ONE")) == 1


@pytest.mark.slow
def test_an_adt_creates_the_patient_through_the_sync_rules(home, listener):
    client = Client(listener.port)
    try:
        ack = segments(client.send(adt("ADT-ONE", "P77", "Iris", "Quill", NHS[3])))
        assert ack["MSA"][1:3] == ["AA", "ADT-ONE"] and ack["MSH"][8] == "ACK^A04^ACK"
    finally:
        client.close()
    patient = eventually(lambda: [p for p in export(home)["patients"] if p["pms_id"] == "P77"])
    assert [(p["given_name"], p["nhs_number"]) for p in patient] == [("Iris", NHS[3])]


@pytest.mark.slow
@pytest.mark.parametrize("payload, code, where", [
    (b"this is not HL7 at all", "100", ""),
    (b"PID|1||P1", "100", ""),
    (rb"MSH|^~\&|LAB|QML|PS|PS|20260101||ORU^R01||P|2.4" + b"\rPID|1", "101", "MSH^1^10"),
    (rb"MSH|^~\&|LAB|QML|PS|PS|20260101||MDM^T02|MDM-1|P|2.4", "200", "MSH^1^9"),
    (rb"MSH|^~\&|LAB|QML|PS|PS|20260101||ADT^A01|ADT-A01|P|2.4", "201", "MSH^1^9"),
])
def test_garbage_and_unsupported_messages_get_ar_with_an_err(listener, payload, code, where):
    client = Client(listener.port)
    try:
        # Bytes outside a frame are discarded without an answer.
        client.send_raw(b"noise before any frame\r\n")
        client.send_raw(VT + payload + FS + CR)
        ack = segments(client.receive())
    finally:
        client.close()
    assert ack["MSA"][1] == "AR"
    err = ack["ERR"]
    assert err[3].split("^")[0] == code and err[2] == where and err[4] == "E" and err[8]
    if b"MDM-1" in payload:
        assert ack["MSA"][2] == "MDM-1"


@pytest.mark.slow
def test_a_client_that_disconnects_mid_frame_does_not_hurt_the_next(home, listener):
    rude = Client(listener.port)
    rude.send_raw(VT + oru("CUT-1").encode()[:60])
    rude.close()
    half = Client(listener.port)
    half.send_raw(VT + b"MSH|^~\\&|LAB")
    half.sock.shutdown(socket.SHUT_WR)
    client = Client(listener.port)
    try:
        assert segments(client.send(oru("AFTER-CUT")))["MSA"][1:3] == ["AA", "AFTER-CUT"]
    finally:
        client.close()
        half.close()
    assert eventually(lambda: results_of(home, "AFTER-CUT"))
    assert results_of(home, "CUT-1") == []


@pytest.mark.slow
def test_twenty_concurrent_clients_each_get_every_message_acked_and_stored_once(home, listener):
    acks: dict[str, str] = {}
    failures: list[BaseException] = []

    def sender(n: int):
        try:
            client = Client(listener.port)
            try:
                for m in range(10):
                    control = f"C{n:02d}-{m}"
                    ack = segments(client.send(oru(control)))
                    acks[control] = f"{ack['MSA'][1]}:{ack['MSA'][2]}"
                    if m == 4:   # a resend in the middle of the stream
                        client.send(oru(control))
            finally:
                client.close()
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    assert acks == {c: f"AA:{c}" for c in acks} and len(acks) == 200

    def all_stored():
        ids = [r["result_id"] for r in export(home)["results"] if ":C" in r["result_id"]]
        return ids if len(ids) >= 200 else None

    ids = eventually(all_stored, timeout=60)
    assert ids and len(ids) == len(set(ids)) == 200


@pytest.mark.slow
def test_permission_gate_and_original_mode_and_dead_letters(home):
    proc = subprocess.run([sys.executable, "-m", "practicesync", "mllp", "--port",
                           str(free_port()), "--practice", "unpermitted-surgery"],
                          env=env(home), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "permission" in proc.stderr

    # Original mode as the practice's setting: `mllp` without --mode follows it.
    cli(home, "practice", "hl7", "--practice", "original-mode-surgery", "--ack-mode", "original")
    running = Running(home, "original-mode-surgery")
    assert "(original mode)" in running.log.read_text()
    try:
        client = Client(running.port)
        try:
            ack = segments(client.send(oru("ORIG-1")))
            assert ack["MSA"][1:3] == ["AA", "ORIG-1"]
            # Stored and applied before the ACK: no waiting needed.
            assert results_of(home, "ORIG-1", "original-mode-surgery")
            # An MSH that is fine but a body that is not: processed, so AE with the reason.
            broken = msh("ORU^R01", "ORIG-BAD") + "\rPID|1||P1^^^^PI\rOBR|1||X^Y|FBC|||notadate\r"
            bad = segments(client.send(broken))
            assert bad["MSA"][1:3] == ["AE", "ORIG-BAD"] and "OBR-7" in bad["ERR"][8]
            assert segments(client.send(broken))["MSA"][1:3] == ["AE", "ORIG-BAD"]
        finally:
            client.close()
        code, took = running.stop()
        assert code == 0 and took < 10
    finally:
        running.kill()
    items = [i for i in export(home, "original-mode-surgery")["review_items"]
             if i["kind"] == "hl7_dead_letter"]
    assert len(items) == 1 and items[0]["status"] == "open"
    # Re-processing is safe to repeat; the message is still broken, so still dead, and the
    # incident is not alerted again.
    for _ in range(2):
        out = json.loads(cli(home, "hl7", "reprocess", "--practice", "original-mode-surgery",
                             "--json"))
        assert out["requeued"] == 1 and out["dead"] == 1
    items = [i for i in export(home, "original-mode-surgery")["review_items"]
             if i["kind"] == "hl7_dead_letter"]
    assert len(items) == 1


@pytest.mark.slow
def test_sigterm_finishes_in_flight_work_and_exits_0(home, listener):
    client = Client(listener.port)
    idle = Client(listener.port)
    try:
        assert segments(client.send(oru("LAST-1")))["MSA"][1] == "AA"
        code, took = listener.stop()
    finally:
        client.close()
        idle.close()
    assert code == 0 and took < 10, listener.log.read_text()
    assert "mllp stopped" in listener.log.read_text()
    assert results_of(home, "LAST-1")


# --- in-process: framing, MSH only, ACKs -----------------------------------------------------

def test_frames_are_cut_from_a_stream_in_any_chunks():
    stream = b"junk" + frame("ONE") + b"\r\n" + frame("TWO") + VT + b"half" + VT + b"THREE" + FS
    for size in (1, 2, 3, 7, len(stream)):
        decoder = FrameDecoder()
        out = []
        for i in range(0, len(stream), size):
            out += decoder.feed(stream[i:i + size])
        assert out == [b"ONE", b"TWO", b"THREE"]


def test_an_oversized_frame_is_reported_and_skipped():
    decoder = FrameDecoder(max_frame=10)
    out = decoder.feed(VT + b"x" * 8) + decoder.feed(b"y" * 8) + decoder.feed(b"z" + FS + CR)
    out += decoder.feed(frame("OK"))
    assert [type(o) for o in out] == [Oversize, bytes] and out[1] == b"OK"


@pytest.mark.parametrize("frame_bytes, code, field, control_id", [
    (b"", "100", "", ""),
    (b"\r\n  \r", "100", "", ""),
    (b"EVN|A04", "100", "", ""),
    (b"MSH", "102", "MSH-1", ""),
    (b"MSH|", "102", "MSH-2", ""),
    (b"MSHA^~", "102", "MSH-1", ""),
    (b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|X\x01|P|2.4", "102", "", ""),
    (b"MSH\x80:", "102", "MSH-2", ""),       # the ACK could not speak a non-ASCII delimiter
    (b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01", "101", "MSH-10", ""),
    (b"MSH|^~\\&|A|B|C|D|20260101|||M1|P|2.4", "101", "MSH-9", "M1"),
    (b"MSH|^~\\&|A|B|C|D|20260101||ORM^O01|M1|P|2.4", "200", "MSH-9", "M1"),
    (b"MSH|^~\\&|A|B|C|D|20260101||ORU^R30|M1|P|2.4", "201", "MSH-9", "M1"),
    (b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|" + b"9" * 200 + b"|P", "102", "MSH-10", "9" * 199),
])
def test_msh_problems_are_named(frame_bytes, code, field, control_id):
    header, rejection = read_msh(frame_bytes)
    assert rejection == Rejection(code, field, rejection.reason) and rejection.reason
    assert header.control_id == control_id


@pytest.mark.parametrize("frame_bytes, key, kind", [
    (b"MSH|^~\\&|LAB|QML|PS|SURG|20260101||ORU^R01^ORU_R01|M1|P|2.4\rPID|this is not parsed",
     ("LAB", "QML", "M1"), "ORU^R01"),
    (b"\xef\xbb\xbf\r\nMSH|^~\\&|PMS|SURG|PS|X|20260101||adt^a08|A-7|P|2.3\nPID",
     ("PMS", "SURG", "A-7"), "ADT^A08"),
    (b"MSH#:*!@#LAB:1#QML#PS#X#20260101##ADT:A40#M\\F\\2#P#2.5", ("LAB:1", "QML", "M\\F\\2"),
     "ADT^A40"),
    ("MSH|^~\\&|LABÖ|Zürich|PS|X|20260101||ORU^R01|Ü1|P|2.4".encode("latin-1"),
     ("LABÖ", "Zürich", "Ü1"), "ORU^R01"),
])
def test_msh_only_reading_gives_the_key_as_written(frame_bytes, key, kind):
    header, rejection = read_msh(frame_bytes)
    assert rejection is None
    assert (header.sending_application, header.sending_facility, header.control_id) == key
    assert header.message_type == kind


NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("code, error, expected", [
    ("AA", None, ["MSH|^~\\&|PS|SURG|LAB|QML|20261123120000||ACK^R01^ACK|ACK1|P|2.4",
                  "MSA|AA|M1"]),
    ("AR", Rejection("200", "MSH-9", "type ORU^R30 | not taken"),
     ["MSH|^~\\&|PS|SURG|LAB|QML|20261123120000||ACK^R01^ACK|ACK1|P|2.4",
      "MSA|AR|M1|type ORU\\S\\R30 \\F\\ not taken",
      "ERR||MSH^1^9|200^Unsupported message type^HL70357|E||||type ORU\\S\\R30 \\F\\ not taken"]),
])
def test_ack_swaps_sender_and_receiver_and_echoes_msh10(code, error, expected):
    header, _ = read_msh(b"MSH|^~\\&|LAB|QML|PS|SURG|20260101||ORU^R01|M1|P|2.4")
    ack = build_ack(header, code, error=error, now=NOW, control_id="ACK1")
    assert ack == VT + ("\r".join(expected) + "\r").encode() + FS + CR


def test_ack_for_an_unreadable_msh_uses_default_delimiters():
    ack = build_ack(Header(), "AR", error=Rejection("100", "", "no MSH"), now=NOW,
                    control_id="A")
    assert ack.split(b"\r")[:2] == [VT + b"MSH|^~\\&|||||20261123120000||ACK|A|P|2.5",
                                    b"MSA|AR||no MSH"]


# --- in-process: the frame handler never crashes ---------------------------------------------

class FakeInbox:
    def __init__(self):
        self.rows: dict[tuple, int] = {}
        self.raw: dict[tuple, bytes] = {}
        self.dead: list[bytes] = []

    def permitted(self):
        return True

    def accept(self, header, raw):
        """As inbox.accept: a key is kept once; a resend with other bytes is a conflict."""
        key = (header.sending_application, header.sending_facility, header.control_id)
        duplicate = key in self.rows
        self.rows.setdefault(key, len(self.rows) + 1)
        self.raw.setdefault(key, raw)
        return Stored(self.rows[key], duplicate, "accepted", conflict=self.raw[key] != raw)

    def accept_many(self, items):
        return [self.accept(header, raw) for header, raw in items]

    def reject(self, header, raw, reason):
        self.dead.append(raw)

    def process(self):
        return 0

    def outcome(self, row_id):
        return "processed", ""


def answers(chunks: list[bytes]) -> list[bytes]:
    async def run():
        listener = Listener(FakeInbox(), threads=1)
        decoder = FrameDecoder(max_frame=4096)
        out = []
        for chunk in chunks:
            for item in decoder.feed(chunk):
                out.append(await listener.handle_frame(item))
        return out

    return asyncio.run(run())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: VT + b + FS + CR),
    st.builds(lambda head, tail: VT + b"MSH" + head + b"|ORU^R01|" + tail + FS + CR,
              st.binary(max_size=40), st.binary(max_size=80)),
), max_size=6))
def test_any_bytes_give_an_ack_or_are_discarded(chunks):
    for ack in answers(chunks):
        assert ack.startswith(VT) and ack.endswith(FS + CR)
        lines = ack[1:-2].split(b"\r")
        assert lines[0].startswith(b"MSH")
        sep = lines[0][3:4]     # the ACK speaks the message's own delimiters
        assert lines[1].split(sep)[:2] in ([b"MSA", b"AA"], [b"MSA", b"AR"])
        if lines[1].split(sep)[1] == b"AR":
            assert lines[2].startswith(b"ERR" + sep)


def test_duplicates_are_acked_again():
    message = frame(oru("D1"))
    acks = answers([message, message])
    assert [a.split(b"\r")[1] for a in acks] == [b"MSA|AA|D1", b"MSA|AA|D1"]


# --- in-process: the inbox (on the test database, SQLite or PostgreSQL) ----------------------

def _store(practice, message: str):
    from practicesync.connectors.hl7v2 import inbox

    header, rejection = read_msh(message.encode())
    assert rejection is None
    return inbox.accept(practice.id, header, message.encode())


def test_inbox_stores_a_key_once_and_applies_rows_in_arrival_order(practice):
    from practicesync.connectors.hl7v2.inbox import process_inbox
    from practicesync.connectors.hl7v2.models import InboundMessage
    from practicesync.patients.models import Patient
    from practicesync.results.models import Result

    first = _store(practice, adt("A-1", "P5", "Iris", "Quill", NHS[3]))
    assert _store(practice, adt("A-1", "P5", "Iris", "Quill", NHS[3])) == Stored(
        first.row_id, True, "accepted", "")
    _store(practice, oru("O-1", pms_id="P5"))
    _store(practice, adt("A-2", "P5", "Iris", "Quell", NHS[3]))
    assert InboundMessage.objects.count() == 3
    assert process_inbox(practice) == 3 and process_inbox(practice) == 0
    assert set(InboundMessage.objects.values_list("state", flat=True)) == {"processed"}
    patient = Patient.objects.get(practice=practice, pms_id="P5")
    assert patient.family_name == "Quell"      # the later A08-like message wins
    # The ADT before the ORU was applied first, so the result found its patient.
    assert Result.objects.get(practice=practice).patient_id == patient.id


def test_adt_waits_in_the_inbox_while_the_practice_list_is_being_synced(practice):
    """A nightly sync running when ADT arrives: the batch is neither applied alongside it
    nor dead-lettered; it waits (with what came after it, in order) and goes on the next
    pass after the sync."""
    from practicesync.connectors.hl7v2.inbox import process_inbox
    from practicesync.connectors.hl7v2.models import InboundMessage
    from practicesync.patients.models import Patient, SyncRun
    from practicesync.results.models import Result
    from tests.factories import another_sync_of

    _store(practice, oru("W-0", pms_id="P6"))
    _store(practice, adt("W-1", "P6", "Iris", "Quill", NHS[3]))
    _store(practice, oru("W-2", pms_id="P6"))
    with another_sync_of(practice):
        assert process_inbox(practice) == 1  # the ORU before the ADT; the rest waits
    assert sorted(InboundMessage.objects.values_list("state", flat=True)) == [
        "accepted", "accepted", "processed"]
    assert not Patient.objects.filter(practice=practice).exists()
    assert not SyncRun.objects.filter(practice=practice).exists()  # no failed run recorded

    assert process_inbox(practice) == 2
    assert set(InboundMessage.objects.values_list("state", flat=True)) == {"processed"}
    patient = Patient.objects.get(practice=practice, pms_id="P6")
    # The result after the ADT found its patient: the order held while the batch waited.
    assert list(Result.objects.filter(practice=practice).order_by("id")
                .values_list("patient_id", flat=True)) == [None, patient.id]


def test_a_batch_another_worker_holds_is_left_alone_until_its_claim_is_stale(practice):
    from django.utils import timezone

    from practicesync.connectors.hl7v2.inbox import STALE_CLAIM, process_inbox
    from practicesync.connectors.hl7v2.models import InboundMessage

    held = _store(practice, oru("H-1"))
    _store(practice, oru("H-2"))
    InboundMessage.objects.filter(id=held.row_id).update(state="processing",
                                                         claimed_at=timezone.now())
    assert process_inbox(practice) == 0
    InboundMessage.objects.filter(id=held.row_id).update(
        claimed_at=timezone.now() - STALE_CLAIM - dt.timedelta(seconds=1))
    assert process_inbox(practice) == 2


def test_a_group_of_new_frames_is_stored_in_one_insert(practice, caplog):
    import logging

    from practicesync.connectors.hl7v2 import inbox
    from practicesync.connectors.hl7v2.models import InboundMessage

    items = [(read_msh(oru(f"G-{n}").encode())[0], oru(f"G-{n}").encode()) for n in range(3)]
    with caplog.at_level(logging.DEBUG, logger=inbox.__name__):
        stored = inbox.accept_many(practice.id, items)
    assert [s.duplicate for s in stored] == [False] * 3
    assert "one by one" not in caplog.text  # the group INSERT itself succeeded
    assert InboundMessage.objects.filter(practice=practice).count() == 3


def test_a_batch_held_by_a_killed_process_is_taken_over_at_once(practice):
    from django.utils import timezone

    from practicesync.connectors.hl7v2.inbox import process_inbox
    from practicesync.connectors.hl7v2.models import InboundMessage
    from practicesync.runtime.processes import this_process

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    held = _store(practice, oru("K-1"))
    _store(practice, oru("K-2"))
    InboundMessage.objects.filter(id=held.row_id).update(
        state="processing", claimed_at=timezone.now(),
        claimed_by=f"{this_process().rsplit(':', 2)[0]}:{gone.pid}:1")
    assert process_inbox(practice) == 2
    assert set(InboundMessage.objects.values_list("state", flat=True)) == {"processed"}


def test_dead_letters_alert_once_per_incident_and_reprocess_after_a_fix(practice):
    from practicesync.connectors.hl7v2.inbox import process_inbox, reprocess_dead
    from practicesync.connectors.hl7v2.models import InboundMessage
    from practicesync.patients.models import ReviewItem
    from practicesync.results.models import Result

    def bad(control):
        return msh("ORU^R01", control) + f"\rPID|1||P1^^^^PI\rOBR|1||{control}^Y|FBC|||notadate\r"

    _store(practice, bad("BAD-1"))
    _store(practice, bad("BAD-2"))
    good = _store(practice, oru("GOOD-1"))
    assert process_inbox(practice) == 3
    dead = InboundMessage.objects.filter(state="dead").order_by("id")
    assert [d.control_id for d in dead] == ["BAD-1", "BAD-2"]
    assert all("OBR-7" in d.error for d in dead)
    assert {d.incident for d in dead} == {dead[0].id} and dead[0].alerted
    items = ReviewItem.objects.filter(practice=practice, kind="hl7_dead_letter")
    assert items.count() == 1

    # Still broken: reprocessing twice changes nothing and raises no new alert.
    for _ in range(2):
        assert reprocess_dead(practice)["dead"] == 2
    assert items.count() == 1 and items.get().status == "open"

    # "Fixed" (here: the raw message corrected in place): reprocess applies it, incident over.
    for row in dead:
        row.raw = bytes(row.raw).replace(b"notadate", b"20260102")
        row.save(update_fields=["raw"])
    assert reprocess_dead(practice) == {"requeued": 2, "processed": 2, "dead": 0, "waiting": 0}
    assert items.get().status == "resolved"
    assert Result.objects.filter(practice=practice).count() == 3
    assert InboundMessage.objects.get(id=good.row_id).state == "processed"
    assert reprocess_dead(practice)["requeued"] == 0


def test_nothing_is_applied_while_the_permission_is_off(practice):
    from practicesync.connectors.hl7v2.inbox import process_inbox

    _store(practice, oru("P-1"))
    practice.dpia_ref = ""
    practice.save(update_fields=["dpia_ref"])
    assert process_inbox(practice) == 0


def test_a_frame_refused_on_arrival_does_not_hold_its_msh_key(practice):
    from practicesync.connectors.hl7v2 import inbox
    from practicesync.connectors.hl7v2.models import InboundMessage

    refused = oru("K-1").replace("ORU^R01", "ORU^R99").encode()
    header, _ = read_msh(refused)
    inbox.reject(practice.id, header, refused, "MSH-9: not taken here")
    stored = _store(practice, oru("K-1"))
    assert not stored.duplicate and not stored.conflict
    assert InboundMessage.objects.filter(control_id="K-1").count() == 2
    assert InboundMessage.objects.get(id=stored.row_id).state == "accepted"


def test_a_reused_control_id_with_other_content_is_not_taken_for_a_resend(practice):
    first = _store(practice, oru("K-2", pms_id="P1"))
    again = _store(practice, oru("K-2", pms_id="P1"))
    other = _store(practice, oru("K-2", pms_id="P2"))
    assert (again.duplicate, again.conflict) == (True, False)
    assert (other.duplicate, other.conflict) == (True, True)
    assert again.row_id == other.row_id == first.row_id


def test_the_listener_refuses_a_reused_control_id_with_other_content():
    acks = answers([frame(oru("K-3", pms_id="P1")), frame(oru("K-3", pms_id="P2"))])
    assert acks[0].split(b"\r")[1] == b"MSA|AA|K-3"
    assert acks[1].split(b"\r")[1].startswith(b"MSA|AR|K-3")
    assert b"control id already used" in acks[1]


@pytest.mark.slow
def test_with_no_process_the_listener_only_acks_and_the_worker_applies(home):
    running = Running(home, "lab-feed-surgery", "--no-process")
    try:
        client = Client(running.port)
        try:
            assert segments(client.send(oru("NOPROC-1")))["MSA"][1:3] == ["AA", "NOPROC-1"]
        finally:
            client.close()
        time.sleep(1)
        assert results_of(home, "NOPROC-1") == []  # stored and acknowledged, not applied
        worker = subprocess.run([sys.executable, "-m", "practicesync", "worker", "--once"],
                                env=env(home), capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stderr
        assert [r["pms_id"] for r in results_of(home, "NOPROC-1")] == ["P1"]
        assert running.stop()[0] == 0
    finally:
        running.kill()


# --- group commit ----------------------------------------------------------------------------

class GroupingInbox(FakeInbox):
    """A FakeInbox that records the size of every group it was asked to store."""

    def __init__(self):
        super().__init__()
        self.groups: list[int] = []

    def accept_many(self, items):
        time.sleep(0.05)      # a commit in flight: the frames arriving meanwhile queue up
        self.groups.append(len(items))
        return super().accept_many(items)


def test_frames_arriving_during_a_commit_are_stored_together_and_each_answered():
    inbox = GroupingInbox()

    async def run():
        listener = Listener(inbox, threads=1)
        frames = [oru(f"G-{n}").encode() for n in range(12)] + [oru("G-3").encode()]
        return await asyncio.gather(*(listener.handle_frame(f) for f in frames))

    acks = asyncio.run(run())
    assert [a.split(b"\r")[1] for a in acks] == (
        [f"MSA|AA|G-{n}".encode() for n in range(12)] + [b"MSA|AA|G-3"])
    assert sum(inbox.groups) == 13 and max(inbox.groups) > 1


def _header_and_raw(message: str):
    header, rejection = read_msh(message.encode())
    assert rejection is None
    return header, message.encode()


def test_a_group_gives_every_frame_the_answer_it_would_have_had_alone(practice):
    from practicesync.connectors.hl7v2 import inbox
    from practicesync.connectors.hl7v2.models import InboundMessage

    stored = _store(practice, oru("GR-OLD"))
    group = [oru("GR-1"), oru("GR-1"), oru("GR-2", pms_id="P1"), oru("GR-2", pms_id="P2"),
             oru("GR-3")]
    out = inbox.accept_many(practice.id, [_header_and_raw(m) for m in group])
    assert [(o.duplicate, o.conflict) for o in out] == [
        (False, False), (True, False), (False, False), (True, True), (False, False)]
    assert out[0].row_id == out[1].row_id and out[2].row_id == out[3].row_id
    # A resend of a stored key sends the group down the one-by-one path: same answers.
    again = inbox.accept_many(practice.id, [_header_and_raw(m) for m in
                                            (oru("GR-OLD"), oru("GR-4"), oru("GR-1"))])
    assert [(o.row_id == stored.row_id, o.duplicate) for o in again[:1]] == [(True, True)]
    assert [o.duplicate for o in again] == [True, False, True]
    assert InboundMessage.objects.filter(practice=practice).count() == 5


def test_one_frame_failing_does_not_take_its_group_down(practice, monkeypatch):
    from practicesync.connectors.hl7v2 import inbox
    from practicesync.connectors.hl7v2.models import InboundMessage

    _store(practice, oru("GF-OLD"))
    real = inbox.accept

    def accept(practice_id, header, raw):
        if header.control_id == "GF-POISON":
            raise inbox.IntegrityError("this one cannot be stored")
        return real(practice_id, header, raw)

    monkeypatch.setattr(inbox, "accept", accept)
    out = inbox.accept_many(practice.id, [_header_and_raw(m) for m in
                                          (oru("GF-1"), oru("GF-OLD"), oru("GF-POISON"),
                                           oru("GF-2"))])
    assert isinstance(out[2], Exception)
    assert [(o.duplicate, o.conflict) for o in (out[0], out[1], out[3])] == [
        (False, False), (True, False), (False, False)]
    assert set(InboundMessage.objects.values_list("control_id", flat=True)) == {
        "GF-OLD", "GF-1", "GF-2"}


def test_a_store_failure_in_a_group_is_ae_for_that_frame_only():
    class Poisoned(FakeInbox):
        def accept_many(self, items):
            return [RuntimeError("disk full") if h.control_id == "X-2" else self.accept(h, r)
                    for h, r in items]

    async def run():
        listener = Listener(Poisoned(), threads=1)
        return await asyncio.gather(*(listener.handle_frame(oru(c).encode())
                                      for c in ("X-1", "X-2", "X-3")))

    codes = [a.split(b"\r")[1][:7] for a in asyncio.run(run())]
    assert codes == [b"MSA|AA|", b"MSA|AE|", b"MSA|AA|"]


# --- dead-letter flood cap -------------------------------------------------------------------

def test_refused_frames_over_the_hourly_cap_are_counted_not_kept(practice, settings, caplog):
    from django.utils import timezone

    from practicesync.connectors.hl7v2 import inbox
    from practicesync.connectors.hl7v2.models import DeadLetterOverflow, InboundMessage

    settings.PRACTICESYNC_DEAD_LETTER_CAP = 3
    garbage = b"MSH|^~\\&|SPEW|X|PS|PS|20260101||ZZZ^Z01|Z-%d|P|2.4"
    with caplog.at_level("WARNING", logger="practicesync.connectors.hl7v2.inbox"):
        kept = [inbox.reject(practice.id, read_msh(garbage % n)[0], garbage % n, "MSH-9: no")
                for n in range(8)]
    assert [k is not None for k in kept] == [True] * 3 + [False] * 5
    assert InboundMessage.objects.filter(practice=practice, refused=True).count() == 3
    [overflow] = DeadLetterOverflow.objects.filter(practice=practice)
    assert overflow.dropped == 5 and overflow.last_reason == "MSH-9: no"
    warnings = [r for r in caplog.records if "dead-letter cap" in r.getMessage()]
    assert len(warnings) == 1      # one per incident, not one per message

    # The same flood going on into the next hour: the cap starts again, no new warning.
    InboundMessage.objects.filter(practice=practice).update(
        received_at=timezone.now() - dt.timedelta(hours=1))
    DeadLetterOverflow.objects.filter(practice=practice).update(
        hour=inbox._hour(timezone.now()) - dt.timedelta(hours=1))
    caplog.clear()
    with caplog.at_level("WARNING", logger="practicesync.connectors.hl7v2.inbox"):
        kept = [inbox.reject(practice.id, read_msh(garbage % n)[0], garbage % n, "MSH-9: no")
                for n in range(10, 15)]
    assert [k is not None for k in kept] == [True] * 3 + [False] * 2
    assert not [r for r in caplog.records if "dead-letter cap" in r.getMessage()]
    assert DeadLetterOverflow.objects.filter(practice=practice).count() == 2


@pytest.mark.django_db(transaction=True)     # the listener's threads use their own connections
def test_over_the_cap_the_sender_still_gets_ar_with_the_reason(practice, settings):
    from practicesync.connectors.hl7v2.mllp import Inbox
    from practicesync.connectors.hl7v2.models import DeadLetterOverflow, InboundMessage

    settings.PRACTICESYNC_DEAD_LETTER_CAP = 1

    async def run():
        listener = Listener(Inbox(practice.id), threads=1)
        out = []
        for n in range(3):
            out.append(await listener.handle_frame(
                f"MSH|^~\\&|A|B|C|D|20260101||MDM^T02|M-{n}|P|2.4".encode()))
        return out

    for n, ack in enumerate(asyncio.run(run())):
        lines = ack.split(b"\r")
        assert lines[1].startswith(f"MSA|AR|M-{n}|message type MDM\\S\\T02".encode())
        assert lines[2].startswith(b"ERR||MSH^1^9|200")
    assert InboundMessage.objects.filter(practice=practice, refused=True).count() == 1
    assert DeadLetterOverflow.objects.get(practice=practice).dropped == 2


# --- practice settings: `practice hl7` -------------------------------------------------------

def test_practice_hl7_sets_the_ack_mode_and_pms_id_system_audited(practice):
    from practicesync.audit.models import AuditEvent
    from practicesync.practices.actions import set_hl7_settings
    from tests.cli import run, run_json

    code, data = run_json("practice", "hl7", "--practice", practice.slug, "--ack-mode",
                          "original", "--pms-id-system", " BPS ")
    assert code == 0 and (data["hl7_ack_mode"], data["pms_id_system"]) == ("original", "BPS")
    practice.refresh_from_db()
    assert (practice.hl7_ack_mode, practice.pms_id_system) == ("original", "BPS")
    event = AuditEvent.objects.filter(practice=practice,
                                      action="practice.hl7_settings_changed").get()
    assert event.detail == {"hl7_ack_mode": "original", "pms_id_system": "BPS"}
    code, data = run_json("practice", "hl7", "--practice", practice.slug, "--pms-id-system", "")
    assert code == 0 and (data["hl7_ack_mode"], data["pms_id_system"]) == ("original", None)
    assert run("practice", "hl7", "--practice", practice.slug)[0] == 2
    with pytest.raises(ValueError):
        set_hl7_settings(actor="test", practice=practice, ack_mode="later")


def test_mllp_tls_options_go_together(practice, tmp_path):
    from tests.cli import run

    assert run("mllp", "--practice", practice.slug, "--tls-cert", str(tmp_path / "c.pem"))[0] == 2
    (tmp_path / "c.pem").write_text("not a certificate")
    assert run("mllp", "--practice", practice.slug, "--tls-cert", str(tmp_path / "c.pem"),
               "--tls-key", str(tmp_path / "c.pem"))[0] == 2
