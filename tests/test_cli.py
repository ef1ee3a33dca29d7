"""The command line as scripts use it: exit codes, JSON keys, defaults (DESIGN.md 5.1)."""

import json

import pytest

from practicesync.patients.models import Patient, SyncRun
from practicesync.practices.models import Practice
from tests.cli import process, run, run_json
from tests.factories import NHS, list_row, make_practice, write_list

SUMMARY_KEYS = {"created", "updated", "unchanged", "non_digital_created", "nhs_numbers_added",
                "phones_filled", "needs_review", "left_practice", "deceased", "errors"}


@pytest.mark.parametrize("pms, country, timezone", [
    ("docman10", "GB", "Europe/London"),
    ("bestpractice", "AU", "Australia/Sydney"),
    ("medicaldirector", "AU", "Australia/Sydney"),
])
def test_practice_create_defaults_country_and_timezone_from_the_pms(db, pms, country, timezone):
    code, data = run_json("practice", "create", "--name", "Harbour Medical", "--pms", pms)
    assert code == 0
    assert (data["slug"], data["country"], data["timezone"]) == ("harbour-medical", country,
                                                                 timezone)
    assert data["sync_permitted"] is False


def test_practice_create_takes_country_and_timezone(db):
    code, data = run_json("practice", "create", "--name", "X", "--pms", "bestpractice",
                          "--country", "GB", "--timezone", "Australia/Perth")
    assert (code, data["country"], data["timezone"]) == (0, "GB", "Australia/Perth")
    code, _ = run("practice", "create", "--name", "Y", "--pms", "docman10", "--timezone", "Mars/X")
    assert code == 2 and not Practice.objects.filter(name="Y").exists()


def test_practice_permit_records_who_and_the_dpia(db):
    make_practice(slug="harbour", permitted=False)
    code, data = run_json("practice", "permit", "--practice", "harbour", "--granted-by",
                          "Dr Lee", "--dpia-ref", "DPIA-7")
    practice = Practice.objects.get(slug="harbour")
    assert code == 0 and data["sync_permitted"] is True and data["dpia_ref"] == "DPIA-7"
    assert practice.permission_granted_by == "Dr Lee" and practice.permission_granted_at
    assert practice.audit_events.filter(action="practice.sync_permitted").exists()
    assert run("practice", "permit", "--practice", "nowhere", "--granted-by", "a",
               "--dpia-ref", "b")[0] == 2


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_sync_without_permission_exits_2_and_changes_nothing(db, tmp_path, dry_run):
    make_practice(slug="harbour", permitted=False)
    path = write_list(tmp_path / "l.csv", [list_row()])
    code, out = run("patients", "sync", "--practice", "harbour", "--source", path, *dry_run)
    assert code == 2 and "DPIA" in out
    assert not Patient.objects.exists() and not SyncRun.objects.exists()
    assert run("sync", "now", "--practice", "harbour")[0] == 2


def test_sync_json_summary_and_exit_codes(practice, tmp_path):
    good = write_list(tmp_path / "good.csv", [list_row(pms_id="P1", nhs_number=NHS[0])])
    code, data = run_json("patients", "sync", "--practice", practice.slug, "--source", good)
    assert code == 0 and SUMMARY_KEYS <= set(data) and data["created"] == 1
    assert data["errors"] == []

    bad = write_list(tmp_path / "bad.csv", [list_row(pms_id="P1", nhs_number=NHS[0]),
                                            list_row(pms_id="P2", mobile_phone="12")])
    code, data = run_json("patients", "sync", "--practice", practice.slug, "--source", bad)
    assert code == 1 and data["created"] == 1
    assert data["errors"] == [{"row": 3, "pms_id": "P2", "field": "mobile_phone",
                               "message": "phone '12' is not a valid number for GB"}]

    code, data = run_json("patients", "sync", "--practice", practice.slug, "--source",
                          tmp_path / "missing.csv")
    assert code == 1 and data["status"] == "failed" and "no such file" in data["failure"]
    assert run("patients", "sync", "--practice", "nowhere", "--source", good)[0] == 2
    assert run("patients", "sync", "--practice", practice.slug, "--source", good,
               "--allow-drop", " ")[0] == 2


