"""PHI never reaches logs (hazard H-017): everything a demo run, the worker and an outreach
tick print — stdout and stderr — is searched for the synthetic patients' names, identifiers
and contact details."""

import json
import re
import sqlite3

import pytest

from tests.cli import process


def patients_of(home) -> list[tuple]:
    with sqlite3.connect(home / "practicesync.sqlite3") as db:
        return db.execute("SELECT given_name, family_name, nhs_number, medicare_number, ihi, "
                          "mobile_phone, email FROM patients_patient").fetchall()


@pytest.mark.slow
def test_a_demo_run_worker_and_tick_log_no_patient_data(tmp_path):
    runs = [process(tmp_path, "demo", "--no-serve", "--patients", "300"),
            process(tmp_path, "worker", "--once")]
    notes = [line for line in runs[0].stdout.splitlines() if "outreach tick --now" in line]
    when = re.search(r"--now (\S+)", notes[0]).group(1)
    runs.append(process(tmp_path, "outreach", "tick", "--now", when, "--json"))
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    assert json.loads(runs[-1].stdout)["sent"] > 0  # the tick really sent messages
    printed = "\n".join(r.stdout + r.stderr for r in runs)
    patients = patients_of(tmp_path)
    assert len(patients) > 1000
    leaks = {value for row in patients for value in row[2:] if value and value in printed}
    leaks |= {f"{given} {family}" for given, family, *_ in patients
              if f"{given} {family}" in printed or f"{family}, {given}" in printed}
    assert not leaks, sorted(leaks)[:10]
