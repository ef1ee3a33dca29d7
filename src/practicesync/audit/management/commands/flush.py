"""Django's flush (empty every table), made to work on SQLite beside the audit log's triggers.

On PostgreSQL flush is a TRUNCATE, which row triggers do not see. On SQLite it is a DELETE
per table, which the append-only trigger refuses, so the audit log's triggers are lifted for
the flush and put back in the same transaction. The test runner flushes after every
transactional test; an ORM or SQL delete of audit events is still refused."""

from django.core.management.commands import flush
from django.db import connections, transaction

from practicesync.audit.models import AuditEvent


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options["database"]]
        if connection.vendor != "sqlite":
            return super().handle(**options)
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                           "AND tbl_name = %s", [AuditEvent._meta.db_table])
            triggers = cursor.fetchall()
            for name, _ in triggers:
                cursor.execute(f"DROP TRIGGER {connection.ops.quote_name(name)}")
            super().handle(**options)
            for _, sql in triggers:
                cursor.execute(sql)
