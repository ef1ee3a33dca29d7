"""HL7 v2: parsing, mapping to patients and results, file/folder import through the CLI, the
external sample corpus end to end, and arbitrary bytes. Messages here are synthetic."""

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from practicesync.connectors.hl7v2 import Message, MessageError, parse_payload, parse_ts, unescape
from practicesync.connectors.hl7v2.mapping import map_adt, map_message, map_oru
from practicesync.connectors.hl7v2.reader import read_hl7_source
from practicesync.patients.models import Patient, ReviewItem, SyncRun
from practicesync.patients.rows import check_row
from practicesync.results.models import Result
from practicesync.results.rows import check_result_row
from tests.cli import process, run, run_json
from tests.factories import IHI, MEDICARE, NHS, make_patient

UTC = dt.UTC
AEDT = dt.timezone(dt.timedelta(hours=11))


def hl7(*segments: str, end: str = "\r") -> str:
    return end.join(segments) + end


def msh(kind: str = "ADT^A04", control: str = "C1", sender: str = "PMS^RIVERSIDE") -> str:
    app, facility = sender.split("^")
    return rf"MSH|^~\&|{app}|{facility}|PS|PS|20260101120000||{kind}|{control}|P|2.4"


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by number, so long segments are not counted by hand."""
    return "|".join([name, *(fields.get(n, "") for n in range(1, max(fields) + 1))])


def one(payload) -> Message:
    [item] = parse_payload(payload)
    assert isinstance(item, Message), item
    return item


# --- parsing ---------------------------------------------------------------------------------

BASE = [msh("ORU^R01", "M1", "LAB^QML"), "PID|1||P1^^^^PI||Lee^Ann||19800102|F",
        "OBR|1||F1^QML|FBC^Full blood count|||20260101"]


@pytest.mark.parametrize("payload", [
    "\r".join(BASE) + "\r",
    "\n".join(BASE) + "\n",
    "\r\n".join(BASE) + "\r\n",
    BASE[0] + "\r\n" + BASE[1] + "\n" + BASE[2] + "\r",
    "\r".join(BASE),
    "\r".join(BASE) + "\r\r\n\n  \r\n",
    "\x0b" + "\r".join(BASE) + "\r\x1c\r",
    "\ufeff" + "\n".join(BASE),
], ids=["CR", "LF", "CRLF", "mixed", "no final terminator", "trailing blank lines",
        "MLLP framed", "byte-order mark"])
def test_every_segment_ending_and_framing_gives_the_same_message(payload):
    message = one(payload.encode())
    assert [s.id for s in message.segments] == ["MSH", "PID", "OBR"]
    assert message.msh_key == ("LAB", "QML", "M1")
    assert one(hl7(msh(sender="PMS^RIV&1.2.3&ISO"))).msh_key == ("PMS", "RIV&1.2.3&ISO", "C1")
    assert message.message_type == "ORU^R01" and message.version == "2.4"
    assert message.first("OBR").get(4, 2) == "Full blood count"


def esc(text: str) -> str:
    """HL7 text written with / for the escape character (a raw string cannot end in \\)."""
    return text.replace("/", "\\")


@pytest.mark.parametrize("raw, text", [
    ("a/F/b", "a|b"), ("a/S/b", "a^b"), ("a/T/b", "a&b"), ("a/R/b", "a~b"), ("a/E/b", "a\\b"),
    ("/X4142/", "AB"), ("/XC3A9/", "é"), ("/XE9/", "é"), ("one/.br/two", "one\ntwo"),
    ("/.sp2/", "\n\n"), ("/H/bold/N/", "bold"), ("/Zlocal/x", "x"), ("/C2842/x", "x"),
    ("/X00/ok", "ok"), ("/Xzz/", esc("/Xzz/")), ("C:/temp/x", esc("C:/temp/x")),
    ("open/F", esc("open/F")), ("plain", "plain"),
])
def test_escape_sequences(raw, text):
    assert unescape(esc(raw)) == text


def test_escaped_delimiters_never_split_a_field():
    message = one(hl7(msh(), seg("PID", {3: "P1^^^^PI", 5: esc("O/S/Brien^Zoe /T/ Kim"),
                                         7: "19800201", 11: esc("1 Main St/F/Rear^^Leeds")})))
    pid = message.first("PID")
    assert pid.get(5, 1) == "O^Brien" and pid.get(5, 2) == "Zoe & Kim"
    assert pid.get(11, 1) == "1 Main St|Rear" and pid.get(11, 3) == "Leeds"


def test_repetitions_components_and_subcomponents():
    message = one(hl7(msh(), "PID|1||P1^^^^PI~9990000018^^^NHS&2.16.840.1.113883.2.1.4.1&ISO^NH"
                             "||van Dijk&van^Zoe^^^Ms"))
    pid = message.first("PID")
    ids = pid.repetitions(3)
    assert [r.component(1) for r in ids] == ["P1", "9990000018"]
    assert [r.component(5) for r in ids] == ["PI", "NH"]
    assert ids[1].component(4, 1) == "NHS" and ids[1].component(4, 2).startswith("2.16.840")
    assert pid.get(3, 1, repetition=2) == "9990000018"
    assert pid.get(5, 1, 2) == "van" and pid.get(5, 5) == "Ms"
    # Absent fields, components and repetitions read as empty, never as an error.
    assert pid.get(40) == "" and pid.get(5, 9) == "" and pid.get(3, repetition=7) == ""


def test_custom_delimiters_declared_in_msh():
    # Field separator ^, components ~, repetitions |, as in the corpus's HAPI A24 sample.
    message = one(hl7(r"MSH^~|\&^PMS^RIV^^^20260101^^ADT~A04^7^P^2.4",
                      r"PID^1^^P1~~~~PI|99~~~~MR^^Lee~Ann \F\ Bo^^19800102", end="\r\n"))
    pid = message.first("PID")
    assert message.message_type == "ADT^A04" and message.control_id == "7"
    assert [r.component(5) for r in pid.repetitions(3)] == ["PI", "MR"]
    assert pid.get(5, 2) == "Ann ^ Bo"


def batch(*messages: str, count: int | None = None) -> str:
    declared = len(messages) if count is None else count
    return (r"FHS|^~\&|PMS|RIV" + "\r" + r"BHS|^~\&|PMS|RIV" + "\r" + "".join(messages)
            + f"BTS|{declared}\rFTS|1\r")


def test_batch_and_file_envelopes_hold_several_messages():
    items = parse_payload(batch(hl7(msh(control="1"), "PID|1"), hl7(msh(control="2"), "PID|2")))
    assert [(i.index, i.control_id) for i in items] == [(1, "1"), (2, "2")]


def test_a_batch_count_that_does_not_add_up_is_reported_and_the_messages_kept():
    items = parse_payload(batch(hl7(msh(control="1"), "PID|1"), count=3))
    errors = [i for i in items if isinstance(i, MessageError)]
    assert [(e.message_index, e.field, e.code) for e in errors] == [(0, "BTS-1", "envelope")]
    assert [i.control_id for i in items if isinstance(i, Message)] == ["1"]


@pytest.mark.parametrize("count", ["³", "١", "12345678901234567890123"])
def test_a_batch_count_that_is_not_plain_digits_is_no_count(count):
    # "³".isdigit() is true and int("³") raises: found by the soak's HL7 mutation loop.
    items = parse_payload(batch(hl7(msh(control="1"), "PID|1")).replace("BTS|1", f"BTS|{count}"))
    assert [type(i).__name__ for i in items] == ["Message"]


def test_a_message_cut_by_a_nested_batch_header_is_rejected():
    items = parse_payload(hl7(r"BHS|^~\&", msh(control="1"), "EVN|A04", r"BHS|^~\&", "PID|1",
                              "BTS|1"))
    codes = [(i.message_index, i.segment, i.code) for i in items]
    assert (1, "BHS", "envelope") in codes        # the interrupted message
    assert (0, "PID", "no_msh") in codes          # its orphaned segments


@pytest.mark.parametrize("payload, code, where", [
    ("", "empty", ""),
    ("  \r\n\n", "empty", ""),
    ("PID|1||P1\r", "no_msh", "PID"),
    ("MSH|\r", "bad_msh", "MSH-2"),
    ("MSH0^~\\&|x\r", "bad_msh", "MSH-1"),
    ("MSH||PMS|RIV|||2026||ADT^A04|1|P|2.4\r", "bad_msh", "MSH-2"),
    ("MSH|^~\\&|PMS|RIV|||2026||||P|2.4\r", "no_message_type", "MSH-9"),
    ("MSH|^~\\&|PMS|RIV|||2026||ADT^A04||P|2.4\r", "no_control_id", "MSH-10"),
    ("MSH|^~\\&|PMS|RIV|||2026||ADT^A04|1|P|2.4\rPID|1|\x00|x\r", "control_character", "PID"),
    ("MSH|^~\\&|PMS|RIV|||2026||ADT^A04|1|P|2.4\rPID|1\rwrapped text\r", "bad_segment", ""),
])
def test_broken_messages_are_errors_naming_segment_and_field(payload, code, where):
    items = parse_payload(payload.encode())
    assert all(isinstance(i, MessageError) for i in items)
    assert (code, where) in [(i.code, i.where) for i in items]


@pytest.mark.parametrize("text, value", [
    ("20240301", dt.date(2024, 3, 1)),
    ("20240301-0500", dt.date(2024, 3, 1)),
    ("202403012330", dt.datetime(2024, 3, 1, 23, 30)),
    ("2024030123", dt.datetime(2024, 3, 1, 23)),
    ("20240301233015.25+1100", dt.datetime(2024, 3, 1, 23, 30, 15, 250000, tzinfo=AEDT)),
    ("20240301120000-0000", dt.datetime(2024, 3, 1, 12, tzinfo=UTC)),
])
def test_hl7_timestamps(text, value):
    parsed = parse_ts(text)
    assert parsed == value and type(parsed) is type(value)
    if isinstance(value, dt.datetime):
        assert parsed.utcoffset() == value.utcoffset()


@pytest.mark.parametrize("text, says", [("2024", "precise to a day"), ("202403", "precise"),
                                        ("20241301", "real date"), ("1 March", "not an HL7")])
def test_timestamps_that_are_not_a_day_are_refused(text, says):
    with pytest.raises(ValueError, match=says):
        parse_ts(text)


# --- ADT to patients -------------------------------------------------------------------------

UK_PID = seg("PID", {
    3: "9990000018^^^NHS^NH~P100^^^RIV^PI~H55^^^HOSP^MR",
    5: "O'Brien^Zoë^^^Ms^^L~Obi^Zo^^^^^A", 7: "19800201", 8: "F",
    11: "1 High St^Flat 2^Leeds^^LS1 1AA^GBR^H~PO Box 9^^York^^YO1 1AA^GBR^M",
    13: "07912 000001^PRN^CP~^NET^Internet^zoe@example.org~0113 496 0000^PRN^PH",
    14: "0113 496 0999^WPN^PH"})


def test_uk_adt_maps_to_a_canonical_list_row():
    mapped = map_adt(one(hl7(msh("ADT^A04^ADT_A01"), "EVN|A04", UK_PID)), pms="docman10",
                     country="GB")
    assert not mapped.errors
    [patient] = mapped.patients
    assert patient.row == {
        "pms_id": "P100", "nhs_number": "9990000018", "medicare_number": "", "ihi": "",
        "title": "Ms", "given_name": "Zoë", "family_name": "O'Brien",
        "date_of_birth": "1980-02-01", "sex": "F", "mobile_phone": "07912 000001",
        "home_phone": "0113 496 0000", "email": "zoe@example.org", "address_line1": "1 High St",
        "address_line2": "Flat 2", "locality": "Leeds", "postcode": "LS1 1AA",
        "registration_status": "", "date_of_death": ""}
    row, errors = check_row(1, patient.row, "GB")
    assert not errors and row.record.mobile_phone == "+447912000001"


def test_au_adt_maps_medicare_ihi_and_death():
    pid = seg("PID", {3: f"12345^^^BP^PI~{MEDICARE}1^^^AUSHIC^MC~{IHI}^^^AUSHIC^NI~44D0659062^^^^NI",
                      5: "Nguyen^Linh", 7: "19750505", 8: "F",
                      11: "2 Beach Rd^^Manly^NSW^2095^AUS",
                      13: "0412 345 678^PRN^PH~(02) 9876 5432^PRN^PH", 29: "20260110", 30: "Y"})
    [patient] = map_adt(one(hl7(msh("ADT^A08"), pid)), pms="bestpractice", country="AU").patients
    row = patient.row
    assert (row["pms_id"], row["medicare_number"], row["ihi"]) == ("12345", MEDICARE + "1", IHI)
    # An untyped or PH number is a mobile when the numbering plan says so.
    assert (row["mobile_phone"], row["home_phone"]) == ("0412 345 678", "(02) 9876 5432")
    assert (row["date_of_death"], row["registration_status"]) == ("2026-01-10", "deceased")
    checked, errors = check_row(1, row, "AU")
    assert not errors and checked.status == "deceased"


def test_identifiers_of_another_country_are_not_taken():
    pid = f"PID|1||P1^^^^PI~{MEDICARE}^^^AUSHIC^MC~{NHS[0]}^^^NHS^NH||Lee^Ann||19800102"
    message = one(hl7(msh(), pid))
    [uk] = map_adt(message, pms="docman10", country="GB").patients
    [au] = map_adt(message, pms="bestpractice", country="AU").patients
    assert (uk.row["nhs_number"], uk.row["medicare_number"]) == (NHS[0], "")
    assert (au.row["nhs_number"], au.row["medicare_number"]) == ("", MEDICARE)


@pytest.mark.parametrize("pid3, pms_id", [
    ("H1^^^HOSP^MR~P1^^^PMS^PI", "P1"),    # PI before MR
    ("H1^^^HOSP^MR~S1^^^USSSA^SS", "H1"),
    ("X9", "X9"),                          # a single untyped id is the PMS's own
    ("X9~Y9", None),                       # two untyped: which one?
    ("A1^^^HOSP^AN", None),                # typed, but not a patient id
])
def test_which_pid3_identifier_is_the_pms_id(pid3, pms_id):
    mapped = map_adt(one(hl7(msh(), f"PID|1||{pid3}||Lee^Ann||19800102")), pms="docman10",
                     country="GB")
    if pms_id is None:
        assert [(e.code, e.field) for e in mapped.errors] == [("no_pms_id", "PID-3")]
    else:
        assert mapped.patients[0].row["pms_id"] == pms_id


@pytest.mark.parametrize("pid3, system, pms_id", [
    # The practice names its PMS's assigning authority: that one, whatever the type order.
    ("H1^^^HOSP^PI~B7^^^BPS^MR", "BPS", "B7"),
    ("H1^^^HOSP^PI~B7^^^&1.2.36.1.2001.1003.0.8003^MR", "urn:oid:1.2.36.1.2001.1003.0.8003",
     "B7"),
    ("H1^^^HOSP^PI~B7^^^bps", "BPS", "B7"),          # authority matched case-insensitively
    ("H1^^^HOSP^PI", "BPS", None),                    # no guessing by type once it is named
    ("X9", "BPS", None),
    ("H1^^^HOSP^MR~P1^^^PMS^PI", "", "P1"),           # not set: as before, by type
])
def test_a_practice_can_name_the_assigning_authority_of_its_pms_id(pid3, system, pms_id):
    message = one(hl7(msh(), f"PID|1||{pid3}||Lee^Ann||19800102"))
    mapped = map_adt(message, pms="docman10", country="GB", pms_id_system=system)
    if pms_id is None:
        assert [(e.code, e.field) for e in mapped.errors] == [("no_pms_id", "PID-3")]
        assert f"assigning authority {system}" in mapped.errors[0].reason
    else:
        assert mapped.patients[0].row["pms_id"] == pms_id


def test_oru_and_merge_honour_the_pms_id_system_too():
    pid = "PID|1||H1^^^HOSP^PI~B7^^^BPS^MR||Lee^Ann||19800102"
    obr = "OBR|1||F1^QML|FBC^Full blood count|||20260101"
    result = one(hl7(msh("ORU^R01", "M1", "LAB^QML"), pid, obr))
    assert map_oru(result, pms="bestpractice").results[0]["pms_id"] == "H1"
    assert map_oru(result, pms="bestpractice", pms_id_system="BPS").results[0]["pms_id"] == "B7"
    merge = one(hl7(msh("ADT^A40"), pid, "MRG|B6^^^BPS^MR~H0^^^HOSP^PI"))
    [found] = map_adt(merge, pms="bestpractice", country="AU", pms_id_system="BPS").merges
    assert (found.pms_id, found.prior_pms_id) == ("B7", "B6")


@pytest.mark.parametrize("pid, code, field", [
    ("PID|1||P1^^^^PI||Lee||19800102", "no_name", "PID-5"),
    ("PID|1||P1^^^^PI||Lee^Ann||1980", "bad_dob", "PID-7"),
    ("PID|1||P1^^^^PI||Lee^Ann", "bad_dob", "PID-7"),
    ("PID|1||" + "9" * 70 + "^^^^PI||Lee^Ann||19800102", "bad_pms_id", "PID-3"),
    (seg("PID", {3: "P1^^^^PI", 5: "Lee^Ann", 7: "19800102",
                  13: "^NET^Internet^" + "x" * 300 + "@example.org"}), "too_long", "PID-13"),
])
def test_a_pid_that_cannot_make_a_patient_is_refused_by_field(pid, code, field):
    mapped = map_adt(one(hl7(msh(), pid)), pms="docman10", country="GB")
    assert not mapped.patients
    assert [(e.code, e.field) for e in mapped.errors] == [(code, field)]


def test_sex_codes_of_hl7_table_0001():
    sexes = [map_adt(one(hl7(msh(), f"PID|1||P1^^^^PI||Lee^Ann||19800102|{code}")),
                     pms="docman10", country="GB").patients[0].row["sex"]
             for code in ("M", "F", "O", "A", "U", "N", "")]
    assert sexes == ["M", "F", "X", "X", "U", "U", ""]


def test_a40_names_both_ids_and_merges_nothing():
    mapped = map_message(one(hl7(msh("ADT^A40^ADT_A39"), "EVN|A40",
                                 "PID|1||P1^^^^PI||Lee^Ann||19800102", "MRG|P7^^^^PI",
                                 "PID|2||P2^^^^PI||Hall^Sam||19750505", "MRG|P8^^^^PI")),
                         pms="docman10", country="GB")
    assert [(m.pms_id, m.prior_pms_id) for m in mapped.merges] == [("P1", "P7"), ("P2", "P8")]
    assert not mapped.patients and not mapped.errors


# --- ORU to results --------------------------------------------------------------------------

def oru(control="M1", facility="QML", pms_id="P1", *obrs):
    return hl7(msh("ORU^R01", control, f"SUPERLIS^{facility}"),
               f"PID|1||{pms_id}^^^BP^PI||Lee^Ann||19800102|F", "ORC|RE", *obrs)


SEVERAL_GROUPS = oru(
    "M1", "QML", "P1",
    # Two tests of one accession (one filler order number), collected late on 1 March in
    # Sydney, and 13:00 UTC on 1 March, which is already 2 March in Sydney.
    seg("OBR", {1: "1", 3: "851070356^SUPERLIS", 4: "FBC^Full blood count^LN",
                7: "20240301233000+1100", 22: "20240302101500+1100", 24: "HM", 25: "F"}),
    "OBX|1|NM|HB^Haemoglobin||140|g/L|115-165|N|||F",
    "OBX|2|NM|WCC^White cells||6.1|10*9/L|4-11|N|||F",
    seg("OBR", {1: "2", 3: "851070356^SUPERLIS", 4: "UEC^Urea and electrolytes",
                7: "20240301130000+0000", 22: "20240302", 25: "C"}),
    "OBX|1|NM|NA^Sodium||139|mmol/L|135-145|N|||F",
    "NTE|1||Corrected report",
    "OBR|3||851070357^SUPERLIS|LFT^Liver function|||20240301",
    "OBX|1|NM|ALT^ALT||20|U/L|<35|N|||F",
    seg("OBR", {1: "4", 3: "851070358^SUPERLIS", 4: "TSH^Thyroid", 7: "202403011045", 25: "X"}),
)


def test_one_result_per_obr_with_the_collection_time():
    mapped = map_oru(one(SEVERAL_GROUPS), pms="bestpractice")
    assert [(r["result_id"], r["test_name"], r["performed_on"], r["reported_on"])
            for r in mapped.results] == [
        ("QML:851070356^SUPERLIS:FBC", "Full blood count", "2024-03-01T23:30:00+11:00",
         "2024-03-02"),
        ("QML:851070356^SUPERLIS:UEC", "Urea and electrolytes", "2024-03-01T13:00:00+00:00",
         "2024-03-02"),
        ("QML:851070357^SUPERLIS:LFT", "Liver function", "2024-03-01", ""),
    ]
    assert all(r["pms_id"] == "P1" and r["action"] == "" for r in mapped.results)
    [cancelled] = mapped.errors
    assert (cancelled.code, cancelled.field) == ("cancelled", "OBR-25")
    assert cancelled.reason.startswith("OBR 4:")
    for row in mapped.results:
        assert check_result_row(1, row)[1] == []


@pytest.mark.parametrize("obr, code, field", [
    ("OBR|1||^SUPERLIS|FBC|||20240301", "no_filler_order_number", "OBR-3"),
    ("OBR|1||F1^SUPERLIS|FBC", "no_collection_date", "OBR-7"),
    ("OBR|1||F1^SUPERLIS|FBC|||2024", "bad_date", "OBR-7"),
])
def test_an_obr_that_cannot_be_a_result_is_refused_by_field(obr, code, field):
    mapped = map_oru(one(oru("M1", "QML", "P1", obr)), pms="bestpractice")
    assert not mapped.results
    assert [(e.code, e.field) for e in mapped.errors] == [(code, field)]


def test_the_same_order_number_from_two_labs_is_two_results():
    obr = "OBR|1||851070356^SUPERLIS|FBC|||20240301"
    ids = [map_oru(one(oru("M1", lab, "P1", obr)), pms="bestpractice").results[0]["result_id"]
           for lab in ("QML", "SNP")]
    assert ids[0] != ids[1]


# --- through the CLI -------------------------------------------------------------------------

def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode())
    return path


def results_sync(practice, source):
    return run_json("results", "sync", "--practice", practice.slug, "--source", source,
                    "--format", "hl7")


def test_a_folder_of_orus_imports_every_good_message_and_names_the_bad_one(au_practice, tmp_path):
    make_patient(au_practice, pms_id="P1")
    make_patient(au_practice, pms_id="P2", given_name="Bo")
    folder = tmp_path / "inbox"
    write(folder, "a.hl7", SEVERAL_GROUPS)
    write(folder, "b.hl7", batch(
        oru("M2", "QML", "P2", "OBR|1||900^SUPERLIS|FBC^Full blood count|||202403021000"),
        hl7(r"MSH|^~\&|SUPERLIS|QML|PS|PS|20240302||ORU^R01||P|2.4", "PID|1||P2^^^^PI"),
        oru("M4", "SNP", "P2", "OBR|1||851070356^SUPERLIS|FBC|||20240302")))
    write(folder, "c.txt", oru("M5", "QML", "P9", "OBR|1||901^SUPERLIS|FBC|||20240303"))
    write(folder, "notes.csv", "not,hl7\n")

    code, data = results_sync(au_practice, folder)

    assert code == 1
    by_id = {r.result_id: r for r in Result.objects.filter(practice=au_practice)}
    assert set(by_id) == {"QML:851070356^SUPERLIS:FBC", "QML:851070356^SUPERLIS:UEC",
                          "QML:851070357^SUPERLIS:LFT", "QML:900^SUPERLIS:FBC",
                          "SNP:851070356^SUPERLIS:FBC", "QML:901^SUPERLIS:FBC"}
    assert data["created"] == 6 and data["unmatched"] == 1     # P9 is on nobody's list
    # Days are Sydney days: 13:00 UTC on 1 March is 2 March in the practice.
    assert by_id["QML:851070356^SUPERLIS:FBC"].performed_on == dt.date(2024, 3, 1)
    assert by_id["QML:851070356^SUPERLIS:UEC"].performed_on == dt.date(2024, 3, 2)
    assert by_id["QML:851070356^SUPERLIS:UEC"].performed_at == dt.datetime(2024, 3, 1, 13,
                                                                          tzinfo=UTC)
    assert by_id["QML:851070357^SUPERLIS:LFT"].performed_on == dt.date(2024, 3, 1)
    assert by_id["QML:900^SUPERLIS:FBC"].performed_on == dt.date(2024, 3, 2)
    # No doctor's action travels in an ORU: stored, not eligible, until the PMS actions it.
    assert not any(r.eligible for r in by_id.values())
    assert all(set(e) == {"row", "pms_id", "field", "message"} for e in data["errors"])
    errors = {(e["field"], e["message"].split(": ")[0]) for e in data["errors"]}
    assert errors == {("OBR-25", "a.hl7:message 1"), ("MSH-10", "b.hl7:message 2")}
    assert {e["row"] for e in data["errors"]} == {1, 3}   # a.hl7 holds 1 message, b.hl7 3

    code, again = results_sync(au_practice, folder)
    assert again["created"] == 0 and again["unchanged"] == 6


def test_one_file_on_its_own_and_a_missing_source(au_practice, tmp_path):
    make_patient(au_practice, pms_id="P1")
    path = write(tmp_path, "lab.msg", SEVERAL_GROUPS.replace("\r", "\n"))
    code, data = results_sync(au_practice, path)
    assert data["created"] == 3 and [e["field"] for e in data["errors"]] == ["OBR-25"]
    code, out = run("results", "sync", "--practice", au_practice.slug, "--source",
                    tmp_path / "nowhere", "--format", "hl7")
    assert code == 1 and "nowhere: no such file or folder" in out


def adt(control, pid, kind="ADT^A04"):
    return hl7(msh(kind, control), f"EVN|{kind[4:7]}", pid)


def patients_sync(practice, source, *extra):
    return run_json("patients", "sync", "--practice", practice.slug, "--source", source,
                    "--format", "hl7", *extra)


def test_adt_feeds_patients_through_the_sync_rules_without_marking_anyone_left(practice,
                                                                               tmp_path):
    make_patient(practice, pms_id="P9", given_name="Kim", family_name="Ward")
    make_patient(practice, pms_id="P7", given_name="Zoe", family_name="Obi",
                 date_of_birth=dt.date(1980, 2, 1))
    folder = tmp_path / "adt"
    write(folder, "01.hl7", adt("1", f"PID|1||P100^^^^PI~{NHS[0]}^^^NHS^NH||O'Brien^Zoe||"
                                     f"19800201|F|||||07912 000001^PRN^CP"))
    write(folder, "02.hl7", adt("2", "PID|1||P101^^^^PI||Hall^Sam||1975"))
    # Later in arrival order: the A08 supersedes the A04's mobile.
    write(folder, "03.hl7", adt("3", f"PID|1||P100^^^^PI~{NHS[0]}^^^NHS^NH||O'Brien^Zoe||"
                                     f"19800201|F|||||07912 000002^PRN^CP", "ADT^A08"))
    write(folder, "04.hl7", hl7(msh("ADT^A40", "4"), "EVN|A40",
                                "PID|1||P100^^^^PI||O'Brien^Zoe||19800201", "MRG|P7^^^^PI"))

    code, data = patients_sync(practice, folder)

    assert code == 1
    assert data["created"] == 1 and data["non_digital_created"] == 1
    assert data["left_practice"] == 0 and data["needs_review"] == 1
    zoe = Patient.objects.get(practice=practice, pms_id="P100")
    assert (zoe.digital, zoe.nhs_number, zoe.mobile_phone) == (False, NHS[0], "+447912000002")
    assert Patient.objects.get(pms_id="P9").status == "active"   # not in the feed, not left
    assert Patient.objects.get(pms_id="P7").status == "active"   # merged in the PMS, not here
    [merge] = ReviewItem.objects.filter(practice=practice, kind="pms_merge")
    assert merge.pms_ids == ["P100", "P7"] and "04.hl7:message 1" in merge.detail
    assert {p.pms_id for p in merge.patients.all()} == {"P100", "P7"}
    assert data["errors"] == [{"row": 2, "pms_id": "P101", "field": "PID-7",
                               "message": "02.hl7:message 1: PID-7 (date of birth) '1975' is "
                                          "not precise to a day"}]
    assert SyncRun.objects.get(id=data["run_id"]).kind == "patients_partial"

    code, again = patients_sync(practice, folder)
    assert again["created"] == again["updated"] == 0 and again["needs_review"] == 1
    assert ReviewItem.objects.filter(kind="pms_merge").count() == 1


def test_row_errors_name_the_hl7_field(practice, tmp_path):
    path = write(tmp_path, "a.hl7", adt("1", seg("PID", {
        3: "P1^^^^PI~9990000017^^^NHS^NH", 5: "Lee^Ann", 7: "19800102", 8: "Q",
        14: "12^WPN^CP"})))
    code, data = patients_sync(practice, path)
    assert {(e["field"], e["message"][:15]) for e in data["errors"]} == {
        ("PID-3", "a.hl7:message 1"), ("PID-8", "a.hl7:message 1"),
        ("PID-14", "a.hl7:message 1")}
    assert Patient.objects.get(pms_id="P1").nhs_number is None


def test_a_dry_run_of_an_adt_feed_writes_nothing(practice, tmp_path):
    path = write(tmp_path, "a.hl7", adt("1", "PID|1||P1^^^^PI||Lee^Ann||19800102"))
    code, data = patients_sync(practice, path, "--dry-run")
    assert code == 0 and data["created"] == 1
    assert not Patient.objects.exists() and not SyncRun.objects.exists()


def test_the_real_commands_import_a_drop_folder(tmp_path):
    """As a lab's drop folder is read: separate processes, a real database file."""
    home = tmp_path / "home"
    assert process(home, "migrate", "--verbosity", "0").returncode == 0
    assert process(home, "practice", "create", "--name", "Harbour", "--pms", "bestpractice"
                   ).returncode == 0
    assert process(home, "practice", "permit", "--practice", "harbour", "--granted-by", "Dr A",
                   "--dpia-ref", "D1").returncode == 0
    adt_path = write(tmp_path / "adt", "p1.hl7", adt("1", seg("PID", {
        3: f"P1^^^BP^PI~{MEDICARE}1^^^AUSHIC^MC", 5: "Lee^Ann", 7: "19800102", 8: "F",
        13: "0412 345 678^PRN^CP"})))
    patients = process(home, "patients", "sync", "--practice", "harbour", "--source", adt_path,
                       "--format", "hl7", "--json")
    assert patients.returncode == 0, patients.stderr
    assert json.loads(patients.stdout)["created"] == 1
    folder = tmp_path / "lab"
    write(folder, "a.hl7", SEVERAL_GROUPS)
    write(folder, "b.hl7", "MSH|^~\\&|SUPERLIS|QML\r")
    results = process(home, "results", "sync", "--practice", "harbour", "--source", folder,
                      "--format", "hl7")
    assert results.returncode == 1, results.stderr
    assert "created 3" in results.stdout
    assert "OBR-25: a.hl7:message 1: OBR 4: result status X" in results.stdout
    assert "MSH-9: b.hl7:message 1: MSH-9 (message type) is missing" in results.stdout
    export = json.loads(process(home, "export", "--practice", "harbour").stdout)
    assert [(r["pms_id"], r["performed_on"]) for r in export["results"]] == [
        ("P1", "2024-03-01"), ("P1", "2024-03-02"), ("P1", "2024-03-01")]


