"""Retention (docs/adr/0017): what is purged when, what never is, and the daily run."""

import datetime as dt
import json

import pytest
from django_tasks_db.models import DBTaskResult

from practicesync.audit.models import AuditEvent
from practicesync.connectors.hl7v2.models import InboundMessage
from practicesync.outreach.models import Message, OutboxEntry
from practicesync.patients.models import ReviewItem
from practicesync.practices import actions
from practicesync.practices.export import build_export
from practicesync.practices.models import Practice
from practicesync.practices.retention import PURGED, purge_plan
from practicesync.practices.tasks import enqueue_due_purges
from tests.cli import run, run_json
from tests.factories import make_patient, make_practice

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # in the past: purges refuse a time to come
PLAN = purge_plan(now=NOW, raw_days=90, bodies_days=365)


def days_ago(n: float) -> dt.datetime:
    return NOW - dt.timedelta(days=n)


@pytest.mark.parametrize("status, age_days, due", [
    ("sent", 366, True),
    ("delivered", 366, True),
    ("read", 400, True),
    ("failed", 366, True),
    ("skipped", 366, True),
    ("sent", 364, False),            # inside the period
    ("delivered", 365, False),       # exactly the period: not yet over
    # In flight, however old: a queued one still goes, a sending or unknown one is checked
    # against the provider by staff.
    ("queued", 1000, False),
    ("sending", 1000, False),
    ("unknown", 1000, False),
])
def test_message_texts_are_due_after_the_bodies_period_unless_in_flight(status, age_days, due):
    assert PLAN.message_due(status, days_ago(age_days)) is due


@pytest.mark.parametrize("state, age_days, due", [
    ("processed", 91, True),
    ("processed", 89, False),
    ("accepted", 1000, False),       # not applied yet
    ("processing", 1000, False),     # a worker holds it
    ("dead", 91, False),             # unresolved: kept for the fix and the re-run...
    ("dead", 179, False),
    ("dead", 181, True),             # ...but not forever: twice the raw period
])
def test_raw_inbound_messages_are_due_after_the_raw_period(state, age_days, due):
    assert PLAN.inbound_due(state, days_ago(age_days)) is due


def test_the_plan_follows_the_practices_periods():
    plan = purge_plan(now=NOW, raw_days=7, bodies_days=30)
    assert (plan.raw_before, plan.dead_before, plan.bodies_before) == (
        days_ago(7), days_ago(14), days_ago(30))


# --- the action ------------------------------------------------------------------------------

def message(practice, patient, status, age_days, n):
    found = Message.objects.create(
        practice=practice, patient=patient, kind=Message.Kind.ADHOC, channel="sms",
        to="+447700900123", body=f"Body text {n}", subject="", status=status,
        idempotency_key=f"adhoc:{n}", not_before=days_ago(age_days), created_by="test")
    Message.objects.filter(id=found.id).update(created_at=days_ago(age_days))
    return found


def inbound(practice, state, age_days, n, **fields):
    return InboundMessage.objects.create(
        practice=practice, raw=f"MSH|^~\\&|PMS|SURG|||||ADT^A08|{n}|P|2.4\r".encode(),
        control_id=str(n), message_type="ADT^A08", state=state, received_at=days_ago(age_days),
        **fields)


@pytest.fixture
def aged(db):
    """A practice with old and recent messages, outbox copies, inbox rows and dead letters;
    another practice with the same, all old."""
    practice, other = make_practice(slug="aged"), make_practice(slug="other")
    rows = {}
    for where in (practice, other):
        patient = make_patient(where, pms_id="P1")
        rows[where.slug] = {
            "old_sent": message(where, patient, "delivered", 400, f"{where.slug}1"),
            "old_queued": message(where, patient, "queued", 400, f"{where.slug}2"),
            "old_unknown": message(where, patient, "unknown", 400, f"{where.slug}3"),
            "new_sent": message(where, patient, "sent", 10, f"{where.slug}4"),
            "processed": inbound(where, "processed", 100, f"{where.slug}1"),
            "recent": inbound(where, "processed", 10, f"{where.slug}2"),
            "accepted": inbound(where, "accepted", 100, f"{where.slug}3"),
            "dead": inbound(where, "dead", 100, f"{where.slug}4", incident=1),
            "old_dead": inbound(where, "dead", 200, f"{where.slug}5", incident=1),
        }
        outbox = OutboxEntry.objects.create(practice=where, idempotency_key=f"adhoc:{where.slug}1",
                                            channel="sms", to="+447700900123", body="Body text")
        OutboxEntry.objects.filter(id=outbox.id).update(created_at=days_ago(400))
        rows[where.slug]["outbox"] = outbox
    return practice, other, rows


