"""FHIR R4 files: Patient and DiagnosticReport mapping, Bundle/folder import through the CLI,
the same patients as CSV and as FHIR, and the external sample corpus end to end. Resources
written here are synthetic."""

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from practicesync.connectors.fhir import read_patient_feed, read_result_feed
from practicesync.connectors.fhir.mapping import (
    ACTION_EXTENSION,
    IHI_SYSTEM,
    MEDICARE_SYSTEM,
    NHS_SYSTEM,
    map_patient,
    map_report,
)
from practicesync.connectors.fhir.reader import validate
from practicesync.patients.models import Patient, ReviewItem, SyncRun
from practicesync.patients.rows import check_row
from practicesync.results.models import Result
from practicesync.results.rows import check_result_row
from tests.cli import process, run, run_json
from tests.factories import IHI, MEDICARE, NHS, list_row, make_practice, write_list

UTC = dt.UTC
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def ident(system=None, value="", code=None, **extra) -> dict:
    out = {"value": value, **extra}
    if system:
        out["system"] = system
    if code:
        out["type"] = {"coding": [{"system": V2, "code": code}]}
    return out


def patient(pid="p1", identifiers=(), family="Lee", given=("Ann",), birth="1980-01-02",
            **extra) -> dict:
    out = {"resourceType": "Patient", "id": pid, "identifier": list(identifiers),
           "name": [{"use": "official", "family": family, "given": list(given)}],
           "birthDate": birth, **extra}
    return {k: v for k, v in out.items() if v not in (None, [])}


def report(rid="r1", subject="Patient/p1", identifiers=(), status="final", **extra) -> dict:
    out = {"resourceType": "DiagnosticReport", "id": rid, "status": status,
           "identifier": list(identifiers), "code": {"text": "Full blood count"},
           "subject": {"reference": subject}, **extra}
    return {k: v for k, v in out.items() if v not in (None, [])}


def bundle(*resources, kind="collection", urls=None) -> dict:
    urls = urls or [f"urn:uuid:00000000-0000-0000-0000-{n:012d}" for n in range(len(resources))]
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{"fullUrl": u, "resource": r} for u, r in zip(urls, resources, strict=True)]}


def item(raw: dict, number=1):
    found = validate(number, "t.json", raw)
    assert found.error is None, found.error
    return found


def write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# --- Patient ---------------------------------------------------------------------------------

PHONES = [{"system": "phone", "value": "020 7946 0000", "use": "home"},
          {"system": "phone", "value": "07912 000001", "use": "mobile"},
          {"system": "email", "value": "ann@example.org"}]