def test_dry_run_prints_the_diff_and_writes_nothing(practice, tmp_path):
    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1", given_name="Ola")])
    code, out = run("patients", "sync", "--practice", practice.slug, "--source", path,
                    "--dry-run")
    assert code == 0 and "+ P1 Ola Lee (new, non-digital)" in out and "Dry run" in out
    assert not Patient.objects.exists() and not SyncRun.objects.exists()
    run("patients", "sync", "--practice", practice.slug, "--source", path)
    changed = write_list(tmp_path / "l.csv", [list_row(pms_id="P1", given_name="Ola",
                                                       email="ola@example.org")])
    code, out = run("patients", "sync", "--practice", practice.slug, "--source", changed,
                    "--dry-run")
    assert "~ P1 email: None -> ola@example.org (non_digital_follows_pms)" in out
    assert Patient.objects.get().email is None


def test_the_real_command_end_to_end(tmp_path):
    """As an integrator would run it: separate processes, a real database file."""
    home = tmp_path / "home"
    assert process(home, "migrate", "--verbosity", "0").returncode == 0
    created = process(home, "practice", "create", "--name", "Harbour", "--pms", "docman10",
                      "--json")
    assert created.returncode == 0 and json.loads(created.stdout)["slug"] == "harbour"
    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1"), list_row(pms_id="P2")])
    refused = process(home, "patients", "sync", "--practice", "harbour", "--source", path,
                      "--json")
    assert refused.returncode == 2 and "DPIA" in refused.stderr
    assert process(home, "practice", "permit", "--practice", "harbour", "--granted-by", "Dr A",
                   "--dpia-ref", "D1").returncode == 0
    synced = process(home, "patients", "sync", "--practice", "harbour", "--source", path,
                     "--json")
    assert synced.returncode == 0, synced.stderr
    summary = json.loads(synced.stdout)  # one JSON object, no progress bar mixed in
    assert summary["created"] == 2 and summary["non_digital_created"] == 2
    export = process(home, "export", "--practice", "harbour")
    data = json.loads(export.stdout)
    assert data["schema"] == "practicesync.export/1"
    assert [p["pms_id"] for p in data["patients"]] == ["P1", "P2"]
    assert data["sync_runs"][0]["counts"]["created"] == 2
    helps = process(home, "patients", "sync", "--help")
    assert helps.returncode == 0 and "--dry-run" in helps.stdout
    assert process(home, "patients", "sync", "--practice", "harbour").returncode == 2


def test_export_shape(practice, tmp_path):
    from tests.factories import make_account

    make_account(practice, account_id="A9", given_name="Zoe", family_name="O'Brien",
                 date_of_birth="1980-02-01", email="z@example.org")
    make_account(practice, account_id="A10")
    make_account(practice, account_id="A11")
    run("patients", "sync", "--practice", practice.slug, "--source",
        write_list(tmp_path / "l.csv", [list_row(pms_id="P100", given_name="Zoe",
                                                  family_name="O'Brien", date_of_birth="1980-02-01"),
                                         list_row(pms_id="P1")]))
    code, out = run("export", "--practice", practice.slug)
    data = json.loads(out)
    assert code == 0 and list(data)[:5] == ["schema", "practice", "patients", "review_items",
                                            "sync_runs"]
    assert data["practice"]["slug"] == practice.slug and data["practice"]["pms"] == "docman10"
    zoe = next(p for p in data["patients"] if p["account_id"] == "A9")
    assert {"id", "pms_id", "account_id", "digital", "status", "given_name", "family_name",
            "date_of_birth", "nhs_number", "medicare_number", "ihi", "mobile_phone",
            "home_phone", "email", "needs_review"} <= set(zoe)
    assert (zoe["pms_id"], zoe["digital"], zoe["date_of_birth"], zoe["needs_review"]) == (
        "P100", True, "1980-02-01", False)
    item = data["review_items"][0]
    assert {"id", "kind", "pms_ids", "account_ids", "status", "detail"} <= set(item)
    assert item["kind"] == "ambiguous_match" and sorted(item["account_ids"]) == ["A10", "A11"]
    flagged = [p for p in data["patients"] if p["needs_review"]]
    assert {p["account_id"] or p["pms_id"] for p in flagged} == {"A10", "A11", "P1"}
    assert {"id", "kind", "status", "dry_run", "counts", "errors"} <= set(data["sync_runs"][0])