def test_purge_removes_what_is_due_and_keeps_the_rest(aged):
    practice, other, rows = aged
    mine = rows["aged"]
    counts = actions.purge_expired(practice=practice, actor="test", now=NOW)
    assert counts == {"message_texts": 1, "outbox_texts": 1, "inbound_messages": 1,
                      "dead_letters": 1}

    purged = Message.objects.get(id=mine["old_sent"].id)
    # The row stays for the contact ledger: status, channel, address and times.
    assert (purged.body, purged.subject, purged.status, purged.channel, purged.to) == (
        PURGED, "", "delivered", "sms", "+447700900123")
    assert purged.created_at == days_ago(400)
    for kept in ("old_queued", "old_unknown", "new_sent"):
        assert Message.objects.get(id=mine[kept].id).body == mine[kept].body, kept
    assert OutboxEntry.objects.get(id=mine["outbox"].id).body == PURGED
    assert set(InboundMessage.objects.filter(practice=practice).values_list("id", flat=True)) == {
        mine[k].id for k in ("recent", "accepted", "dead")}

    # Nothing of the other practice was touched.
    assert Message.objects.get(id=rows["other"]["old_sent"].id).body == rows["other"][
        "old_sent"].body
    assert InboundMessage.objects.filter(practice=other).count() == 5
    assert OutboxEntry.objects.get(id=rows["other"]["outbox"].id).body == "Body text"


def test_purge_is_repeatable_and_counts_only_what_it_did(aged):
    practice, _, _ = aged
    actions.purge_expired(practice=practice, actor="test", now=NOW)
    assert actions.purge_expired(practice=practice, actor="test", now=NOW) == dict.fromkeys(
        ("message_texts", "outbox_texts", "inbound_messages", "dead_letters"), 0)


def test_purge_never_changes_audit_events_and_records_one_that_counts(aged):
    practice, _, rows = aged
    before = list(AuditEvent.objects.order_by("id").values())
    actions.purge_expired(practice=practice, actor="system:retention", now=NOW)
    after = list(AuditEvent.objects.order_by("id").values())
    assert after[:len(before)] == before  # none changed, none deleted
    [event] = after[len(before):]
    assert (event["practice_id"], event["action"], event["actor"]) == (
        practice.id, "practice.retention_purged", "system:retention")
    assert event["detail"]["counts"] == {"message_texts": 1, "outbox_texts": 1,
                                         "inbound_messages": 1, "dead_letters": 1}
    # Counts, never content.
    text = json.dumps(event["detail"])
    assert "Body text" not in text and "MSH" not in text


def test_purged_messages_are_still_exported_for_the_contact_ledger(aged):
    practice, _, rows = aged
    actions.purge_expired(practice=practice, actor="test", now=NOW)
    exported = {m["id"]: m for m in dict(build_export(practice))["messages"]}
    old = exported[rows["aged"]["old_sent"].id]
    assert (old["body"], old["status"], old["to"]) == (PURGED, "delivered", "+447700900123")


def test_purging_an_incidents_dead_letters_closes_its_review_item(db):
    practice = make_practice()
    inbound(practice, "dead", 200, "1", incident=1)
    item = ReviewItem.objects.create(practice=practice, kind="hl7_dead_letter",
                                     key="hl7_dead_letter:1", detail="HL7 messages could not be used")
    actions.purge_expired(practice=practice, actor="test", now=NOW)
    item.refresh_from_db()
    assert item.status == ReviewItem.Status.RESOLVED