@pytest.mark.parametrize("raw, country, expected", [
    # UK: the NHS number by its system; the MR identifier is the PMS id.
    (patient(identifiers=[ident(NHS_SYSTEM, NHS[0]), ident("urn:pms", "P100", "MR")],
             telecom=PHONES, gender="female",
             address=[{"use": "old", "line": ["1 Old Rd"]},
                      {"use": "home", "line": ["2 High St", "Flat 3"], "city": "Leeds",
                       "postalCode": "LS1 1AA"}]),
     "GB", {"pms_id": "P100", "nhs_number": NHS[0], "sex": "F", "mobile_phone": "07912 000001",
            "home_phone": "020 7946 0000", "email": "ann@example.org",
            "address_line1": "2 High St", "address_line2": "Flat 3", "locality": "Leeds",
            "postcode": "LS1 1AA", "ihi": "", "medicare_number": ""}),
    # AU: IHI and Medicare (card number and IRN in one value, AU Base); no PI/MR identifier,
    # so the resource id is the PMS id.
    (patient("bp-77", [ident(IHI_SYSTEM, IHI, "NI"), ident(MEDICARE_SYSTEM, MEDICARE + "1", "MC")],
             gender="male"),
     "AU", {"pms_id": "bp-77", "ihi": IHI, "medicare_number": MEDICARE + "1", "sex": "M",
            "nhs_number": ""}),
    # Another country's identifiers are not taken.
    (patient(identifiers=[ident(IHI_SYSTEM, IHI), ident(NHS_SYSTEM, NHS[0])]), "AU",
     {"ihi": IHI, "nhs_number": ""}),
    (patient(identifiers=[ident(IHI_SYSTEM, IHI), ident(NHS_SYSTEM, NHS[0])]), "GB",
     {"ihi": "", "nhs_number": NHS[0]}),
    # PI before MR; an old identifier is not taken.
    (patient(identifiers=[ident("urn:a", "M1", "MR"), ident("urn:b", "I9", "PI", use="old"),
                          ident("urn:b", "I1", "PI")]), "GB", {"pms_id": "I1"}),
    # Deceased: a boolean, or a date-time (its own day, as written).
    (patient(deceasedBoolean=True), "GB", {"registration_status": "deceased",
                                           "date_of_death": ""}),
    (patient(deceasedDateTime="2024-03-01T23:30:00+10:00"), "AU",
     {"date_of_death": "2024-03-01", "registration_status": ""}),
    (patient(deceasedDateTime="2024"), "AU", {"date_of_death": "2024"}),
    # Phones: an untyped number is a mobile when the numbering plan says so; work phones are
    # not taken; sms is a mobile; a lower rank first; the official name, its first given.
    (patient(telecom=[{"system": "phone", "value": "0412 345 678", "use": "work"},
                      {"system": "phone", "value": "0298765432"},
                      {"system": "sms", "value": "0412 000 002", "rank": 2},
                      {"system": "phone", "value": "0412 000 001", "rank": 1}],
             name=[{"use": "nickname", "family": "Lee", "given": ["Annie"]},
                   {"use": "official", "family": "Lee", "given": ["Ann", "Maree"],
                    "prefix": ["Ms"]}]),
     "AU", {"mobile_phone": "0412 000 001", "home_phone": "0298765432", "given_name": "Ann",
            "title": "Ms"}),
    (patient(gender="unknown"), "GB", {"sex": "U", "date_of_birth": "1980-01-02"}),
])
def test_patient_maps_to_a_canonical_list_row(raw, country, expected):
    mapped = map_patient(item(raw), country=country)
    assert mapped.error is None
    assert {k: mapped.row[k] for k in expected} == expected
    row, _ = check_row(1, mapped.row, country)
    assert row is not None


@pytest.mark.parametrize("raw, code, where", [
    (patient(given=()), "no_name", "Patient.name"),
    (patient(birth=None), "no_birth_date", "Patient.birthDate"),
    (patient(birth="1980"), "bad_birth_date", "Patient.birthDate"),
    (patient(pid=None), "no_pms_id", "Patient.identifier"),
    (patient(address=[{"city": "x" * 101}]), "too_long", "Patient.address.city"),
])
def test_a_patient_that_cannot_make_a_row_is_refused_by_fhir_path(raw, code, where):
    mapped = map_patient(item(raw), country="GB")
    assert (mapped.row, mapped.error.code, mapped.error.where) == (None, code, where)
    assert mapped.error.as_dict()["message"].startswith("t.json Patient")


@pytest.mark.parametrize("system, pms_id, code", [
    ("urn:bp:patient", "B7", None),
    ("urn:oid:1.2.36.99", "O5", None),           # urn:oid: optional on either side
    ("urn:elsewhere", None, "no_pms_id"),          # named but absent: no guessing by type or id
    ("", "P100", None),                            # not set: type PI/MR, as before
])
def test_a_practice_can_name_the_identifier_system_of_its_pms_id(system, pms_id, code):
    raw = patient("res-1", [ident("urn:hospital", "P100", "MR"), ident("urn:bp:patient", "B7"),
                            ident("1.2.36.99", "O5")])
    mapped = map_patient(item(raw), country="GB", pms_id_system=system)
    if code:
        assert (mapped.row, mapped.error.code) == (None, code)
        assert system in mapped.error.reason
    else:
        assert mapped.row["pms_id"] == pms_id


