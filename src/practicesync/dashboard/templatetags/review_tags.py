"""The nav's count of open review items: one indexed COUNT per page."""

from django import template

from practicesync.patients.models import ReviewItem

register = template.Library()


@register.simple_tag
def open_reviews(practice) -> int:
    return ReviewItem.objects.filter(practice=practice, status=ReviewItem.Status.OPEN).count()