# --- the external corpus ---------------------------------------------------------------------

CORPUS = Path(os.environ.get("PRACTICESYNC_CORPORA")
              or Path(__file__).resolve().parents[2] / "shared" / "corpora") / "hl7v2"
AU_SOURCES = ("peterpiper-au-GPL3/", "adha-hl7-mdm/")
MAPPED_TYPES = ("ADT_A04", "ADT_A08", "ADT_A28", "ADT_A31", "ADT_A40", "ORU_R01")


def corpus_outcome(path: Path, rel: str) -> str:
    """Parse and map every message of one corpus file, then run the rows through the same
    checks the imports apply. One word per message ("accepted", "partial:<why>" when some OBRs
    were refused, "rejected:<why>") and per problem of the file as a whole ("file:<why>")."""
    country = "AU" if rel.startswith(AU_SOURCES) or "VINAH" in rel else "GB"
    pms = "bestpractice" if country == "AU" else "docman10"
    words = []
    for item in parse_payload(path.read_bytes()):
        if isinstance(item, MessageError):
            words.append(f"{'file' if item.message_index == 0 else 'rejected'}:{item.code}")
            continue
        mapped = map_message(item, pms=pms, country=country)
        for patient in mapped.patients:
            assert check_row(1, patient.row, country)[0] is not None, rel
        for result in mapped.results:
            assert check_result_row(1, result)[0] is not None, rel
        why = ",".join(sorted({e.code for e in mapped.errors}))
        if not mapped.accepted:
            words.append(f"rejected:{why}")
        else:
            words.append(f"partial:{why}" if why else "accepted")
    return " ".join(words)