def test_an_invalid_resource_is_named_by_its_fhir_path():
    found = validate(3, "a.json:entry[2]", patient(birth="1980-13-01"))
    assert found.resource is None
    assert found.error.as_dict()["field"] == "Patient.birthDate"
    assert found.error.as_dict()["message"].startswith("a.json:entry[2] Patient/p1: not a valid")
    found = validate(1, "a.json", {**patient(), "identifier": [{"system": 3}]})
    assert found.error.where == "Patient.identifier[0].system"


# --- DiagnosticReport ------------------------------------------------------------------------

LAB = "http://ns.electronichealth.net.au/id/hpio-scoped/report/1.0/8003628233373131"


@pytest.mark.parametrize("raw, expected", [
    # The filler's identifier, namespaced by its system; the offset is kept.
    (report(identifiers=[ident(LAB, "26-1-HDL", "FGN"), ident(LAB, "26-1-HDL-01", "FILL")],
            effectiveDateTime="2024-03-01T14:00:00+00:00", issued="2024-03-02T09:30:00+11:00"),
     {"result_id": f"{LAB[7:]}|26-1-HDL-01", "pms_id": "p1",
      "performed_on": "2024-03-01T14:00:00+00:00", "reported_on": "2024-03-02",
      "test_name": "Full blood count", "action": ""}),
    # No identifier: the resource id; the period's start; the coding's display.
    (report(effectivePeriod={"start": "2024-03-01T08:00:00+10:00"},
            code={"coding": [{"code": "26604007", "display": "FBC"}]}),
     {"result_id": "DiagnosticReport/r1", "performed_on": "2024-03-01T08:00:00+10:00",
      "test_name": "FBC", "reported_on": ""}),
    # A day only.
    (report(effectiveDateTime="2024-03-01"), {"performed_on": "2024-03-01"}),
    # No effective time on the report: its (contained) Observation's.
    (report(contained=[{"resourceType": "Observation", "id": "o1", "status": "final",
                        "code": {"text": "Hb"}, "effectiveDateTime": "2024-03-01T09:00:00+10:00"}],
            result=[{"reference": "#o1"}]),
     {"performed_on": "2024-03-01T09:00:00+10:00"}),
    # The subject resolved through the Bundle: the Patient's own PMS id.
    (report(subject="urn:uuid:p-one", effectiveDateTime="2024-03-01"), {"pms_id": "P100"}),
    (report(subject="https://pms.example/fhir/Patient/p9/_history/3",
            effectiveDateTime="2024-03-01"), {"pms_id": "P900"}),
    # The doctor's action, when a PMS sends it in our extension.
    (report(effectiveDateTime="2024-03-01", extension=[{"url": ACTION_EXTENSION, "extension": [
        {"url": "action", "valueString": "Non-Urgent Appointment"},
        {"url": "actionedOn", "valueDate": "2024-03-04"},
        {"url": "comment", "valueString": "see me"}]}]),
     {"action": "Non-Urgent Appointment", "actioned_on": "2024-03-04", "comment": "see me"}),
])
def test_diagnostic_report_maps_to_a_canonical_result_row(raw, expected):
    mapped = map_report(item(raw), patients={"urn:uuid:p-one": "P100", "Patient/p9": "P900"},
                        observations={})
    assert mapped.error is None, mapped.error
    assert {k: mapped.row[k] for k in expected} == expected
    assert check_result_row(1, mapped.row)[0] is not None


