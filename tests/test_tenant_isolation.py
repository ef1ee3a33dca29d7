"""One practice never sees or changes another's patients: web pages, export and sync.

Practices A ("alpha") and B ("bravo") each hold a patient with PMS id "P1".
"""

import io
import json
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from practicesync.patients.models import Patient
from practicesync.practices.actions import add_staff
from tests.factories import (
    ACTOR,
    NHS,
    list_row,
    log_in,
    make_account,
    make_patient,
    make_practice,
    write_list,
)

EXPORT_KEYS = {"schema", "practice", "patients", "review_items", "sync_runs"}
PRACTICE_KEYS = {"slug", "name", "pms", "country"}
PATIENT_KEYS = {"id", "pms_id", "account_id", "digital", "status", "given_name", "family_name",
                "date_of_birth", "nhs_number", "medicare_number", "ihi", "mobile_phone",
                "home_phone", "email", "needs_review"}
REVIEW_KEYS = {"id", "kind", "pms_ids", "account_ids", "status", "detail"}
RUN_KEYS = {"id", "kind", "status", "dry_run", "counts", "errors"}
SUMMARY_KEYS = {"created", "updated", "unchanged", "non_digital_created", "nhs_numbers_added",
                "phones_filled", "needs_review", "left_practice", "deceased", "errors"}

B_NAMES = ("Brown", "Bobby", "Clark", "Carol")


@pytest.fixture
def alpha(db):
    return make_practice(slug="alpha")


@pytest.fixture
def bravo(db):
    return make_practice(slug="bravo")


@pytest.fixture
def a_p1(alpha):
    return make_patient(alpha, pms_id="P1", given_name="Alice", family_name="Adams",
                        mobile_phone="+447911123101")


@pytest.fixture
def b_p1(bravo):
    return make_patient(bravo, pms_id="P1", given_name="Bobby", family_name="Brown",
                        mobile_phone="+447911123202",
                        email="bobby@example.org", address_line1="2 Bravo Road",
                        nhs_number=NHS[0], list_fingerprint="b-fp")


@pytest.fixture
def b_account(bravo):
    """A digital account at B whose NHS number, name and DOB a row of A's list will carry."""
    return make_account(bravo, account_id="A1", given_name="Carol", family_name="Clark",
                        nhs_number=NHS[1], mobile_phone="+447911123303")


@pytest.fixture
def alpha_client(alpha, a_p1, b_p1, b_account):
    user = add_staff(actor=ACTOR, practice=alpha, email="staff@alpha.example",
                     role="admin").user
    client = Client()
    log_in(client, user)
    return client


def snapshot(practice):
    return {p.pk: {f.name: getattr(p, f.name) for f in Patient._meta.concrete_fields
                   if f.name != "updated_at"}
            for p in Patient.objects.filter(practice=practice)}


def export(slug: str) -> dict:
    out = io.StringIO()
    call_command("export", "--practice", slug, stdout=out)
    return json.loads(out.getvalue())


# --- web -------------------------------------------------------------------------------------

def test_member_of_a_gets_404_for_b_patients_page(alpha_client, bravo):
    response = alpha_client.get(f"/p/{bravo.slug}/patients/")
    assert response.status_code == 404
    assert "Brown" not in response.content.decode()


def test_member_of_a_gets_404_for_b_deep_link(alpha_client, alpha, bravo):
    response = alpha_client.get(f"/p/{bravo.slug}/patients/P1")
    assert response.status_code == 404
    assert "Brown" not in response.content.decode()
    # The same pms_id in A's own practice is A's patient.
    own = alpha_client.get(f"/p/{alpha.slug}/patients/P1").content.decode()
    assert "Alice ADAMS" in own and "+447911123101" in own
    assert not any(name in own for name in B_NAMES) and "+447911123202" not in own


def test_a_patients_page_never_shows_b_patients(alpha_client, alpha):
    url = f"/p/{alpha.slug}/patients/"
    html = alpha_client.get(url).content.decode()
    assert "ADAMS, Alice" in html
    assert "1 patients, 0 digital." in html
    for name in B_NAMES:
        assert name not in html and name.upper() not in html
    for query in ({"q": "Brown"}, {"q": "Carol"}, {"q": NHS[0]}, {"q": NHS[1]},
                  {"digital": "yes"}, {"q": "P1"}):
        html = alpha_client.get(url, query).content.decode()
        assert "BROWN" not in html and "CLARK" not in html, query
    assert "No patients match." in alpha_client.get(url, {"q": "Brown"}).content.decode()


