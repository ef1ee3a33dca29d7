"""Session and cookie settings: idle timeout, and HTTPS-only cookies when deployed on HTTPS."""

import json
import os
import subprocess
import sys

from django.test import Client

from practicesync.practices.actions import add_staff
from tests.factories import ACTOR, log_in


def settings_in_a_fresh_process(**env) -> dict:
    code = ("import django, json; django.setup(); from django.conf import settings as s; "
            "print(json.dumps({k: getattr(s, k, None) for k in ('SESSION_COOKIE_SECURE', "
            "'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'SESSION_COOKIE_AGE', "
            "'SESSION_SAVE_EVERY_REQUEST')}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "practicesync.settings",
                               **env})
    return json.loads(done.stdout)


def test_cookies_are_https_only_behind_https_and_sessions_end_when_idle():
    plain = settings_in_a_fresh_process()
    assert plain["SESSION_COOKIE_SECURE"] is False and plain["SECURE_HSTS_SECONDS"] == 0
    assert plain["SESSION_COOKIE_AGE"] == 7200 and plain["SESSION_SAVE_EVERY_REQUEST"] is True
    https = settings_in_a_fresh_process(PRACTICESYNC_HTTPS="1")
    assert https["SESSION_COOKIE_SECURE"] is True and https["CSRF_COOKIE_SECURE"] is True
    assert https["SECURE_HSTS_SECONDS"] >= 31_536_000


def test_each_request_renews_the_idle_timeout(practice):
    client = log_in(Client(), add_staff(actor=ACTOR, practice=practice, email="r@x.example",
                                        role="reception").user)
    response = client.get(f"/p/{practice.slug}/patients/")
    cookie = response.cookies["sessionid"]
    assert response.status_code == 200 and cookie["max-age"] == 7200 and cookie["httponly"]