@pytest.mark.parametrize("raw, code, where", [
    (report(status="cancelled", effectiveDateTime="2024-03-01"), "cancelled",
     "DiagnosticReport.status"),
    (report(status="entered-in-error", effectiveDateTime="2024-03-01"), "cancelled",
     "DiagnosticReport.status"),
    (report(), "no_effective", "DiagnosticReport.effective[x]"),
    (report(effectiveDateTime="2024-03"), "bad_date", "DiagnosticReport.effective[x]"),
    (report(subject="Group/g1", effectiveDateTime="2024-03-01"), "no_patient",
     "DiagnosticReport.subject"),
    (report(rid=None, effectiveDateTime="2024-03-01"), "no_identifier",
     "DiagnosticReport.identifier"),
])
def test_a_report_that_cannot_be_a_result_is_refused_by_fhir_path(raw, code, where):
    mapped = map_report(item(raw), patients={}, observations={})
    assert (mapped.row, mapped.error.code, mapped.error.where) == (None, code, where)


@pytest.mark.parametrize("subject, pms_id_system, expected", [
    ({"reference": "Patient/p7"}, "", "p7"),  # a PMS server's own patient ids
    ({"reference": "Patient/p7"}, "urn:oid:1.2.36.1", None),  # named system: no guessing
    ({"reference": "urn:uuid:p-one"}, "urn:oid:1.2.36.1", "P100"),  # a Patient of the source
    ({"identifier": {"system": "urn:oid:1.2.36.1", "value": "P55"}}, "1.2.36.1", "P55"),
    ({"identifier": {"system": "urn:oid:9.9", "value": "LAB55"}}, "urn:oid:1.2.36.1", None),
])
def test_a_report_subject_follows_the_practice_pms_id_system(subject, pms_id_system, expected):
    raw = report(effectiveDateTime="2024-03-01") | {"subject": subject}
    mapped = map_report(item(raw), patients={"urn:uuid:p-one": "P100"}, observations={},
                        pms_id_system=pms_id_system)
    assert (mapped.row["pms_id"] if mapped.row else None) == expected


# --- import through the CLI ------------------------------------------------------------------

def sync(kind, practice, source, *extra):
    return run_json(kind, "sync", "--practice", practice.slug, "--source", source,
                    "--format", "fhir", *extra)


def test_a_folder_of_bundles_imports_the_good_and_names_the_bad(au_practice, tmp_path):
    folder = tmp_path / "drop"
    ann = patient("p1", [ident("urn:bp", "P1", "MR"), ident(IHI_SYSTEM, IHI)],
                  telecom=[{"system": "phone", "value": "0412 345 678", "use": "mobile"}])
    bo = patient("p2", [ident("urn:bp", "P2", "MR")], given=("Bo",))
    write(folder, "a.json", bundle(
        ann, bo,
        # 14:00 UTC on 1 March is 2 March in Sydney; 09:00 at +10:00 is still 1 March.
        report("r1", "urn:uuid:00000000-0000-0000-0000-000000000000",
               effectiveDateTime="2024-03-01T14:00:00+00:00"),
        report("r2", "Patient/p2", effectiveDateTime="2024-03-01T09:00:00+10:00"),
        report("r3", "Patient/p1", status="cancelled", effectiveDateTime="2024-03-01"),
        {"resourceType": "Encounter", "id": "e1", "status": "finished"}))
    write(folder, "b.json", patient("p3", [ident("urn:bp", "P3", "MR")], birth="1980-13-01"))
    write(folder, "c.json", "{not json")
    write(folder, "d.json", {"resourceType": "Specimen", "id": "s1"})
    write(folder, "e.json", patient("p4", [ident("urn:bp", "P4", "MR"), ident(IHI_SYSTEM,
                                                                              "8003600000000000")]))
    write(folder, "notes.txt", "not read")

    code, data = sync("patients", au_practice, folder)

    assert code == 1
    assert data["created"] == 3 and data["left_practice"] == 0
    stored = {p.pms_id: p for p in Patient.objects.filter(practice=au_practice)}
    assert set(stored) == {"P1", "P2", "P4"}
    assert (stored["P1"].ihi, stored["P1"].mobile_phone) == (IHI, "+61412345678")
    assert stored["P4"].ihi is None     # imported without the bad identifier
    assert all(set(e) == {"row", "pms_id", "field", "message"} for e in data["errors"])
    got = {(e["field"], e["message"].split(": ")[0]) for e in data["errors"]}
    assert got == {("Patient.birthDate", "b.json Patient/p3"), ("", "c.json"),
                   ("Specimen", "d.json"), ("Patient.identifier", "e.json Patient/p4")}
    assert SyncRun.objects.get(id=data["run_id"]).kind == "patients_partial"

    code, data = sync("results", au_practice, folder)

    assert code == 1
    by_id = {r.result_id: r for r in Result.objects.filter(practice=au_practice)}
    assert set(by_id) == {"DiagnosticReport/r1", "DiagnosticReport/r2"}
    assert (by_id["DiagnosticReport/r1"].pms_id, by_id["DiagnosticReport/r2"].pms_id) == ("P1", "P2")
    assert by_id["DiagnosticReport/r1"].performed_on == dt.date(2024, 3, 2)
    assert by_id["DiagnosticReport/r1"].performed_at == dt.datetime(2024, 3, 1, 14, tzinfo=UTC)
    assert by_id["DiagnosticReport/r2"].performed_on == dt.date(2024, 3, 1)
    assert not any(r.eligible for r in by_id.values())    # unactioned
    assert data["unmatched"] == 0
    got = {(e["field"], e["message"].split(": ")[0]) for e in data["errors"]}
    assert ("DiagnosticReport.status", "a.json:entry[4] DiagnosticReport/r3") in got
    assert ("Patient.birthDate", "b.json Patient/p3") in got

    code, again = sync("results", au_practice, folder)
    assert again["created"] == 0 and again["unchanged"] == 2


