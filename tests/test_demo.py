"""`practicesync demo --no-serve` in a fresh PRACTICESYNC_HOME, as a new user runs it."""

import json
import sqlite3
import time
from collections import Counter

import pytest

from tests.cli import process

pytestmark = pytest.mark.slow

STAFF = "manager@riverside.example"
BP_CHECKLIST = {"urgent_appointment", "reception_to_advise", "nurse_to_advise",
                "doctor_to_advise", "send_routine_reminder"}
MD_CHECKLIST = {"return_urgently", "discuss_with_comment", "custom"}


def export(home, slug) -> dict:
    proc = process(home, "export", "--practice", slug)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def action_keys(home, slug) -> dict[int, str]:
    """group id -> the group's action key (not in the export)."""
    with sqlite3.connect(f"file:{home / 'practicesync.sqlite3'}?mode=ro", uri=True) as db:
        return dict(db.execute(
            "select g.id, g.action_key from results_resultgroup g join practices_practice p "
            "on p.id = g.practice_id where p.slug = ?", (slug,)))


def test_demo_loads_three_practices_with_results_of_every_kind(tmp_path):
    started = time.monotonic()
    first = process(tmp_path, "demo", "--no-serve")
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert took < 30, f"demo took {took:.1f}s"
    assert f"as {STAFF} / " in first.stdout
    for slug in ("riverside", "harbour", "banksia"):
        assert f"Demo practice '{slug}'" in first.stdout

    riverside = export(tmp_path, "riverside")
    assert riverside["practice"]["pms"] == "docman10" and len(riverside["patients"]) > 4000
    assert riverside["results"] == []

    for slug, pms, paused_or_active, checklist_keys in (
            ("harbour", "bestpractice", "to_action_paused", BP_CHECKLIST),
            ("banksia", "medicaldirector", "active", MD_CHECKLIST)):
        data = export(tmp_path, slug)
        assert data["practice"] | {"pms": pms, "country": "AU"} == data["practice"]
        assert 200 <= len(data["patients"]) <= 500
        assert any(p["digital"] for p in data["patients"])
        groups, results = data["result_groups"], data["results"]
        assert {g["disposition"] for g in groups} == {"template", "checklist", "ignored"}
        states = Counter(g["sequence_state"] for g in groups)
        assert states[paused_or_active] >= 10
        assert states["cancelled"] and states["completed"]
        assert any(g["state"] == "done" for g in groups)
        keys = action_keys(tmp_path, slug)
        on_checklist = {keys[g["id"]] for g in groups if g["disposition"] == "checklist"}
        assert checklist_keys <= on_checklist, checklist_keys - on_checklist
        reasons = Counter((r["reason"] or "").split(" ")[0] for r in results
                          if not r["eligible"])
        assert reasons["not"] >= 4                   # not actioned by a doctor yet
        assert sum(reasons.values()) - reasons["not"] >= 3  # filed where results don't count
        per_group = Counter(r["group_id"] for r in results if r["group_id"])
        assert sum(1 for n in per_group.values() if n > 1) >= 10  # several tests, one day
        per_patient = Counter(g["pms_id"] for g in groups)
        assert sum(1 for n in per_patient.values() if n > 1) >= 3  # same patient, other days
        assert any(r["notified"] for r in results)

    with sqlite3.connect(f"file:{tmp_path / 'practicesync.sqlite3'}?mode=ro", uri=True) as db:
        member_of = {slug for (slug,) in db.execute(
            "select p.slug from practices_membership m join practices_practice p "
            "on p.id = m.practice_id join auth_user u on u.id = m.user_id "
            "where u.username = ?", (STAFF,))}
    assert member_of == {"riverside", "harbour", "banksia"}

    # Re-running changes nothing (the staff password aside).
    before = {slug: export(tmp_path, slug) for slug in ("harbour", "banksia")}
    again = process(tmp_path, "demo", "--no-serve")
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 updated" in again.stdout
    assert "results 0 created, 0 updated" in again.stdout
    for slug, data in before.items():
        after = export(tmp_path, slug)
        for key in ("patients", "results", "result_groups"):
            assert after[key] == data[key], f"{slug} {key} changed on re-run"
