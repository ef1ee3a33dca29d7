"""`practicesync serve` and `practicesync worker` as real processes, as an operator runs them.

The server is set up only through the CLI (migrate, practice create, staff add, patients
sync, accounts import) in its own PRACTICESYNC_HOME, then used over real HTTP.
"""

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import NHS, list_row, write_list

pytestmark = pytest.mark.slow

EMAIL = "reception@harbourside.example"
PASSWORD = "a long test passphrase"


def cli_env(home: Path) -> dict:
    """The environment of an operator's shell: the embedded SQLite in `home`, DEBUG off."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DEBUG")}
    env["PRACTICESYNC_HOME"] = str(home)
    return env


def cli(home: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "practicesync", *args], input=stdin,
                          env=cli_env(home), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(home: Path, *args: str, log_name: str) -> subprocess.Popen:
    log = (home / log_name).open("wb")
    # Its own session, so a failed test can clean up gunicorn's workers with the master.
    return subprocess.Popen([sys.executable, "-m", "practicesync", *args], env=cli_env(home),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float) -> tuple[int, float]:
    """SIGTERM the process (only it, as a supervisor would); its exit code and how long."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=timeout)
    return code, time.monotonic() - started


def kill_leftovers(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def wait_until_answering(url: str, proc: subprocess.Popen, log: Path, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"server did not answer {url} within {timeout}s:\n{log.read_text()}")


@dataclass
class Served:
    base: str
    proc: subprocess.Popen
    home: Path
    slug: str
    email: str = EMAIL
    password: str = PASSWORD

    @property
    def log(self) -> Path:
        return self.home / "serve.log"


def set_up_home(home: Path) -> str:
    """A practice with a non-digital, a digital and a deceased patient, and a reception user."""
    cli(home, "migrate", "--no-input", "-v", "0")
    practice = json.loads(cli(home, "practice", "create", "--name", "Harbourside Surgery",
                              "--pms", "docman10", "--json"))
    slug = practice["slug"]
    assert slug == "harbourside-surgery"
    cli(home, "practice", "permit", "--practice", slug, "--granted-by", "Dr Data Controller",
        "--dpia-ref", "DPIA-2026-01")
    cli(home, "staff", "add", "--practice", slug, "--email", EMAIL, "--role", "reception",
        "--password-stdin", stdin=PASSWORD + "\n")
    accounts = home / "accounts.csv"
    accounts.write_text("account_id,given_name,family_name,date_of_birth,email,mobile_phone,"
                        f"nhs_number\nA1,Dana,Greenwood,1975-06-07,dana@example.org,"
                        f"07911 123402,{NHS[1]}\n", encoding="utf-8")
    cli(home, "accounts", "import", "--practice", slug, "--source", str(accounts))
    source = write_list(home / "list.csv", [
        list_row(pms_id="P1", given_name="Nora", family_name="Greyling", nhs_number=NHS[0],
                 date_of_birth="1950-03-04", mobile_phone="07911 123401"),
        list_row(pms_id="P2", given_name="Dana", family_name="Greenwood", nhs_number=NHS[1],
                 date_of_birth="1975-06-07"),
        list_row(pms_id="P3", given_name="Edith", family_name="Hale", nhs_number=NHS[2],
                 date_of_birth="1931-01-01", registration_status="deceased",
                 date_of_death="2026-10-01"),
    ])
    summary = json.loads(cli(home, "patients", "sync", "--practice", slug, "--source",
                             str(source), "--json"))
    assert summary["non_digital_created"] == 2 and summary["deceased"] == 1
    assert summary["errors"] == []
    return slug


def serving(home, slug):
    """`practicesync serve` on a free port of 127.0.0.1 for `home`; SIGTERMed (and checked)
    when the generator is closed."""
    port = free_port()
    proc = start(home, "serve", "--port", str(port), log_name="serve.log")
    served = Served(f"http://127.0.0.1:{port}", proc, home, slug)
    try:
        wait_until_answering(served.base + "/login/", proc, served.log)
        yield served
        if proc.poll() is None:
            code, _ = stop(proc, timeout=15)
            assert code == 0, served.log.read_text()
    finally:
        if proc.poll() is None:
            kill_leftovers(proc)


@pytest.fixture
def served_app(tmp_path):
    yield from serving(tmp_path, set_up_home(tmp_path))


class Session:
    """A browser-like HTTP session: cookies kept, no redirects hidden from the caller."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str):
        with self.opener.open(self.base + path, timeout=10) as response:
            return response.status, response.geturl(), response.headers, response.read()

    def post(self, path: str, fields: dict):
        data = urllib.parse.urlencode(fields).encode()
        with self.opener.open(self.base + path, data=data, timeout=10) as response:
            return response.status, response.geturl(), response.headers, response.read()

    def login(self, email: str, password: str, next_path: str):
        _, _, _, body = self.get("/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        assert token is not None, body[:500]
        return self.post("/login/", {"csrfmiddlewaretoken": token.group(1).decode(),
                                     "username": email, "password": password,
                                     "next": next_path})


def test_serve_logs_in_shows_patients_serves_static_and_stops_on_sigterm(served_app):
    session = Session(served_app.base)
    patients_path = f"/p/{served_app.slug}/patients/"

    # Before login the Patients page sends the browser to the login form.
    status, url, _, body = session.get(patients_path)
    assert status == 200 and url == f"{served_app.base}/login/?next={patients_path}"
    assert b'name="password"' in body

    status, url, _, body = session.login(served_app.email, served_app.password, patients_path)
    assert status == 200 and url == served_app.base + patients_path
    html = body.decode()
    assert "Harbourside Surgery" in html and "3 patients, 1 digital." in html
    assert re.search(r'class="tick non-digital"[^<]*</span></td>\s*<td><a [^>]*>GREYLING, Nora',
                     html)
    assert re.search(r'class="tick digital"[^<]*</span></td>\s*<td><a [^>]*>GREENWOOD, Dana',
                     html)
    assert "sessionid" in {c.name for c in session.jar}

    status, _, _, body = session.get(f"/p/{served_app.slug}/patients/P1")
    assert status == 200 and b"Nora GREYLING" in body and b"+447911123401" in body

    # DEBUG is off: an unknown page is a plain 404, not Django's debug page.
    with pytest.raises(urllib.error.HTTPError) as missing:
        session.get(f"/p/{served_app.slug}/patients/P404")
    assert missing.value.code == 404
    assert b"DEBUG = True" not in missing.value.read()

    # The stylesheet the pages link to is served by WhiteNoise from the collected files.
    assert '/static/dashboard/site.css' in html
    status, _, headers, css = session.get("/static/dashboard/site.css")
    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    assert b".tick.non-digital" in css
    assert "max-age" in headers.get("Cache-Control", "")
    assert (served_app.home / "static" / "dashboard" / "site.css").exists()

    code, took = stop(served_app.proc, timeout=15)
    assert code == 0, served_app.log.read_text()
    assert took < 15
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(served_app.base + "/login/", timeout=2)


def test_worker_stops_cleanly_on_sigterm(tmp_path):
    cli(tmp_path, "migrate", "--no-input", "-v", "0")
    proc = start(tmp_path, "worker", "--interval", "0.2", log_name="worker.log")
    log = tmp_path / "worker.log"
    try:
        deadline = time.monotonic() + 30
        while b"started" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"worker did not start:\n{log.read_text()}"
            time.sleep(0.1)
        time.sleep(1)  # a few passes of its loop
        assert proc.poll() is None, log.read_text()
        code, took = stop(proc, timeout=10)
        assert code == 0, log.read_text()
        assert took < 10
        assert "worker stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            kill_leftovers(proc)