def test_a_patient_link_merge_is_raised_for_review_and_nothing_merged(practice, tmp_path):
    survivor = patient("p1", [ident("urn:pms", "P1", "PI")],
                       link=[{"other": {"reference": "Patient/p2"}, "type": "replaces"}])
    prior = patient("p2", [ident("urn:pms", "P2", "PI")], given=("Bo",), active=False,
                    link=[{"other": {"reference": "Patient/p1"}, "type": "replaced-by"},
                          {"other": {"reference": "RelatedPerson/x"}, "type": "seealso"}])
    path = write(tmp_path, "merge.json", bundle(survivor, prior))
    code, data = sync("patients", practice, path)
    assert code == 0 and data["created"] == 2 and data["needs_review"] == 1
    [merge] = ReviewItem.objects.filter(practice=practice, kind="pms_merge")
    assert merge.pms_ids == ["P1", "P2"] and "merged patient P2 into P1" in merge.detail
    assert merge.detail.startswith("merge.json:entry[")
    assert set(Patient.objects.values_list("status", flat=True)) == {"active"}


def test_a_single_file_a_dry_run_and_a_missing_source(practice, tmp_path):
    path = write(tmp_path, "one.json", patient("p1", [ident(NHS_SYSTEM, NHS[0])]))
    code, data = sync("patients", practice, path, "--dry-run")
    assert code == 0 and data["created"] == 1
    assert not Patient.objects.exists() and not SyncRun.objects.exists()
    code, out = run("results", "sync", "--practice", practice.slug, "--source",
                    tmp_path / "nowhere", "--format", "fhir")
    assert code == 1 and "nowhere: no such file or folder" in out