def expected_outcome(rel: str) -> str:
    if rel in CORPUS_EXCEPTIONS:
        return CORPUS_EXCEPTIONS[rel]
    kind = Path(rel).name.split("__")[1]
    return "accepted" if kind in MAPPED_TYPES else "rejected:unsupported_type"


FUZZ = "malformed/nhapi-fuzz__"
# Every file whose outcome is not what its message type alone says, and why.
CORPUS_EXCEPTIONS = {
    # Patient messages whose PID-3 has no PI/MR id (MRN, "A" and untyped lists of several).
    "microsoft-fhir-converter/msfc__ADT_A04__ADT04-28.hl7": "rejected:no_pms_id",
    "python-hl7/python-hl7__ADT_A04__sample_batch.hl7": "rejected:no_pms_id",
    "python-hl7/python-hl7__ADT_A04__sample_file1.hl7":
        "rejected:no_pms_id rejected:no_pms_id rejected:no_pms_id",
    "cdcgov-trusted-intermediary/cdc__ORU_R01__002_CA_ORU_R01.hl7": "rejected:no_pms_id",
    "cdcgov-trusted-intermediary/cdc__ORU_R01__005_AL_ORU_R01_NBS_Simplified_0_initial_message"
    ".hl7": "rejected:no_pms_id file:envelope",     # and its FHS/BHS are never closed
    "hapi-hl7v2-MPL-GPL/hapi__ORU_R01__example_oml_o21_m10.hl7": "rejected:no_pms_id",
    # California public-health ORUs leave OBR-3 (filler order number) empty.
    **{f"cdcgov-trusted-intermediary/cdc__ORU_R01__{name}.hl7": "rejected:no_filler_order_number"
       for name in (
           "003_CA_ORU_R01_CDPH_produced", "003_CA_ORU_R01_CDPH_produced_0_initial_message",
           "004_CA_ORU_R01_CDPH_produced_0_initial_message", "004_CA_ORU_R01_leading_zeroes",
           "005_CA_ORU_R01_CDPH_generated_0_initial_message", "005_CA_ORU_R01_no_leading_zeroes",
           "006_CA_ORU_R01_LOINC", "006_CA_ORU_R01_UCSD2024-07-11-16-02-17-749_0_initial_message",
           "007_CA_ORU_R01_CDPH_produced_UCSD2024-07-11-16-02-17-749_0_initial_message",
           "007_CA_ORU_R01_PLT", "008_ORU_R01_micro_character_encoding",
           "009_CA_ORU_R01_remove_99717-5_OBX",
           "010_CA_ORU_R01_CDPH_produced_from_UCSD_order_189556932_0_initial_message",
           "012_CA_ORU_R01_CDPH_produced_from_UCSD_order_189417053_0_initial_message",
           "014_CA_ORU_R01_CDPH_produced_from_UCSD_order_189394505_0_initial_message",
           "016_CA_ORU_R01_CDPH_produced_from_UCSD_order_189609160_0_initial_message",
           "017_CA_ORU_R01_CDPH_empty_obr16_UCSD2024-07-11-16-02-17-749_0_initial_message",
           "018_CA_ORU_R01_CDPH_empty_orc12_UCSD2024-07-11-16-02-17-749_0_initial_message",
           "019_CA_ORU_R01_CDPH_empty_orc12_obr16_UCSD2024-07-11-16-02-17-749_0_initial_message",
           "020_CA_ORU_R01_CDPH_OBX_to_LOINC_0_initial_message")},
    # A long line of OBR data wrapped onto a line of its own (not our type either way).
    "cdcgov-trusted-intermediary/cdc__OML_O21__001_TX_OML_O21.hl7": "rejected:bad_segment",
    # The 13-message HAPI lab workflow: two messages carry no MSH-10.
    "hapi-hl7v2-MPL-GPL/hapi__OML_O21__example_oml_o21_m11.hl7": "rejected:no_control_id",
    "hapi-hl7v2-MPL-GPL/hapi__OML_O21__example_oml_o21_m12.hl7": "rejected:no_control_id",
    # --- malformed/: deliberately broken inputs -----------------------------------------
    "malformed/cdc__NOMSH__empty.hl7": "file:empty",
    "malformed/cdc__NOMSH__msh_present_but_missing_all_fields.hl7": "rejected:bad_msh",
    "malformed/cdc__NOMSH__msh_present_but_missing_msh-9.hl7": "rejected:no_message_type",
    "malformed/cdc__ORM_O01__msh_present_but_missing_msh-10.hl7": "rejected:no_control_id",
    "malformed/cdc__ORM_O01__msh_present_but_missing_msh-2.hl7": "rejected:bad_msh",
    # HL7 v2.3, a missing MSH-6 and a text OBX-5 are all fine for parsing; ORM is not ours.
    "malformed/cdc__ORM_O01__msh-12_has_value_2_3.hl7": "rejected:unsupported_type",
    "malformed/cdc__ORM_O01__msh_present_but_missing_msh-6.hl7": "rejected:unsupported_type",
    "malformed/cdc__ORM_O01__orm_obx-5_is_not_a_numeric_value.hl7": "rejected:unsupported_type",
    # Non-default delimiters parse; A24 (link patients) is not a message we map.
    "malformed/hapi__ADT_A24__segmentfinder_a24_custom_delimiters.hl7":
        "rejected:unsupported_type",
    # Broken envelopes: a nested BHS/FHS cuts the message, its remaining segments are orphans.
    "malformed/python-hl7__ADT_A04__sample_bad_batch1.hl7":
        "rejected:envelope file:envelope file:no_msh file:envelope",
    "malformed/python-hl7__ADT_A04__sample_bad_file2.hl7":
        "rejected:envelope file:envelope file:no_msh",
    "malformed/python-hl7__NOMSH__sample_bad_batch.hl7": "file:no_msh file:envelope",
    "malformed/python-hl7__NOMSH__sample_bad_file.hl7": "file:no_msh file:envelope",
    # Field1/Component1 placeholders: parses, but an ORU with no OBR reports nothing.
    "malformed/python-hl7__ORU_R01__rep_sample_hl7.hl7": "rejected:no_obr",
    # Fuzzer inputs that crashed or hung nHapi: each is refused for its first fault.
    **{FUZZ + name + ".hl7": outcome for name, outcome in {
        "LegacyPipeParser__EncodingNotSupportedException__aoor1": "file:empty",
        "LegacyPipeParser__EncodingNotSupportedException__nullref1": "rejected:bad_msh",
        "LegacyPipeParser__HL7Exception__hang1": "rejected:bad_segment",
        "LegacyPipeParser__HL7Exception__ioor1": "rejected:bad_msh",
        "LegacyPipeParser__HL7Exception__stackoverflow1": "rejected:no_control_id",
        "LegacyPipeParser__HL7Exception__stackoverflow2": "rejected:no_control_id",
        "LegacyPipeParser__HL7Exception__sys1": "rejected:bad_msh",
        "LegacyPipeParser__HL7Exception__sys2": "rejected:bad_msh",
        "LegacyPipeParser__NoException__regex1": "rejected:bad_msh",
        "PipeParser__EncodingNotSupportedException__id_000014": "file:no_msh",
        "PipeParser__EncodingNotSupportedException__id_000213": "file:no_msh",
        "PipeParser__HL7Exception__id_000029": "rejected:bad_segment",
        "PipeParser__HL7Exception__id_000092": "rejected:bad_segment",
        "PipeParser__NoException__id_000109": "rejected:bad_segment",
        "PipeParser__NoException__id_000146": "rejected:bad_segment",
        **{f"PipeParser__HL7Exception__{n}": "rejected:bad_msh" for n in (
            "id_000001", "id_000042", "id_000055", "id_000064", "id_000087", "id_000099",
            "id_000118", "id_000119", "id_000123", "id_000125", "id_000149", "id_000151",
            "id_000160", "id_000172", "id_000176", "id_000205", "so", "so2", "so3", "so4",
            "so5")},
        "PipeParser__NoException__id_000168": "rejected:bad_msh",
    }.items()},
}


