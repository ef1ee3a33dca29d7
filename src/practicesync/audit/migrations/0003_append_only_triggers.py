"""The database refuses UPDATE and DELETE on audit events, whatever the client (docs/adr/0016).

Written by hand: Django has no trigger operation. On SQLite, a later migration that rebuilds
audit_auditevent (most AlterField) drops these triggers and must create them again with
drop_triggers() and create_triggers() around it (as 0004 does);
tests/test_audit_append_only.py fails until it does."""

from django.db import migrations

MESSAGE = "audit events are append-only"

POSTGRESQL = [
    f"""CREATE FUNCTION audit_auditevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- restrict_violation: an IntegrityError to Django, as on SQLite.
        RAISE EXCEPTION '{MESSAGE} (% refused)', TG_OP USING ERRCODE = 'restrict_violation';
    END $$""",
    "CREATE TRIGGER audit_auditevent_append_only BEFORE UPDATE OR DELETE ON audit_auditevent "
    "FOR EACH ROW EXECUTE FUNCTION audit_auditevent_append_only()",
]
POSTGRESQL_UNDO = ["DROP TRIGGER audit_auditevent_append_only ON audit_auditevent",
                   "DROP FUNCTION audit_auditevent_append_only()"]
SQLITE = [
    f"CREATE TRIGGER audit_auditevent_no_{op.lower()} BEFORE {op} ON audit_auditevent "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    for op in ("UPDATE", "DELETE")
]
SQLITE_UNDO = ["DROP TRIGGER audit_auditevent_no_update", "DROP TRIGGER audit_auditevent_no_delete"]


def _run(postgresql, sqlite):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        for sql in {"postgresql": postgresql, "sqlite": sqlite}.get(vendor, []):
            schema_editor.execute(sql, params=None)  # no params: "%" is plpgsql's, not psycopg's
    return run


def create_triggers() -> migrations.RunPython:
    return migrations.RunPython(_run(POSTGRESQL, SQLITE), _run(POSTGRESQL_UNDO, SQLITE_UNDO))


def drop_triggers() -> migrations.RunPython:
    return migrations.RunPython(_run(POSTGRESQL_UNDO, SQLITE_UNDO), _run(POSTGRESQL, SQLITE))


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0002_slimmer_indexes"),
    ]

    operations = [
        create_triggers(),
    ]