def test_unknown_practice_and_non_member_look_the_same(alpha_client):
    assert alpha_client.get("/p/no-such-practice/patients/").status_code == 404


# --- export (in process) ---------------------------------------------------------------------

def test_export_of_a_contains_none_of_b(alpha, bravo, a_p1, b_p1, b_account):
    data = export(alpha.slug)
    assert set(data) >= EXPORT_KEYS
    assert data["schema"] == "practicesync.export/1"
    assert set(data["practice"]) >= PRACTICE_KEYS
    assert data["practice"]["slug"] == "alpha"
    assert [p["pms_id"] for p in data["patients"]] == ["P1"]
    patient = data["patients"][0]
    assert set(patient) >= PATIENT_KEYS
    assert patient["id"] == a_p1.id and patient["family_name"] == "Adams"
    assert patient["date_of_birth"] == "1980-01-02"
    assert patient["digital"] is False and patient["needs_review"] is False
    ids = {p["id"] for p in data["patients"]}
    assert b_p1.id not in ids and b_account.id not in ids
    text = json.dumps(data)
    for leaked in (*B_NAMES, NHS[0], NHS[1], "+447911123202", "bobby@example.org"):
        assert leaked not in text


# --- patients sync (in process) --------------------------------------------------------------

def test_sync_of_a_never_changes_b(tmp_path, alpha, bravo, a_p1, b_p1, b_account):
    before = snapshot(bravo)
    source = write_list(tmp_path / "alpha.csv", [
        # Same pms_id as B's patient: must update A's P1 only.
        list_row(pms_id="P1", given_name="Alice", family_name="Adams",
                 mobile_phone="07911 123999", email="alice@example.org",
                 address_line1="1 Alpha Street"),
        # B's digital account's NHS number, name and DOB: must not link across practices.
        list_row(pms_id="P7", given_name="Carol", family_name="Clark", nhs_number=NHS[1],
                 mobile_phone="07911 123777"),
        # B's P1's NHS number with B's name and DOB: a new patient for A, nothing for B.
        list_row(pms_id="P8", given_name="Bobby", family_name="Brown", nhs_number=NHS[0],
                 mobile_phone="07911 123888"),
    ])
    out = io.StringIO()
    call_command("patients", "sync", "--practice", alpha.slug, "--source", str(source),
                 "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["created"] == 2 and summary["updated"] == 1
    assert summary["needs_review"] == 0 and summary["errors"] == []

    assert snapshot(bravo) == before
    b_p1.refresh_from_db()
    assert (b_p1.given_name, b_p1.family_name, b_p1.mobile_phone, b_p1.email,
            b_p1.address_line1, b_p1.nhs_number) == (
        "Bobby", "Brown", "+447911123202", "bobby@example.org", "2 Bravo Road", NHS[0])
    b_account.refresh_from_db()
    assert b_account.pms_id is None and b_account.mobile_phone == "+447911123303"

    a_p1.refresh_from_db()
    assert a_p1.mobile_phone == "+447911123999" and a_p1.email == "alice@example.org"
    alpha_patients = Patient.objects.filter(practice=alpha)
    assert sorted(alpha_patients.values_list("pms_id", flat=True)) == ["P1", "P7", "P8"]
    assert not alpha_patients.filter(digital=True).exists()
    assert bravo.sync_runs.count() == 0 and alpha.sync_runs.count() == 1
    assert not bravo.review_items.exists()


def test_a_list_that_drops_patients_never_marks_b_patients_left(tmp_path, alpha, bravo, a_p1,
                                                                b_p1):
    make_patient(alpha, pms_id="P2", given_name="Arthur", family_name="Ash")
    make_patient(bravo, pms_id="P2", given_name="Betty", family_name="Black")
    before = snapshot(bravo)
    source = write_list(tmp_path / "alpha.csv",
                        [list_row(pms_id="P1", given_name="Alice", family_name="Adams")])
    out = io.StringIO()
    call_command("patients", "sync", "--practice", alpha.slug, "--source", str(source),
                 "--allow-drop", "test: practice list split", "--json", stdout=out)
    assert json.loads(out.getvalue())["left_practice"] == 1
    assert Patient.objects.get(practice=alpha, pms_id="P2").status == "left"
    assert snapshot(bravo) == before
    assert set(Patient.objects.filter(practice=bravo).values_list("status", flat=True)) == {
        "active"}


# --- the CLI as a separate process on its own SQLite file ------------------------------------

def cli(home, *args, stdin=None, check=True):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PRACTICESYNC_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "practicesync", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory):
    """A migrated practicesync home with practices alpha and bravo, each with P1 and P2."""
    home = tmp_path_factory.mktemp("home")
    cli(home, "migrate", "--no-input", "-v", "0")
    for name, rows in [
        ("Alpha", [list_row(pms_id="P1", given_name="Alice", family_name="Adams",
                            mobile_phone="07911 123101"),
                   list_row(pms_id="P2", given_name="Arthur", family_name="Ash")]),
        ("Bravo", [list_row(pms_id="P1", given_name="Bobby", family_name="Brown",
                            mobile_phone="07911 123202", email="bobby@example.org",
                            address_line1="2 Bravo Road"),
                   list_row(pms_id="P2", given_name="Betty", family_name="Black")]),
    ]:
        created = json.loads(cli(home, "practice", "create", "--name", name, "--pms",
                                 "docman10", "--json").stdout)
        assert created["slug"] == name.lower() and created["country"] == "GB"
        cli(home, "practice", "permit", "--practice", created["slug"], "--granted-by", "Dr T",
            "--dpia-ref", "DPIA-9")
        source = write_list(home / f"{created['slug']}.csv", rows)
        summary = json.loads(cli(home, "patients", "sync", "--practice", created["slug"],
                                 "--source", str(source), "--json").stdout)
        assert summary["created"] == 2 and summary["non_digital_created"] == 2
    return home


