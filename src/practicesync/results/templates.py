from practicesync.connectors.profiles import get_profile
from practicesync.outreach.defaults import DEFAULT_STEPS
from practicesync.outreach.models import Step

from .models import ResultsTemplate


def ensure_templates(practice) -> dict[str, ResultsTemplate]:
    """The practice's Results template for each automatic action of its PMS, created paused
    ("To action – Paused") until an admin turns on auto-start, with the default steps."""
    for key, name in get_profile(practice.pms).result_templates.items():
        template, created = ResultsTemplate.objects.get_or_create(
            practice=practice, action_key=key, defaults={"name": name})
        if created:
            Step.objects.bulk_create(Step(template=template, position=n, **step)
                                     for n, step in enumerate(DEFAULT_STEPS, start=1))
    return {t.action_key: t for t in ResultsTemplate.objects.filter(practice=practice)}
