"""One pager for every paginated list: Previous / Page n of m / Next, keeping the page's
other query parameters (its filters) in the links."""

from django import template

register = template.Library()


@register.inclusion_tag("dashboard/_pager.html", takes_context=True)
def pager(context, page, param="page", label="Pages", anchor="", previous="Previous",
          following="Next", noun="Page"):
    query = context["request"].GET.copy()

    def link(number):
        query[param] = number
        return f"?{query.urlencode()}{'#' + anchor if anchor else ''}"

    return {"page": page, "label": label, "noun": noun, "previous": previous,
            "following": following,
            "previous_url": link(page.previous_page_number()) if page.has_previous() else "",
            "next_url": link(page.next_page_number()) if page.has_next() else ""}
