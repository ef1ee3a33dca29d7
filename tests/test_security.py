"""Browser security headers on every page, templates the Content-Security-Policy can keep
(no inline script, handler or style), secrets only from the environment, and no DEBUG
server reachable from other machines (docs/adr/0016)."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from practicesync import settings as settings_module
from practicesync.practices.actions import add_staff
from practicesync.runtime.management.commands import serve
from tests.cli import run
from tests.factories import ACTOR, log_in
from tests.test_tenant_isolation import CHOICE_KWARGS, NOWHERE, NOWHERE_ID, all_routes

SRC = Path(settings_module.__file__).parent
TEMPLATES = sorted(SRC.glob("**/templates/**/*.html"))


def assert_secure_headers(response, url: str) -> None:
    policy = dict(d.strip().split(" ", 1) for d in response["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'", url
    assert policy["frame-ancestors"] == "'none'", url
    assert "unsafe" not in response["Content-Security-Policy"], url
    assert (response["X-Frame-Options"], response["Referrer-Policy"],
            response["X-Content-Type-Options"]) == ("DENY", "same-origin", "nosniff"), url


def test_every_dashboard_page_carries_the_security_headers(practice):
    admin = add_staff(actor=ACTOR, practice=practice, email="a@x.example", role="admin").user
    client = log_in(Client(), admin)
    statuses = {}
    for route in all_routes():
        if route.name.startswith(("admin:", "api:")):
            continue
        kwargs = {name: practice.slug if name == "practice" else
                  CHOICE_KWARGS[name][0] if name in CHOICE_KWARGS else
                  NOWHERE.get(name, NOWHERE_ID) for name in route.kwargs}
        url = reverse(route.name, kwargs=kwargs)
        response = client.get(url)
        assert_secure_headers(response, url)
        statuses[route.name] = response.status_code
    # Real pages, not only refusals and redirects.
    assert {statuses[name] for name in ("patients", "results", "messages", "tasks",
                                        "settings", "audit_log")} == {200}
    assert len(statuses) > 40


def test_the_login_page_and_api_docs_carry_the_policy(db):
    for url in ("/login/", "/api/docs", "/api/openapi.json"):
        response = Client().get(url)
        assert response.status_code == 200, url
        assert_secure_headers(response, url)


def test_the_base_page_turns_off_htmxs_injected_styles_and_eval(practice):
    client = log_in(Client(), add_staff(actor=ACTOR, practice=practice, email="r@x.example",
                                        role="reception").user)
    html = client.get(f"/p/{practice.slug}/patients/").content.decode()
    config = re.search(r'<meta name="htmx-config" content=\'([^\']*)\'>', html)
    assert json.loads(config[1]) == {"includeIndicatorStyles": False, "allowEval": False}


def tags(template: str) -> list[str]:
    """The HTML tags of a template, with Django's {% %} and {{ }} blanked out."""
    plain = re.sub(r"\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}", " ", template, flags=re.S)
    return re.findall(r"<[a-zA-Z][^>]*>", plain)


INLINE = {
    "script without src": lambda t, tag: tag.startswith("<script") and "src=" not in tag,
    "on* handler": lambda t, tag: re.search(r"\son[a-z]+\s*=", tag),
    "style attribute": lambda t, tag: re.search(r"\sstyle\s*=", tag),
    "style element": lambda t, tag: tag.startswith("<style"),
    "javascript: URL": lambda t, tag: "javascript:" in tag.lower(),
}


@pytest.mark.parametrize("what", INLINE)
def test_no_template_has_inline_script_handlers_or_styles(what):
    assert len(TEMPLATES) > 30
    found = [f"{path.relative_to(SRC)}: {tag}" for path in TEMPLATES
             for tag in tags(path.read_text()) if INLINE[what](path, tag)]
    assert found == []
    # A script with a source and a body would run neither; none has a body.
    for path in TEMPLATES:
        assert not re.search(r"<script[^>]*>\s*[^<\s]", path.read_text()), path


def test_the_inline_checks_find_what_they_look_for():
    sample = ('<div onclick="go()" style="color: red"><script>alert(1)</script>'
              '<a href="javascript:go()">x</a><style></style></div>')
    assert {what for what, check in INLINE.items()
            if any(check(None, tag) for tag in tags(sample))} == set(INLINE)


# --- secrets only from the environment ---

FILE_READS = {"open", "fdopen", "read_text", "read_bytes", "load"}


def test_settings_reads_no_file_but_the_generated_secret_key():
    tree = ast.parse(Path(settings_module.__file__).read_text())
    reads = {(getattr(top, "name", "<module>"), ast.unparse(node.func))
             for top in tree.body for node in ast.walk(top)
             if isinstance(node, ast.Call)
             and ast.unparse(node.func).rsplit(".", 1)[-1] in FILE_READS}
    assert {where for where, _ in reads} == {"_secret_key"}, reads


def fresh_settings(names: list[str], env: dict) -> dict:
    code = ("import django, json; django.setup(); from django.conf import settings as s; "
            f"print(json.dumps({{k: getattr(s, k, None) for k in {names!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**env, "DJANGO_SETTINGS_MODULE": "practicesync.settings"})
    return json.loads(done.stdout)


def test_secrets_come_from_the_environment_and_nothing_is_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    secrets = {"SECRET_KEY": "k" * 50, "TWILIO_AUTH_TOKEN": "tw-secret",
               "EMAIL_HOST_PASSWORD": "mail-secret", "VAPID_PRIVATE_KEY": "vapid-secret"}
    got = fresh_settings([*secrets, "ANYMAIL"], {
        **env, **secrets, "ANYMAIL_MAILGUN_API_KEY": "mg-secret",
        "PRACTICESYNC_HOME": str(tmp_path / "home")})
    assert got == {**secrets, "ANYMAIL": {"MAILGUN_API_KEY": "mg-secret"}}
    assert list((tmp_path / "home").iterdir()) == []  # no secret_key file made or read
    # Without SECRET_KEY, the one generated file: owner-only.
    generated = fresh_settings(["SECRET_KEY"], {**env, "PRACTICESYNC_HOME": str(tmp_path)})
    key_file = tmp_path / "secret_key"
    assert generated["SECRET_KEY"] == key_file.read_text()
    assert key_file.stat().st_mode & 0o777 == 0o600


# --- DEBUG never served beyond this machine ---

class Served(Exception):
    """gunicorn would have replaced the process here."""


@pytest.fixture
def no_gunicorn(monkeypatch):
    def execv(*args):
        raise Served

    monkeypatch.setattr(serve.os, "execv", execv)
    monkeypatch.setattr(serve, "call_command", lambda *args, **kwargs: None)


@pytest.mark.parametrize("hosts, host", [
    (["practicesync.example-practice.org"], "127.0.0.1"),
    (["127.0.0.1", "*"], "127.0.0.1"),
    (["127.0.0.1", "localhost"], "0.0.0.0"),
])
def test_serve_refuses_debug_reachable_from_other_machines(settings, no_gunicorn, hosts, host):
    settings.DEBUG, settings.ALLOWED_HOSTS = True, hosts
    code, out = run("serve", "--host", host)
    assert code == 2 and "DEBUG is on" in out


def test_serve_starts_with_debug_on_loopback_or_debug_off(settings, no_gunicorn):
    settings.DEBUG, settings.ALLOWED_HOSTS = True, ["127.0.0.1", "localhost"]
    with pytest.raises(Served):
        run("serve")
    settings.DEBUG, settings.ALLOWED_HOSTS = False, ["practicesync.example-practice.org"]
    with pytest.raises(Served):
        run("serve", "--host", "0.0.0.0")