def test_the_external_corpus_end_to_end():
    if not CORPUS.is_dir():
        pytest.skip(f"the external HL7 v2 corpus is not at {CORPUS} (set PRACTICESYNC_CORPORA "
                    f"to its folder); only this test needs it")
    files = sorted(p for p in CORPUS.rglob("*.hl7"))
    assert len(files) == 397
    outcomes = {p.relative_to(CORPUS).as_posix(): corpus_outcome(p, p.relative_to(CORPUS)
                                                                  .as_posix()) for p in files}
    wrong = {rel: (got, expected_outcome(rel)) for rel, got in outcomes.items()
             if got != expected_outcome(rel)}
    assert not wrong, wrong
    assert not set(CORPUS_EXCEPTIONS) - set(outcomes), "the table names files that are gone"
    accepted = [rel for rel, got in outcomes.items() if got.startswith("accepted")]
    # 34 AU pathology ORUs, 21 US lab ORUs, 17 Microsoft ADT/ORU samples, the 6 line-ending
    # variants, the HAPI radiology report and python-hl7's ORU.
    assert len(accepted) == 80
    assert all("unparseable" not in got for got in outcomes.values())


def test_the_corpus_line_ending_variants_give_identical_results():
    variants = sorted(CORPUS.glob("malformed/derived-msfc__ORU_R01__LAB-ORU-1_*.hl7"))
    if not variants:
        pytest.skip(f"the external HL7 v2 corpus is not at {CORPUS}")
    results = {json.dumps(map_oru(one(p.read_bytes()), pms="bestpractice").results)
               for p in [*variants, CORPUS / "microsoft-fhir-converter/msfc__ORU_R01__LAB-ORU-1.hl7"]}
    assert len(results) == 1