def cli_export(home, slug):
    proc = cli(home, "export", "--practice", slug)
    return proc.stdout, json.loads(proc.stdout)


@pytest.mark.slow
def test_cli_export_of_a_contains_none_of_b(cli_home):
    raw, data = cli_export(cli_home, "alpha")
    assert set(data) >= EXPORT_KEYS and data["schema"] == "practicesync.export/1"
    assert data["practice"]["slug"] == "alpha" and set(data["practice"]) >= PRACTICE_KEYS
    assert {(p["pms_id"], p["family_name"]) for p in data["patients"]} == {
        ("P1", "Adams"), ("P2", "Ash")}
    assert all(set(p) >= PATIENT_KEYS for p in data["patients"])
    assert len(data["sync_runs"]) == 1 and set(data["sync_runs"][0]) >= RUN_KEYS
    assert all(set(r) >= REVIEW_KEYS for r in data["review_items"])
    for leaked in ("Brown", "Bobby", "Black", "Betty", "+447911123202", "bobby@example.org",
                   "Bravo"):
        assert leaked not in raw


@pytest.mark.slow
def test_cli_sync_of_a_leaves_b_unchanged(cli_home):
    _, before = cli_export(cli_home, "bravo")
    source = write_list(cli_home / "alpha-2.csv", [
        list_row(pms_id="P1", given_name="Alice", family_name="Adams",
                 mobile_phone="07911 123999", email="alice@example.org"),
        list_row(pms_id="P3", given_name="Bobby", family_name="Brown",
                 date_of_birth="1980-01-02"),
    ])
    summary = json.loads(cli(cli_home, "patients", "sync", "--practice", "alpha", "--source",
                             str(source), "--allow-drop", "test", "--json").stdout)
    # Leaving the practice is an update too: P1's new contact details and P2 leaving.
    assert summary["updated"] == 2 and summary["created"] == 1
    assert summary["left_practice"] == 1

    _, after = cli_export(cli_home, "bravo")
    assert after["patients"] == before["patients"]
    assert after["sync_runs"] == before["sync_runs"]
    b_p1 = next(p for p in after["patients"] if p["pms_id"] == "P1")
    assert (b_p1["given_name"], b_p1["family_name"], b_p1["mobile_phone"], b_p1["email"],
            b_p1["status"]) == ("Bobby", "Brown", "+447911123202", "bobby@example.org", "active")

    _, alpha = cli_export(cli_home, "alpha")
    a = {p["pms_id"]: p for p in alpha["patients"]}
    assert a["P1"]["mobile_phone"] == "+447911123999" and a["P2"]["status"] == "left"
    assert a["P3"]["family_name"] == "Brown" and a["P3"]["id"] != b_p1["id"]


@pytest.mark.slow
def test_cli_export_of_an_unknown_practice_is_a_usage_error(cli_home):
    proc = cli(cli_home, "export", "--practice", "charlie", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no practice with slug 'charlie'" in proc.stderr


@pytest.mark.django_db
def test_export_of_an_unknown_practice_prints_no_partial_json():
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("export", "--practice", "charlie", stdout=out)
    assert out.getvalue() == ""
