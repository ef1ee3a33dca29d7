"""Staff login: email and password, two-step login (TOTP via django-otp), lockout (django-axes),
the practice switcher and the `staff mfa-reset` command."""

import re
from base64 import b32decode, b32encode

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from practicesync.accounts.mfa import ENROL, VERIFY, next_step
from practicesync.audit.models import AuditEvent
from practicesync.practices.actions import add_staff
from tests.cli import run
from tests.factories import ACTOR, log_in, make_patient, make_practice

PASSWORD = "correct horse battery 7"
ADMIN = "manager@riverside.example"
RECEPTION = "desk@riverside.example"
PAGES = ["/", "/p/riverside/patients/", "/p/riverside/results/", "/p/riverside/tasks/",
         "/p/riverside/messages/", "/admin/", "/account/mfa/"]


@pytest.fixture(autouse=True)
def no_throttle_delay(settings):
    # django-otp waits 1, 2, 4... seconds after each wrong code; the failures still count.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.OTP_STATIC_THROTTLE_FACTOR = 0


@pytest.fixture
def admin(practice):
    return add_staff(actor=ACTOR, practice=practice, email="Manager@Riverside.example",
                     role="admin", password=PASSWORD).user


@pytest.fixture
def reception(practice):
    return add_staff(actor=ACTOR, practice=practice, email=RECEPTION, role="reception",
                     password=PASSWORD).user


def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def token_of(response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"',
                     response.content.decode()).group(1)


def post_form(client, url, fields, *, form_on=None, **kwargs):
    """GET the page with the form for its CSRF token, then POST as a browser would."""
    page = client.get(form_on or url)
    return client.post(url, {"csrfmiddlewaretoken": token_of(page), **fields}, **kwargs)


def log_in_by_form(client, email, password=PASSWORD, next_path="/"):
    return post_form(client, "/login/", {"username": email, "password": password,
                                         "next": next_path})


def past_the_password(email) -> Client:
    """A new browser session that has just passed the password step as `email`."""
    client = csrf_client()
    log_in_by_form(client, email)
    return client


