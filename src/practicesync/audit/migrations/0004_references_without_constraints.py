"""Audit events keep their practice, patient and sync run as plain ids (docs/adr/0019).

On SQLite, AlterField rebuilds audit_auditevent, which drops the append-only triggers of
0003: they are dropped first and created again last, on both databases alike."""

from importlib import import_module

import django.db.models.deletion
from django.db import migrations, models

append_only = import_module("practicesync.audit.migrations.0003_append_only_triggers")


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0003_append_only_triggers"),
        ("patients", "0001_initial"),
        ("practices", "0002_practice_booking_url_practice_min_age_sms_and_more"),
    ]

    operations = [
        append_only.drop_triggers(),
        migrations.AlterField(
            model_name="auditevent",
            name="practice",
            field=models.ForeignKey(db_constraint=False, db_index=False,
                                    on_delete=django.db.models.deletion.PROTECT,
                                    related_name="audit_events", to="practices.practice"),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="patient",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT,
                                    related_name="+", to="patients.patient"),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="sync_run",
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT,
                                    related_name="events", to="patients.syncrun"),
        ),
        append_only.create_triggers(),
    ]
