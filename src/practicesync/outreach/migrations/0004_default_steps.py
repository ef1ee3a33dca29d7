from django.db import migrations

from practicesync.outreach.defaults import DEFAULT_STEPS


def add_default_steps(apps, schema_editor):
    """Templates made before steps existed get the same defaults as a new practice's."""
    ResultsTemplate = apps.get_model("results", "ResultsTemplate")
    Step = apps.get_model("outreach", "Step")
    for template in ResultsTemplate.objects.filter(steps__isnull=True):
        Step.objects.bulk_create(Step(template=template, position=n, **step)
                                 for n, step in enumerate(DEFAULT_STEPS, start=1))


class Migration(migrations.Migration):
    dependencies = [("outreach", "0003_bulkmessage_message_optout_outboxentry_and_more"),
                    ("results", "0003_resultstemplate_pause_on_booking")]
    operations = [migrations.RunPython(add_default_steps, migrations.RunPython.noop)]