def code_for(device: TOTPDevice, offset_steps: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = totp.time + offset_steps * device.step
    return f"{totp.token():06d}"


def enrol(client) -> tuple[TOTPDevice, list[str]]:
    """Set up an authenticator through the enrol page; returns the device and backup codes."""
    page = client.get("/account/mfa/enrol/")
    key = re.search(r'<code class="key">([^<]+)</code>', page.content.decode()).group(1)
    device = TOTPDevice.objects.get(user=page.wsgi_request.user, confirmed=False)
    assert b32decode(key.replace(" ", "")) == device.bin_key
    done = client.post("/account/mfa/enrol/", {"csrfmiddlewaretoken": token_of(page),
                                               "code": code_for(device)})
    assert done.status_code == 200, done.content.decode()[:500]
    codes = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", done.content.decode())
    return TOTPDevice.objects.get(id=device.id), codes


def wrong_code(device: TOTPDevice) -> str:
    return "000000" if code_for(device) != "000000" else "111111"


def log_out(client):
    page = client.get("/account/mfa/")
    assert client.post("/logout/", {"csrfmiddlewaretoken": token_of(page)}).status_code == 302


def second_step(client, code, next_path="/"):
    return post_form(client, f"/account/mfa/verify/?next={next_path}",
                     {"code": code, "next": next_path})


@pytest.mark.parametrize("required, has_device, verified, step", [
    (True, False, False, ENROL),
    (True, True, False, VERIFY),
    (True, True, True, None),
    (False, False, False, None),
    (False, True, False, VERIFY),
    (False, True, True, None),
])
def test_next_step(required, has_device, verified, step):
    assert next_step(required=required, has_device=has_device, verified=verified) == step


@pytest.mark.django_db
@pytest.mark.parametrize("typed", [RECEPTION, RECEPTION.upper(), " Desk@Riverside.Example "])
def test_email_login_in_any_case(reception, practice, typed):
    client = csrf_client()
    response = log_in_by_form(client, typed, next_path=f"/p/{practice.slug}/patients/")
    assert response.status_code == 302
    assert response["Location"] == f"/p/{practice.slug}/patients/"
    assert client.get(response["Location"]).status_code == 200


@pytest.mark.django_db
def test_five_wrong_passwords_lock_the_login_even_for_the_right_password(reception):
    client = csrf_client()
    for _ in range(4):
        wrong = log_in_by_form(client, RECEPTION, "wrong password")
        assert wrong.status_code == 200
        assert "Email or password not recognised." in wrong.content.decode()
    locked = log_in_by_form(client, RECEPTION.upper(), "still wrong")
    assert locked.status_code == 429

    right = log_in_by_form(client, RECEPTION, PASSWORD)
    assert right.status_code == 429
    html = right.content.decode()
    assert "Login paused" in html and "Wait 15 minutes, then try again" in html
    assert "Ask your practice manager" in html
    assert "_auth_user_id" not in client.session
    events = AuditEvent.objects.filter(action="auth.locked_out")
    assert events.exists() and events[0].detail["email"] == RECEPTION

    # The lockout holds this email at this address only: a colleague still gets in.
    add_staff(actor=ACTOR, practice=reception.memberships.get().practice,
              email="nurse@riverside.example", role="clinician", password=PASSWORD)
    assert log_in_by_form(csrf_client(), "nurse@riverside.example").status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_an_admin_without_a_device_is_sent_to_enrol_from_every_page(admin, path):
    client = Client()
    log_in(client, admin, verified=False)
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/account/mfa/enrol/?next=")


@pytest.mark.django_db
def test_htmx_requests_are_redirected_by_htmx(admin, practice):
    client = Client()
    log_in(client, admin, verified=False)
    response = client.get(f"/p/{practice.slug}/results/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith("/account/mfa/enrol/")


@pytest.mark.django_db
def test_admin_enrols_logs_out_and_must_verify_at_the_next_login(admin, practice):
    client = csrf_client()
    login = log_in_by_form(client, ADMIN, next_path=f"/p/{practice.slug}/patients/")
    assert login.status_code == 302
    gate = client.get(login["Location"])
    assert gate["Location"] == (f"/account/mfa/enrol/?next=%2Fp%2F{practice.slug}"
                                "%2Fpatients%2F")

    page = client.get(gate["Location"])
    html = page.content.decode()
    assert "<svg" in html and "<title>QR code to scan" in html
    assert "otpauth://totp/practicesync%3Amanager%40riverside.example?secret=" in html
    device = TOTPDevice.objects.get(user=admin, confirmed=False)
    wrong = client.post(gate["Location"], {"csrfmiddlewaretoken": token_of(page),
                                           "code": wrong_code(device)})
    assert "That code did not match" in wrong.content.decode()
    assert not TOTPDevice.objects.get(id=device.id).confirmed
    assert client.get(f"/p/{practice.slug}/patients/").status_code == 302

    device, codes = enrol(client)
    assert device.confirmed and len(codes) == 10 and len(set(codes)) == 10
    assert client.get(f"/p/{practice.slug}/patients/").status_code == 200
    # Reloading the enrol page shows no key and no codes again.
    again = client.get("/account/mfa/enrol/")
    assert again.status_code == 302 and again["Location"] == "/account/mfa/"

    log_out(client)
    assert log_in_by_form(client, ADMIN).status_code == 302
    gate = client.get(f"/p/{practice.slug}/results/")
    assert gate["Location"] == f"/account/mfa/verify/?next=%2Fp%2F{practice.slug}%2Fresults%2F"
    # With a password alone, nobody can swap in an authenticator of their own.
    assert client.get("/account/mfa/enrol/")["Location"].startswith("/account/mfa/verify/")

    wrong = second_step(client, wrong_code(device))
    assert wrong.status_code == 200 and "That code did not match" in wrong.content.decode()
    assert client.get(f"/p/{practice.slug}/results/").status_code == 302

    # One step (30 s) of clock drift on the phone is tolerated. (Not a step back: the code
    # used at enrolment is newer, and a code never works twice.)
    right = second_step(client, code_for(device, offset_steps=1),
                        next_path=f"/p/{practice.slug}/results/")
    assert right.status_code == 302 and right["Location"] == f"/p/{practice.slug}/results/"
    assert client.get(f"/p/{practice.slug}/results/").status_code == 200


@pytest.mark.django_db
def test_a_backup_code_works_once_only(admin, practice):
    client = past_the_password(ADMIN)
    _, codes = enrol(client)
    client = past_the_password(ADMIN)
    used = second_step(client, codes[0].upper()[:4] + " " + codes[0][4:])
    assert used.status_code == 302
    assert StaticToken.objects.filter(device__user=admin).count() == 9
    assert AuditEvent.objects.filter(action="mfa.backup_code_used",
                                     detail__backup_codes_left=9).exists()

    client = past_the_password(ADMIN)
    again = second_step(client, codes[0])
    assert again.status_code == 200 and "That code did not match" in again.content.decode()
    assert second_step(client, codes[1]).status_code == 302


@pytest.mark.django_db
def test_five_wrong_codes_end_the_session_and_lock_the_login(admin, practice):
    client = past_the_password(ADMIN)
    device, _ = enrol(client)
    client = past_the_password(ADMIN)
    wrong = wrong_code(device)
    for _ in range(4):
        assert second_step(client, wrong).status_code == 200
    locked = second_step(client, wrong)
    assert locked.status_code == 429 and "Login paused" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    device.refresh_from_db()
    assert device.throttling_failure_count == 5  # django-otp's own throttle counted them too
    # The right password is refused for the next 15 minutes.
    assert log_in_by_form(client, ADMIN).status_code == 429
    assert AuditEvent.objects.filter(action="mfa.verify_failed", detail__step="login").count() == 5


@pytest.mark.django_db
def test_the_throttle_asks_to_wait_after_a_wrong_code(admin, settings):
    client = past_the_password(ADMIN)
    device, _ = enrol(client)
    client = past_the_password(ADMIN)
    settings.OTP_TOTP_THROTTLE_FACTOR = 60
    second_step(client, wrong_code(device))
    throttled = second_step(client, code_for(device))
    assert "Too many wrong codes in a row: wait" in throttled.content.decode()
    assert TOTPDevice.objects.get(id=device.id).throttling_failure_count == 1  # not counted


@pytest.mark.django_db
def test_a_non_admin_may_use_pages_without_mfa(reception, practice):
    client = csrf_client()
    response = log_in_by_form(client, RECEPTION, next_path=f"/p/{practice.slug}/results/")
    assert client.get(response["Location"]).status_code == 200
    assert client.get("/account/mfa/").status_code == 200


@pytest.mark.django_db
def test_a_non_admin_with_a_device_must_verify_and_can_turn_it_off(reception, practice):
    client = csrf_client()
    log_in_by_form(client, RECEPTION)
    device, _ = enrol(client)
    client = csrf_client()
    log_in_by_form(client, RECEPTION)
    assert client.get(f"/p/{practice.slug}/patients/")["Location"].startswith(
        "/account/mfa/verify/")
    # The code of the next 30 s: this one was just used at enrolment, and never works twice.
    assert second_step(client, code_for(device, offset_steps=1)).status_code == 302

    off = post_form(client, "/account/mfa/disable/", {}, form_on="/account/mfa/", follow=True)
    assert "Two-step login is off." in off.content.decode()
    assert not TOTPDevice.objects.filter(user=reception).exists()
    assert not StaticDevice.objects.filter(user=reception).exists()
    assert AuditEvent.objects.filter(action="mfa.reset", why="turned off by the user").exists()
    client = csrf_client()
    log_in_by_form(client, RECEPTION)
    assert client.get(f"/p/{practice.slug}/patients/").status_code == 200


@pytest.mark.django_db
def test_an_admin_cannot_turn_mfa_off(admin):
    client = csrf_client()
    log_in(client, admin)
    response = post_form(client, "/account/mfa/disable/", {}, form_on="/account/mfa/")
    assert response.status_code == 403
    assert TOTPDevice.objects.filter(user=admin).exists()


@pytest.mark.django_db
def test_practice_switcher_lists_the_users_other_practices_only(practice):
    harbour = make_practice(slug="harbour", pms="bestpractice")
    make_practice(slug="elsewhere")
    user = add_staff(actor=ACTOR, practice=practice, email="gp@example.org",
                     role="clinician").user
    add_staff(actor=ACTOR, practice=harbour, email="gp@example.org", role="admin")
    client = Client()
    log_in(client, user)
    html = client.get(f"/p/{practice.slug}/results/").content.decode()
    switcher = re.search(r'<details class="switcher">.*?</details>', html, re.S).group(0)
    assert 'href="/p/harbour/results/"' in switcher and ">Admin<" in switcher
    assert "riverside" not in switcher and "elsewhere" not in switcher
    assert '<span class="role" title="Your role at this practice">Clinician</span>' in html
    # A page about one patient here switches to the other practice's Patients page.
    make_patient(practice, pms_id="P1")
    html = client.get(f"/p/{practice.slug}/patients/P1").content.decode()
    assert 'href="/p/harbour/patients/"' in html

    single = add_staff(actor=ACTOR, practice=practice, email="solo@example.org",
                       role="reception").user
    log_in(client, single)
    assert "switcher" not in client.get(f"/p/{practice.slug}/patients/").content.decode()


@pytest.mark.django_db
def test_mfa_reset_command_removes_devices_and_lifts_the_lockout(admin, practice):
    client = past_the_password(ADMIN)
    enrol(client)
    for _ in range(5):
        log_in_by_form(csrf_client(), ADMIN, "wrong")
    assert log_in_by_form(csrf_client(), ADMIN).status_code == 429

    code, out = run("staff", "mfa-reset", "--practice", practice.slug, "--email", ADMIN.upper())
    assert code == 0, out
    assert "2 device(s) removed, login lockout lifted" in out
    assert not TOTPDevice.objects.filter(user=admin).exists()
    assert not StaticDevice.objects.filter(user=admin).exists()
    reset = AuditEvent.objects.get(action="mfa.reset", practice=practice)
    assert reset.actor.startswith("cli:") and reset.detail["devices_removed"] == 2
    assert AuditEvent.objects.filter(action="auth.unlocked").exists()

    client = csrf_client()
    assert log_in_by_form(client, ADMIN).status_code == 302
    assert client.get("/")["Location"].startswith("/account/mfa/enrol/")

    other = make_practice(slug="elsewhere")
    assert run("staff", "mfa-reset", "--practice", other.slug, "--email", ADMIN)[0] == 1
    assert run("staff", "mfa-reset", "--practice", "nope", "--email", ADMIN)[0] == 2


@pytest.mark.django_db
def test_audit_events_never_hold_codes_or_keys(admin, practice):
    harbour = make_practice(slug="harbour", pms="bestpractice")
    add_staff(actor=ACTOR, practice=harbour, email=ADMIN, role="clinician")
    client = past_the_password(ADMIN)
    device, codes = enrol(client)
    client = past_the_password(ADMIN)
    wrong = wrong_code(device)
    second_step(client, wrong)
    second_step(client, codes[0])

    for slug in (practice.slug, harbour.slug):  # every practice the admin belongs to
        actions = set(AuditEvent.objects.filter(practice__slug=slug, action__startswith="mfa.")
                      .values_list("action", flat=True))
        assert actions == {"mfa.enrolled", "mfa.verify_failed", "mfa.backup_code_used"}
    secrets = {wrong, device.key, b32encode(device.bin_key).decode(), *codes}
    for event in AuditEvent.objects.filter(action__startswith="mfa."):
        text = f"{event.why} {event.detail}"
        assert event.actor == ADMIN
        assert not any(s in text for s in secrets), text
    # django-axes keeps the form of each failed attempt: the code is masked there too.
    attempt = AccessAttempt.objects.get(username=ADMIN)
    assert "code=********************" in attempt.post_data and wrong not in attempt.post_data
