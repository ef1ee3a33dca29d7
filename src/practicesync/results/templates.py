from practicesync.connectors.profiles import get_profile

from .models import ResultsTemplate


def ensure_templates(practice) -> dict[str, ResultsTemplate]:
    """The practice's Results template for each automatic action of its PMS, created paused
    ("To action – Paused") until an admin turns on auto-start."""
    for key, name in get_profile(practice.pms).result_templates.items():
        ResultsTemplate.objects.get_or_create(practice=practice, action_key=key,
                                              defaults={"name": name})
    return {t.action_key: t for t in ResultsTemplate.objects.filter(practice=practice)}