# --- the daily run ---------------------------------------------------------------------------

def test_a_new_practice_is_first_purged_at_the_next_purge_time(db):
    practice = make_practice(pms="bestpractice")
    local = practice.next_purge_due.astimezone(practice.tz)
    assert local.time() == dt.time(3, 30) and practice.next_purge_due > dt.datetime.now(UTC)


def test_two_workers_queue_one_purge_a_day(db):
    practice = make_practice()  # docman10: Europe/London
    Practice.objects.filter(id=practice.id).update(next_purge_due=None)  # as after migrating
    # Two workers' passes at the same moment: one claims the day.
    assert enqueue_due_purges(NOW) == [practice.id]
    assert enqueue_due_purges(NOW) == []
    practice.refresh_from_db()
    assert practice.next_purge_due == dt.datetime(2026, 11, 3, 3, 30, tzinfo=UTC)  # GMT in November
    assert enqueue_due_purges(NOW + dt.timedelta(hours=12)) == []
    assert enqueue_due_purges(practice.next_purge_due) == [practice.id]
    assert enqueue_due_purges(practice.next_purge_due) == []
    assert DBTaskResult.objects.filter(
        task_path="practicesync.practices.tasks.retention_purge").count() == 2


def test_the_worker_runs_the_daily_purge_once(transactional_db):
    practice = make_practice()
    patient = make_patient(practice, pms_id="P1")
    old = message(practice, patient, "sent", 400, "w1")
    # Message times are real here (the worker purges as of now).
    Message.objects.filter(id=old.id).update(created_at=dt.datetime.now(UTC) - dt.timedelta(400))
    Practice.objects.filter(id=practice.id).update(next_purge_due=dt.datetime(2020, 1, 1, tzinfo=UTC))
    assert run("worker", "--once")[0] == 0
    assert run("worker", "--once")[0] == 0
    [event] = AuditEvent.objects.filter(practice=practice, action="practice.retention_purged")
    assert event.actor == "system:retention" and event.detail["counts"]["message_texts"] == 1
    assert Message.objects.get(id=old.id).body == PURGED


# --- the CLI ---------------------------------------------------------------------------------

def test_retention_set_and_purge_from_the_cli(aged):
    practice, _, rows = aged
    code, data = run_json("retention", "set", "--practice", practice.slug, "--raw-days", "30",
                          "--bodies-days", "500")
    assert code == 0 and data == {"slug": "aged", "raw_days": 30, "bodies_days": 500}
    change = AuditEvent.objects.get(practice=practice, action="practice.retention_changed")
    assert change.detail == {"before": {"retain_raw_messages_days": 90,
                                        "retain_message_bodies_days": 365},
                             "after": {"retain_raw_messages_days": 30,
                                       "retain_message_bodies_days": 500}}
    code, data = run_json("retention", "purge", "--practice", practice.slug, "--now",
                          NOW.isoformat())
    # Texts are now kept 500 days (none due); raw messages 30 (the 100-day dead letter is due).
    assert code == 0 and data == {"slug": "aged", "message_texts": 0, "outbox_texts": 0,
                                  "inbound_messages": 1, "dead_letters": 2}
    assert Message.objects.get(id=rows["aged"]["old_sent"].id).body != PURGED


@pytest.mark.parametrize("argv", [
    ("retention", "set", "--practice", "aged", "--raw-days", "3"),
    ("retention", "set", "--practice", "aged"),
    ("retention", "set", "--practice", "nowhere", "--raw-days", "30"),
    ("retention", "purge", "--practice", "aged", "--now", "yesterday"),
    # A time to come would purge what the retention period still keeps.
    ("retention", "purge", "--practice", "aged", "--now", "2999-01-01T00:00:00+00:00"),
    ("retention", "purge", "--practice", "nowhere"),
])
def test_retention_usage_errors_exit_2_and_change_nothing(aged, argv):
    practice, _, _ = aged
    assert run(*argv)[0] == 2
    practice.refresh_from_db()
    assert practice.retain_raw_messages_days == 90
    assert not AuditEvent.objects.filter(action__startswith="practice.retention").exists()