# --- arbitrary input -------------------------------------------------------------------------

HL7ISH = st.text(st.sampled_from(list("MSHPIDOBRXNTE|^~\\&\r\n\x0b\x1c 0123456789AZ.+-")),
                 max_size=400)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=600), HL7ISH.map(str.encode),
                 HL7ISH.map(lambda t: (r"MSH|^~\&|A|B|||2026||ORU^R01|1|P|2.4" + "\r" + t)
                            .encode()),
                 HL7ISH.map(lambda t: (r"MSH|^~\&|A|B|||2026||ADT^A04|1|P|2.4" + "\rPID|" + t)
                            .encode())))
def test_any_bytes_give_messages_or_errors_never_an_exception(payload):
    for item in parse_payload(payload):
        assert isinstance(item, Message | MessageError)
        if isinstance(item, Message):
            for country in ("GB", "AU"):
                mapped = map_message(item, pms="bestpractice", country=country)
                for patient in mapped.patients:
                    check_row(1, patient.row, country)
                for result in mapped.results:
                    check_result_row(1, result)


def test_the_reader_reports_an_unreadable_file_and_goes_on(tmp_path):
    write(tmp_path, "a.hl7", SEVERAL_GROUPS)
    write(tmp_path, "b.hl7", "")
    items = list(read_hl7_source(tmp_path))
    assert [(i.number, i.ref, i.error.code if i.error else "ok") for i in items] == [
        (1, "a.hl7:message 1", "ok"), (0, "b.hl7", "empty")]
