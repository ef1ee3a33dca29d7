"""Login, logout and the two-step login pages. MFARequiredMiddleware sends sessions here."""

from base64 import b32encode

import django_otp
import segno
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import LoginView, LogoutView
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from django_otp import user_has_device
from django_otp.plugins.otp_static.models import StaticToken

from practicesync.dashboard.outreach import actor_of

from . import actions
from .forms import CodeForm, EmailAuthenticationForm
from .mfa import ENROL, mfa_required, step_for

login_view = LoginView.as_view(template_name="dashboard/login.html",
                               authentication_form=EmailAuthenticationForm)
logout_view = LogoutView.as_view(next_page="login")


def _next(request) -> str:
    url = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return url
    return "/"


def _with_next(name: str, next_url: str) -> str:
    return f"{reverse(name)}?{urlencode({'next': next_url})}"


def _grouped(key: str) -> str:
    return " ".join(key[i:i + 4] for i in range(0, len(key), 4))


@never_cache
@login_required
def enrol(request):
    """Set up an authenticator app: scan the QR code (or type the key), then prove it with a
    current code. Only for a user with no confirmed device, so a password alone can never
    replace someone's authenticator."""
    next_url = _next(request)
    if user_has_device(request.user):
        return redirect(_with_next("mfa_verify", next_url) if not request.user.is_verified()
                        else "mfa")
    device = actions.pending_device(user=request.user)
    form = CodeForm(request.POST or None, allow_backup=False)
    if request.method == "POST" and form.is_valid():
        codes = actions.confirm_enrolment(actor=actor_of(request.user), user=request.user,
                                          device_id=device.id, code=form.cleaned_data["code"])
        if codes is not None:
            django_otp.login(request, device)
            return render(request, "accounts/mfa_backup_codes.html",
                          {"codes": codes, "next": next_url})
        form.add_error("code", "That code did not match. Check the time on your phone is "
                               "right, wait for a new code and try again.")
    uri = device.config_url
    qr = segno.make(uri, error="m").svg_inline(scale=4, title="QR code to scan with your "
                                                              "authenticator app")
    return render(request, "accounts/mfa_enrol.html", {
        "form": form, "next": next_url, "qr": qr, "uri": uri,
        "key": _grouped(b32encode(device.bin_key).decode()),
        "required": mfa_required(request.user)})


@never_cache
@login_required
def verify(request):
    """The second step of a login: a code from the authenticator app or one backup code.
    Wrong codes count as failed logins for django-axes, so five of them lock this email out
    from this address, and end the session."""
    next_url = _next(request)
    step = step_for(request.user)
    if step == ENROL:
        return redirect(_with_next("mfa_enrol", next_url))
    if step is None:
        return redirect(next_url)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = request.user
        outcome = actions.verify_login(actor=actor_of(user), user=user,
                                       code=form.cleaned_data["code"])
        if outcome.device is not None:
            django_otp.login(request, outcome.device)
            return redirect(next_url)
        if outcome.counted_failure:
            user_login_failed.send(sender=__name__, request=request,
                                   credentials={"username": user.get_username()})
            if getattr(request, "axes_locked_out", False):
                logout(request)
                # AxesMiddleware turns this into the lockout page (429).
                return HttpResponse(status=429)
            form.add_error("code", "That code did not match. Try again.")
        else:
            wait = max(1, round((outcome.wait_until - timezone.now()).total_seconds()))
            form.add_error("code", f"Too many wrong codes in a row: wait {wait} seconds, "
                                   "then try again.")
    return render(request, "accounts/mfa_verify.html", {"form": form, "next": next_url})


@never_cache
@login_required
def manage(request):
    return render(request, "accounts/mfa_manage.html", {
        "enabled": user_has_device(request.user), "required": mfa_required(request.user),
        "backup_left": StaticToken.objects.filter(device__user=request.user).count()})


@require_POST
@login_required
def disable(request):
    """A non-admin may turn two-step login off again; admins must keep it."""
    if mfa_required(request.user):
        raise PermissionDenied("Admins must keep two-step login on")
    actions.reset_mfa(actor=actor_of(request.user), user=request.user,
                      why="turned off by the user")
    messages.success(request, "Two-step login is off.")
    return redirect("mfa")
