from django import template
from django.urls import NoReverseMatch, reverse

from practicesync.practices.models import Membership

register = template.Library()


@register.filter
def minutes(delta) -> int:
    return round(delta.total_seconds() / 60)


def _same_page(request, slug: str) -> str:
    """This page at another practice when it is a practice-wide page (Results, Tasks...);
    the Patients page when it is about one patient or item, which the other practice lacks."""
    match = request.resolver_match
    if match and match.url_name and set(match.kwargs) == {"practice"}:
        try:
            return reverse(match.view_name, kwargs={"practice": slug})
        except NoReverseMatch:
            pass
    return reverse("patients", kwargs={"practice": slug})


@register.inclusion_tag("accounts/_account_menu.html", takes_context=True)
def account_menu(context):
    """The header's account links: the role here, the practice switcher for staff of several
    practices, and the two-step login page."""
    request = context["request"]
    current = context.get("practice")
    memberships = list(Membership.objects.filter(user=request.user)
                       .select_related("practice").order_by("practice__name"))
    here = next((m for m in memberships if current and m.practice_id == current.id), None)
    others = [{"membership": m, "url": _same_page(request, m.practice.slug)}
              for m in memberships if m is not here] if len(memberships) > 1 else []
    return {"here": here, "others": others}
