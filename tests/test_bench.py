"""`make bench` (bench/): FEBRL 4 mapped to practicesync's own inputs, and the shape of
bench/results.json (DESIGN.md section 7) from a tiny run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.matching import account_row, febrl_date, list_row, load_pairs, pair_of
from practicesync.patients.accounts import check_account_row
from practicesync.patients.rows import CANONICAL_COLUMNS, check_row

REPO = Path(__file__).resolve().parent.parent
NAN = float("nan")  # pandas' missing value, as FEBRL's frames hold it


@pytest.mark.parametrize(("raw", "expected"), [
    ("19151111", "1915-11-11"),
    ("19520231", "19520231"),   # no such day: passed on for the reader to refuse
    ("19730017", "19730017"),
    (NAN, ""),
    (" 20010101 ", "2001-01-01"),
])
def test_febrl_dates_become_iso_or_stay_as_they_were(raw, expected):
    assert febrl_date(raw) == expected


def test_a_febrl_original_becomes_a_canonical_list_row_the_reader_accepts():
    record = {"given_name": "michaela", "surname": "neumann", "street_number": "8",
              "address_1": "stanley street", "address_2": "miami", "suburb": "winston hills",
              "postcode": "4223", "state": "nsw", "date_of_birth": "19151111",
              "soc_sec_id": "5304218"}
    row = list_row("rec-1070-org", record)

    assert set(row) == set(CANONICAL_COLUMNS)
    assert {k: v for k, v in row.items() if v} == {
        "pms_id": "rec-1070-org", "given_name": "michaela", "family_name": "neumann",
        "date_of_birth": "1915-11-11", "address_line1": "8 stanley street",
        "address_line2": "miami", "locality": "winston hills", "postcode": "4223"}
    checked, errors = check_row(2, row, "AU")
    assert errors == []
    assert checked.record.name_key[:2] == ("neumann", "michaela")
    assert (checked.record.medicare_number, checked.record.ihi) == (None, None)


def test_febrl_rows_missing_a_name_or_a_real_date_are_refused_as_the_reader_would():
    row = list_row("rec-9-org", {"given_name": NAN, "surname": "white", "postcode": "3159",
                                 "date_of_birth": "19620216"})
    assert row["given_name"] == "" and row["address_line1"] == ""
    assert [e.field for e in check_row(2, row, "AU")[1]] == ["given_name"]

    account = account_row("rec-9-dup-0", {"given_name": "elton", "surname": "white",
                                          "date_of_birth": "19520231"})
    assert account["date_of_birth"] == "19520231"
    record, errors = check_account_row(2, account, "AU")
    assert record is None and [e.field for e in errors] == ["date_of_birth"]


def test_the_first_febrl4_pairs_are_true_pairs_mapped_both_ways():
    a, b = load_pairs(3)
    assert list(a.index) == ["rec-0-org", "rec-1-org", "rec-2-org"]
    assert [pair_of(d) for d in b.index] == ["0", "1", "2"]
    account = account_row(b.index[0], b.iloc[0].to_dict())
    assert set(account) == {"account_id", "given_name", "family_name", "date_of_birth", "email",
                            "mobile_phone", "nhs_number"}
    assert account["account_id"] == "rec-0-dup-0"
    assert account["nhs_number"] == ""  # soc_sec_id is not an NHS number


@pytest.mark.slow
def test_a_tiny_matching_run_writes_results_in_the_design_shape(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--backend", "sqlite", "--only", "matching",
         "--scale", "0.01", "--out", str(tmp_path)],
        cwd=REPO, env={**os.environ, "PRACTICESYNC_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert {tuple(r) for r in results} == {("name", "value", "unit", "backend", "workers",
                                            "baseline", "ratio", "target", "scale")}
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {"febrl4_false_merges", "febrl4_recall", "febrl4_to_review"}
    assert all(r["backend"] == "sqlite" and r["workers"] == 1 and r["scale"] == 0.01
               and r["baseline"] is None and r["ratio"] is None for r in results)
    assert by_name["febrl4_false_merges"]["value"] == 0
    assert 0 < by_name["febrl4_recall"]["value"] <= 1

    table = (tmp_path / "results.md").read_text()
    assert "| febrl4_false_merges | 0 | links | sqlite | 1 |" in table
    assert "febrl4 reference (not a baseline)" in table
    assert table.splitlines()[-1] in done.stdout
