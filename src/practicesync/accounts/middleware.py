from django.conf import settings
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect

from .mfa import step_for

# The pages a half-logged-in session may still reach: the way in, the way out, and the MFA
# steps themselves.
EXEMPT_NAMES = {"login", "logout", "mfa_enrol", "mfa_verify"}


def _exempt_prefixes() -> tuple[str, ...]:
    # The API authenticates each request with its own token, and the webhooks with the
    # provider's signature: neither has a browser session to take through MFA.
    return ("/" + settings.STATIC_URL.lstrip("/"), "/api/", "/webhooks/")


class MFARequiredMiddleware:
    """Admins (and superusers) must pass two-step login before any page; anyone who has set
    up an authenticator must use it at each login. Other staff may use pages without one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.user.is_authenticated:
            return None
        match = request.resolver_match
        if (match and match.url_name in EXEMPT_NAMES) or request.path.startswith(
                _exempt_prefixes()):
            return None
        step = step_for(request.user)
        if step is None:
            return None
        # A form post cannot be replayed after the code; send them home instead.
        back = request.get_full_path() if request.method == "GET" else "/"
        url = f"{reverse('mfa_' + step)}?{urlencode({'next': back})}"
        if getattr(request, "htmx", False):
            return HttpResponseClientRedirect(url)
        return redirect(url)
