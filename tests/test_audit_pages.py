"""The audit log page and its CSV, and tenant isolation of every Sync, Review and Audit URL."""

import csv
import datetime as dt
import io
import re

import pytest
from django.test import Client
from django.urls import reverse

from practicesync.audit import events
from practicesync.patients.models import ReviewItem, SyncRun
from practicesync.practices.actions import add_staff
from tests.factories import ACTOR, log_in, make_patient, make_practice

ADMIN, CLINICIAN, RECEPTION = ("admin@riverside.example", "gp@riverside.example",
                               "desk@riverside.example")
UTC = dt.UTC


def client_as(practice, email, role) -> Client:
    return log_in(Client(), add_staff(actor=ACTOR, practice=practice, email=email,
                                      role=role).user)


def shown(response) -> list[int]:
    """The ids of the events listed on an audit page, in order."""
    return [int(i) for i in re.findall(r'<tr data-event="(\d+)">', response.content.decode())]


@pytest.fixture
def log(practice):
    """Events of known actions, actors, patients and days (London: UTC in November)."""
    ann = make_patient(practice, pms_id="P1", given_name="Ann", family_name="Lee")
    bo = make_patient(practice, pms_id="P2", given_name="Bo", family_name="Tran")
    at = lambda day, hour=12: dt.datetime(2026, 11, day, hour, tzinfo=UTC)  # noqa: E731
    return {
        "created": events.record(practice=practice, actor="test", action="patient.created",
                                 patient=ann, at=at(1), detail={"pms_id": "P1"}),
        "updated": events.record(
            practice=practice, actor="sync:nightly", action="patient.updated", patient=ann,
            at=at(2), why="non_digital_follows_pms",
            detail={"changes": [{"field": "mobile_phone", "old": "+447912000001",
                                 "new": "+447912000009", "rule": "non_digital_follows_pms"}]}),
        "message": events.record(practice=practice, actor="desk@riverside.example",
                                 action="message.queued", patient=bo, at=at(3, 23)),
        "formula": events.record(practice=practice, actor="+evil@example.org",
                                 action="task.done", at=at(4),
                                 why='=HYPERLINK("http://x.example","click")',
                                 detail={"note": "-1"}),
    }


@pytest.fixture
def admin(practice):
    return client_as(practice, ADMIN, "admin")


def audit(client, practice, **params):
    return client.get(reverse("audit_log", kwargs={"practice": practice.slug}), params)


def test_the_log_lists_newest_first_and_reads_field_changes(practice, admin, log):
    response = audit(admin, practice)
    assert response.status_code == 200
    ids = [i for i in shown(response) if i in {e.id for e in log.values()}]
    assert ids == [log[k].id for k in ("formula", "message", "updated", "created")]
    page = response.content.decode()
    assert "+447912000001 → +447912000009 (non_digital_follows_pms)" in page
    assert "Download CSV" in page


@pytest.mark.parametrize("params, expected", [
    ({"action": "patient"}, ["updated", "created"]),
    ({"action": "patient.updated"}, ["updated"]),
    ({"action": "patient.up"}, []),
    ({"actor": "NIGHTLY"}, ["updated"]),
    ({"pms_id": "P2"}, ["message"]),
    ({"pms_id": "P1", "action": "patient.created"}, ["created"]),
    ({"date_from": "2026-11-02", "date_to": "2026-11-03"}, ["message", "updated"]),
    ({"date_to": "2026-11-01"}, ["created"]),
])
def test_filters(practice, admin, log, params, expected):
    ids = [i for i in shown(audit(admin, practice, **params))
           if i in {e.id for e in log.values()}]
    assert ids == [log[k].id for k in expected]


def test_a_bad_date_is_reported_and_not_used(practice, admin, log):
    response = audit(admin, practice, date_from="yesterday")
    assert 'id="date-from-error"' in response.content.decode()
    assert log["created"].id in shown(response)


def test_csv_is_the_filtered_log_with_formula_cells_defused(practice, admin, log):
    response = admin.get(reverse("audit_csv", kwargs={"practice": practice.slug}),
                         {"date_from": "2026-11-02", "date_to": "2026-11-05"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["action"] for r in rows] == [
        "task.done", "message.queued", "patient.updated"]
    evil = rows[0]
    assert evil["actor"] == "'+evil@example.org"
    assert evil["why"] == "'=HYPERLINK(\"http://x.example\",\"click\")"
    assert rows[1]["pms_id"] == "P2"
    assert "+447912000009" in rows[2]["detail"]


def test_roles(practice, log):
    clinician = client_as(practice, CLINICIAN, "clinician")
    assert audit(clinician, practice).status_code == 200
    assert "Download CSV" not in audit(clinician, practice).content.decode()
    csv_url = reverse("audit_csv", kwargs={"practice": practice.slug})
    assert clinician.get(csv_url).status_code == 403
    reception = client_as(practice, RECEPTION, "reception")
    assert audit(reception, practice).status_code == 403
    assert reception.get(csv_url).status_code == 403
    assert ">Audit<" not in reception.get(
        reverse("review_queue", kwargs={"practice": practice.slug})).content.decode()


def test_the_log_is_read_only(practice, admin, log):
    url = reverse("audit_log", kwargs={"practice": practice.slug})
    assert admin.post(url, {"id": log["created"].id}).status_code == 405
    assert admin.delete(url).status_code == 405
    log["created"].refresh_from_db()


def test_another_practices_member_gets_404_on_every_page(practice, tmp_path):
    run = SyncRun.objects.create(practice=practice, source="x", triggered_by="test",
                                 started_at=dt.datetime(2026, 11, 1, tzinfo=UTC))
    item = ReviewItem.objects.create(practice=practice, kind="possible_match", detail="d",
                                     key="k", sync_run=run)
    other = make_practice(slug="elsewhere")
    outsider = client_as(other, "admin@elsewhere.example", "admin")
    slug = {"practice": practice.slug}
    gets = [reverse("sync_runs", kwargs=slug), reverse("sync_run", kwargs={**slug,
                                                                          "run_id": run.id}),
            reverse("review_queue", kwargs=slug),
            reverse("review_item", kwargs={**slug, "item_id": item.id}),
            reverse("audit_log", kwargs=slug), reverse("audit_csv", kwargs=slug)]
    posts = [reverse("sync_now", kwargs=slug)] + [
        reverse("review_resolve", kwargs={**slug, "item_id": item.id, "how": how})
        for how in ("linked", "not_same", "ignored")]
    for url in gets:
        assert outsider.get(url).status_code == 404, url
    for url in posts:
        assert outsider.post(url, {"reason": "x", "pair": "1:2"}).status_code == 404, url
    # Their own practice's pages with this practice's ids: not found either.
    theirs = {"practice": other.slug}
    assert outsider.get(reverse("sync_run", kwargs={**theirs, "run_id": run.id})
                        ).status_code == 404
    assert outsider.get(reverse("review_item", kwargs={**theirs, "item_id": item.id})
                        ).status_code == 404
    assert outsider.post(reverse("review_resolve", kwargs={**theirs, "item_id": item.id,
                                                           "how": "ignored"}),
                         {"reason": "x"}).status_code == 404
    item.refresh_from_db()
    assert item.status == "open"