def test_the_same_patients_as_csv_and_as_fhir_are_stored_alike(tmp_path, db):
    make_practice(slug="by-csv")
    by_fhir = make_practice(slug="by-fhir")
    rows = [
        list_row(pms_id="P1", nhs_number=NHS[0], title="Ms", given_name="Zoë",
                 family_name="O'Brien", date_of_birth="1980-02-01", sex="F",
                 mobile_phone="07912 000001", home_phone="020 7946 0000",
                 email="zoe@example.org", address_line1="2 High St", address_line2="Flat 3",
                 locality="Leeds", postcode="LS1 1AA"),
        list_row(pms_id="P2", nhs_number=NHS[1], given_name="Sam", family_name="Hall",
                 date_of_birth="1940-05-06", sex="M", registration_status="deceased",
                 date_of_death="2024-01-02"),
        list_row(pms_id="P3", given_name="Kim", family_name="Ward", date_of_birth="2001-12-31",
                 sex="X", email="kim@example.org"),
    ]
    write_list(tmp_path / "list.csv", rows)
    resources = [
        patient("a", [ident("urn:pms", "P1", "PI"), ident(NHS_SYSTEM, NHS[0])], "O'Brien",
                ("Zoë",), "1980-02-01", gender="female", telecom=PHONES[:2] + [
                    {"system": "email", "value": "zoe@example.org"}],
                address=[{"use": "home", "line": ["2 High St", "Flat 3"], "city": "Leeds",
                          "postalCode": "LS1 1AA"}],
                name=[{"use": "official", "family": "O'Brien", "given": ["Zoë"],
                       "prefix": ["Ms"]}]),
        patient("b", [ident("urn:pms", "P2", "PI"), ident(NHS_SYSTEM, NHS[1])], "Hall", ("Sam",),
                "1940-05-06", gender="male", deceasedDateTime="2024-01-02"),
        patient("P3", [], "Ward", ("Kim",), "2001-12-31", gender="other",
                telecom=[{"system": "email", "value": "kim@example.org"}]),
    ]
    write(tmp_path / "fhir", "list.json", bundle(*resources, kind="searchset"))

    assert run_json("patients", "sync", "--practice", "by-csv", "--source",
                    tmp_path / "list.csv")[0] == 0
    assert sync("patients", by_fhir, tmp_path / "fhir")[0] == 0

    def patients(slug):
        export = json.loads(run("export", "--practice", slug)[1])
        return [{k: v for k, v in p.items() if k != "id"} for p in export["patients"]]

    assert patients("by-csv") == patients("by-fhir")
    assert len(patients("by-fhir")) == 3


def test_the_real_commands_import_a_bundle(tmp_path):
    """As a PMS's export folder is read: separate processes, a real database file."""
    home = tmp_path / "home"
    assert process(home, "migrate", "--verbosity", "0").returncode == 0
    assert process(home, "practice", "create", "--name", "Harbour", "--pms", "bestpractice"
                   ).returncode == 0
    assert process(home, "practice", "permit", "--practice", "harbour", "--granted-by", "Dr A",
                   "--dpia-ref", "D1").returncode == 0
    path = write(tmp_path / "fhir", "a.json", bundle(
        patient("p1", [ident(MEDICARE_SYSTEM, MEDICARE + "1")]),
        report("r1", effectiveDateTime="2024-03-01T14:00:00+00:00"),
        report("r2", effectiveDateTime="2024-03")))
    patients = process(home, "patients", "sync", "--practice", "harbour", "--source", path,
                       "--format", "fhir", "--json")
    assert patients.returncode == 0, patients.stderr
    assert json.loads(patients.stdout)["created"] == 1
    results = process(home, "results", "sync", "--practice", "harbour", "--source", path,
                      "--format", "fhir")
    assert results.returncode == 1, results.stderr
    assert "created 1" in results.stdout
    assert "DiagnosticReport.effective[x]: a.json:entry[2] DiagnosticReport/r2:" in results.stdout
    export = json.loads(process(home, "export", "--practice", "harbour").stdout)
    assert [(r["pms_id"], r["performed_on"]) for r in export["results"]] == [("p1", "2024-03-02")]


# --- the external corpus ---------------------------------------------------------------------

CORPUS = Path(os.environ.get("PRACTICESYNC_CORPORA")
              or Path(__file__).resolve().parents[2] / "shared" / "corpora") / "fhir"
