"""The audit log only grows (docs/adr/0016): the ORM refuses to change or delete an audit
event, and so does the database (a trigger) for raw SQL. Runs on SQLite and PostgreSQL."""

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from practicesync.audit import events
from practicesync.audit.models import AppendOnly, AuditEvent
from tests.factories import make_practice


@pytest.fixture
def event(practice):
    return events.record(practice=practice, actor="t", action="test.recorded", why="because")


def why(event) -> str:
    return AuditEvent.objects.values_list("why", flat=True).get(id=event.id)


ORM_CHANGES = {
    "save": lambda e: e.save(),
    "save-update_fields": lambda e: e.save(update_fields=["why"]),
    "delete": lambda e: e.delete(),
    "queryset-update": lambda e: AuditEvent.objects.filter(id=e.id).update(why="rewritten"),
    "queryset-delete": lambda e: AuditEvent.objects.filter(id=e.id).delete(),
    "bulk_update": lambda e: AuditEvent.objects.bulk_update([e], ["why"]),
    "related-manager-delete": lambda e: e.practice.audit_events.all().delete(),
    "update-all": lambda e: AuditEvent.objects.all().update(why="rewritten"),
}


@pytest.mark.parametrize("change", ORM_CHANGES.values(), ids=ORM_CHANGES.keys())
def test_the_orm_refuses_to_change_or_delete_an_event(event, change):
    event.why = "rewritten"
    with pytest.raises(AppendOnly):
        change(event)
    assert why(event) == "because"


RAW_SQL = {
    "update": "UPDATE audit_auditevent SET why = 'rewritten' WHERE id = %s",
    "delete": "DELETE FROM audit_auditevent WHERE id = %s",
}


@pytest.mark.parametrize("sql", RAW_SQL.values(), ids=RAW_SQL.keys())
def test_the_database_refuses_raw_sql(event, sql):
    with pytest.raises(IntegrityError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [event.id])
    assert why(event) == "because"


def test_new_events_are_still_written(event):
    AuditEvent.objects.bulk_create([AuditEvent(practice=event.practice, at=event.at, actor="t",
                                               action="test.bulk")])
    assert AuditEvent.objects.filter(action="test.bulk").exists()


def test_flush_empties_the_log_and_the_triggers_stay(transactional_db):
    """What the test runner does after each transactional test, as an operator's flush."""
    events.record(practice=make_practice(), actor="t", action="test.recorded")
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists()
    kept = events.record(practice=make_practice(), actor="t", action="test.recorded",
                         why="because")
    with pytest.raises(IntegrityError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(RAW_SQL["delete"], [kept.id])
    assert why(kept) == "because"
