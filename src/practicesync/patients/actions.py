"""Staff decisions about patient records: keyword-only, one transaction, audited."""

from django.db import transaction

from practicesync.audit import events
from practicesync.practices.models import Practice

from .models import NotSamePerson, Patient, ReviewItem


class NotFound(LookupError):
    pass


@transaction.atomic
def record_not_same_person(*, actor: str, practice: Practice, pms_id: str,
                           patient_id: int) -> NotSamePerson:
    """The list row `pms_id` and patient `patient_id` are different people: the sync never
    links or proposes them again, and open review items about the pair are closed."""
    patient = Patient.objects.filter(practice=practice, id=patient_id).first()
    if patient is None:
        raise NotFound(f"no patient #{patient_id} at {practice.slug}")
    pair, _ = NotSamePerson.objects.get_or_create(practice=practice, pms_id=pms_id,
                                                  patient=patient,
                                                  defaults={"recorded_by": actor})
    closed = [item.id for item in patient.review_items.filter(status=ReviewItem.Status.OPEN)
              if pms_id in item.pms_ids]
    ReviewItem.objects.filter(id__in=closed).update(status=ReviewItem.Status.DISMISSED)
    events.record(practice=practice, actor=actor, action="patient.not_same_person",
                  patient=patient, why="staff decision",
                  detail={"pms_id": pms_id, "review_items_closed": closed})
    return pair