# HL7 AU Core negative test instances: what is missing makes no list row.
CORPUS_EXCEPTIONS = {
    "au-core-test-data/Patient-italia-sofia-missing-birthDate.json": "rejected:no_birth_date",
    "au-core-test-data/Patient-italia-sofia-suppressed-birthDate.json": "rejected:no_birth_date",
    "au-core-test-data/Patient-italia-sofia-missing-name.json": "rejected:no_name",
    "au-core-test-data/Patient-italia-sofia-suppressed-name.json": "rejected:no_name",
}


def corpus_outcome(path: Path, country: str) -> str:
    """Both imports over one file, their rows through the checks the imports apply:
    "accepted:<patients>p+<reports>r", "rejected:<reasons>", or "nothing" (an Observation on
    its own: read, but not a result by itself)."""
    patients = read_patient_feed(path, country=country)
    results = read_result_feed(path, country=country)
    for _, row in patients.rows:
        assert check_row(1, row, country)[0] is not None, path
    for _, row in results.rows:
        assert check_result_row(1, row)[0] is not None, path
    reasons = sorted({code for _, code in patients.rejected + results.rejected})
    if patients.rows or results.rows:
        return f"accepted:{len(patients.rows)}p+{len(results.rows)}r" + (
            f" partial:{','.join(reasons)}" if reasons else "")
    return f"rejected:{','.join(reasons)}" if reasons else "nothing"


def expected_outcome(rel: str, path: Path) -> str:
    if rel in CORPUS_EXCEPTIONS:
        return CORPUS_EXCEPTIONS[rel]
    name = Path(rel).name
    if rel.startswith("synthea/"):
        # One patient per Synthea Bundle, and every DiagnosticReport of it (all final).
        entries = json.loads(path.read_text())["entry"]
        reports = sum(e["resource"]["resourceType"] == "DiagnosticReport" for e in entries)
        return f"accepted:1p+{reports}r"
    if name.startswith("Patient-"):
        return "accepted:1p+0r"
    if name.startswith("DiagnosticReport-"):
        return "accepted:0p+1r"
    if name.startswith("Observation-"):
        return "nothing"
    return "rejected:unsupported_type"     # Specimen, Binary


def test_the_external_corpus_end_to_end():
    if not CORPUS.is_dir():
        pytest.skip(f"the external FHIR corpus is not at {CORPUS} (set PRACTICESYNC_CORPORA "
                    f"to its parent folder); only this test needs it")
    files = sorted(CORPUS.rglob("*.json"))
    assert len(files) == 186
    outcomes = {p.relative_to(CORPUS).as_posix(): corpus_outcome(
        p, "GB" if "synthea" in p.parts else "AU") for p in files}
    wrong = {rel: (got, expected_outcome(rel, CORPUS / rel)) for rel, got in outcomes.items()
             if got != expected_outcome(rel, CORPUS / rel)}
    assert not wrong, wrong
    assert not set(CORPUS_EXCEPTIONS) - set(outcomes), "the table names files that are gone"
    counts = {word: sum(got.split(":")[0] == word for got in outcomes.values())
              for word in ("accepted", "rejected", "nothing")}
    # 85 AU Core patients, 9 AU reports, 12 Synthea bundles; 4 negative patients and
    # 5 Specimen/Binary files; 71 Observations on their own.
    assert counts == {"accepted": 106, "rejected": 9, "nothing": 71}


def test_the_au_corpus_as_one_folder_resolves_every_report_to_its_patient():
    folder = CORPUS / "au-core-test-data"
    if not folder.is_dir():
        pytest.skip(f"the external FHIR corpus is not at {CORPUS}")
    patients = read_patient_feed(folder, country="AU")
    results = read_result_feed(folder, country="AU")
    pms_ids = {row["pms_id"] for _, row in patients.rows}
    assert len(results.rows) == 9
    assert {row["pms_id"] for _, row in results.rows} <= pms_ids
    assert all(row["performed_on"].endswith("+10:00") for _, row in results.rows)
