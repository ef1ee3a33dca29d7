"""One practice never sees or changes another's patients: web pages, export and sync.

Practices A ("alpha") and B ("bravo") each hold a patient with PMS id "P1". Further down,
every dashboard URL (found from the URL conf) and every `practicesync` subcommand that takes
--practice is walked as alpha with bravo's objects: 404 or a refusal, nothing of bravo's
shown, nothing of bravo's changed.
"""

import argparse
import datetime as dt
import io
import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command, get_commands, load_command_class
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from practicesync.api.actions import create_token
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.dashboard.results import STAFF_EVENTS
from practicesync.dashboard.settings_page import SECTIONS
from practicesync.dashboard.sync import RESOLUTION_WORDS
from practicesync.outreach.messaging import create_bulk, save_template, send_message
from practicesync.outreach.models import (
    BulkMessage,
    Message,
    MessageTemplate,
    Sequence,
    StaffTask,
)
from practicesync.patients.actions import add_patient_request
from practicesync.patients.models import Patient, PatientRequest, ReviewItem, SyncRun
from practicesync.patients.sync import sync_patient_list
from practicesync.patients.tasks import sync_now_waiting
from practicesync.practices.actions import add_staff, schedule_nightly_sync
from practicesync.practices.models import Membership, Practice
from practicesync.results.importer import sync_results
from practicesync.results.models import ResultGroup, ResultsTemplate
from tests.cli import run, run_json
from tests.factories import (
    ACTOR,
    NHS,
    list_row,
    log_in,
    make_account,
    make_patient,
    make_practice,
    write_list,
)

EXPORT_KEYS = {"schema", "practice", "patients", "review_items", "sync_runs"}
PRACTICE_KEYS = {"slug", "name", "pms", "country"}
PATIENT_KEYS = {"id", "pms_id", "account_id", "digital", "status", "given_name", "family_name",
                "date_of_birth", "nhs_number", "medicare_number", "ihi", "mobile_phone",
                "home_phone", "email", "needs_review"}
REVIEW_KEYS = {"id", "kind", "pms_ids", "account_ids", "status", "detail"}
RUN_KEYS = {"id", "kind", "status", "dry_run", "counts", "errors"}
SUMMARY_KEYS = {"created", "updated", "unchanged", "non_digital_created", "nhs_numbers_added",
                "phones_filled", "needs_review", "left_practice", "deceased", "errors"}

B_NAMES = ("Brown", "Bobby", "Clark", "Carol")


@pytest.fixture
def alpha(db):
    return make_practice(slug="alpha")


@pytest.fixture
def bravo(db):
    return make_practice(slug="bravo")


@pytest.fixture
def a_p1(alpha):
    return make_patient(alpha, pms_id="P1", given_name="Alice", family_name="Adams",
                        mobile_phone="+447911123101")


@pytest.fixture
def b_p1(bravo):
    return make_patient(bravo, pms_id="P1", given_name="Bobby", family_name="Brown",
                        mobile_phone="+447911123202",
                        email="bobby@example.org", address_line1="2 Bravo Road",
                        nhs_number=NHS[0], list_fingerprint="b-fp")


@pytest.fixture
def b_account(bravo):
    """A digital account at B whose NHS number, name and DOB a row of A's list will carry."""
    return make_account(bravo, account_id="A1", given_name="Carol", family_name="Clark",
                        nhs_number=NHS[1], mobile_phone="+447911123303")


@pytest.fixture
def alpha_client(alpha, a_p1, b_p1, b_account):
    user = add_staff(actor=ACTOR, practice=alpha, email="staff@alpha.example",
                     role="admin").user
    client = Client()
    log_in(client, user)
    return client


def snapshot(practice):
    return {p.pk: {f.name: getattr(p, f.name) for f in Patient._meta.concrete_fields
                   if f.name != "updated_at"}
            for p in Patient.objects.filter(practice=practice)}


def export(slug: str) -> dict:
    out = io.StringIO()
    call_command("export", "--practice", slug, stdout=out)
    return json.loads(out.getvalue())


# --- web -------------------------------------------------------------------------------------

def test_member_of_a_gets_404_for_b_patients_page(alpha_client, bravo):
    response = alpha_client.get(f"/p/{bravo.slug}/patients/")
    assert response.status_code == 404
    assert "Brown" not in response.content.decode()


def test_member_of_a_gets_404_for_b_deep_link(alpha_client, alpha, bravo):
    response = alpha_client.get(f"/p/{bravo.slug}/patients/P1")
    assert response.status_code == 404
    assert "Brown" not in response.content.decode()
    # The same pms_id in A's own practice is A's patient.
    own = alpha_client.get(f"/p/{alpha.slug}/patients/P1").content.decode()
    assert "Alice ADAMS" in own and "+447911123101" in own
    assert not any(name in own for name in B_NAMES) and "+447911123202" not in own


def test_a_patients_page_never_shows_b_patients(alpha_client, alpha):
    url = f"/p/{alpha.slug}/patients/"
    html = alpha_client.get(url).content.decode()
    assert "ADAMS, Alice" in html
    assert "1 patients, 0 digital." in html
    for name in B_NAMES:
        assert name not in html and name.upper() not in html
    for query in ({"q": "Brown"}, {"q": "Carol"}, {"q": NHS[0]}, {"q": NHS[1]},
                  {"digital": "yes"}, {"q": "P1"}):
        html = alpha_client.get(url, query).content.decode()
        assert "BROWN" not in html and "CLARK" not in html, query
    assert "No patients match." in alpha_client.get(url, {"q": "Brown"}).content.decode()


def test_unknown_practice_and_non_member_look_the_same(alpha_client):
    assert alpha_client.get("/p/no-such-practice/patients/").status_code == 404


# --- export (in process) ---------------------------------------------------------------------

def test_export_of_a_contains_none_of_b(alpha, bravo, a_p1, b_p1, b_account):
    data = export(alpha.slug)
    assert set(data) >= EXPORT_KEYS
    assert data["schema"] == "practicesync.export/1"
    assert set(data["practice"]) >= PRACTICE_KEYS
    assert data["practice"]["slug"] == "alpha"
    assert [p["pms_id"] for p in data["patients"]] == ["P1"]
    patient = data["patients"][0]
    assert set(patient) >= PATIENT_KEYS
    assert patient["id"] == a_p1.id and patient["family_name"] == "Adams"
    assert patient["date_of_birth"] == "1980-01-02"
    assert patient["digital"] is False and patient["needs_review"] is False
    ids = {p["id"] for p in data["patients"]}
    assert b_p1.id not in ids and b_account.id not in ids
    text = json.dumps(data)
    for leaked in (*B_NAMES, NHS[0], NHS[1], "+447911123202", "bobby@example.org"):
        assert leaked not in text


# --- patients sync (in process) --------------------------------------------------------------

def test_sync_of_a_never_changes_b(tmp_path, alpha, bravo, a_p1, b_p1, b_account):
    before = snapshot(bravo)
    source = write_list(tmp_path / "alpha.csv", [
        # Same pms_id as B's patient: must update A's P1 only.
        list_row(pms_id="P1", given_name="Alice", family_name="Adams",
                 mobile_phone="07911 123999", email="alice@example.org",
                 address_line1="1 Alpha Street"),
        # B's digital account's NHS number, name and DOB: must not link across practices.
        list_row(pms_id="P7", given_name="Carol", family_name="Clark", nhs_number=NHS[1],
                 mobile_phone="07911 123777"),
        # B's P1's NHS number with B's name and DOB: a new patient for A, nothing for B.
        list_row(pms_id="P8", given_name="Bobby", family_name="Brown", nhs_number=NHS[0],
                 mobile_phone="07911 123888"),
    ])
    out = io.StringIO()
    call_command("patients", "sync", "--practice", alpha.slug, "--source", str(source),
                 "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["created"] == 2 and summary["updated"] == 1
    assert summary["needs_review"] == 0 and summary["errors"] == []

    assert snapshot(bravo) == before
    b_p1.refresh_from_db()
    assert (b_p1.given_name, b_p1.family_name, b_p1.mobile_phone, b_p1.email,
            b_p1.address_line1, b_p1.nhs_number) == (
        "Bobby", "Brown", "+447911123202", "bobby@example.org", "2 Bravo Road", NHS[0])
    b_account.refresh_from_db()
    assert b_account.pms_id is None and b_account.mobile_phone == "+447911123303"

    a_p1.refresh_from_db()
    assert a_p1.mobile_phone == "+447911123999" and a_p1.email == "alice@example.org"
    alpha_patients = Patient.objects.filter(practice=alpha)
    assert sorted(alpha_patients.values_list("pms_id", flat=True)) == ["P1", "P7", "P8"]
    assert not alpha_patients.filter(digital=True).exists()
    assert bravo.sync_runs.count() == 0 and alpha.sync_runs.count() == 1
    assert not bravo.review_items.exists()


def test_a_list_that_drops_patients_never_marks_b_patients_left(tmp_path, alpha, bravo, a_p1,
                                                                b_p1):
    make_patient(alpha, pms_id="P2", given_name="Arthur", family_name="Ash")
    make_patient(bravo, pms_id="P2", given_name="Betty", family_name="Black")
    before = snapshot(bravo)
    source = write_list(tmp_path / "alpha.csv",
                        [list_row(pms_id="P1", given_name="Alice", family_name="Adams")])
    out = io.StringIO()
    call_command("patients", "sync", "--practice", alpha.slug, "--source", str(source),
                 "--allow-drop", "test: practice list split", "--json", stdout=out)
    assert json.loads(out.getvalue())["left_practice"] == 1
    assert Patient.objects.get(practice=alpha, pms_id="P2").status == "left"
    assert snapshot(bravo) == before
    assert set(Patient.objects.filter(practice=bravo).values_list("status", flat=True)) == {
        "active"}


# --- the CLI as a separate process on its own SQLite file ------------------------------------

def cli(home, *args, stdin=None, check=True):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PRACTICESYNC_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "practicesync", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory):
    """A migrated practicesync home with practices alpha and bravo, each with P1 and P2."""
    home = tmp_path_factory.mktemp("home")
    cli(home, "migrate", "--no-input", "-v", "0")
    for name, rows in [
        ("Alpha", [list_row(pms_id="P1", given_name="Alice", family_name="Adams",
                            mobile_phone="07911 123101"),
                   list_row(pms_id="P2", given_name="Arthur", family_name="Ash")]),
        ("Bravo", [list_row(pms_id="P1", given_name="Bobby", family_name="Brown",
                            mobile_phone="07911 123202", email="bobby@example.org",
                            address_line1="2 Bravo Road"),
                   list_row(pms_id="P2", given_name="Betty", family_name="Black")]),
    ]:
        created = json.loads(cli(home, "practice", "create", "--name", name, "--pms",
                                 "docman10", "--json").stdout)
        assert created["slug"] == name.lower() and created["country"] == "GB"
        cli(home, "practice", "permit", "--practice", created["slug"], "--granted-by", "Dr T",
            "--dpia-ref", "DPIA-9")
        source = write_list(home / f"{created['slug']}.csv", rows)
        summary = json.loads(cli(home, "patients", "sync", "--practice", created["slug"],
                                 "--source", str(source), "--json").stdout)
        assert summary["created"] == 2 and summary["non_digital_created"] == 2
    return home


def cli_export(home, slug):
    proc = cli(home, "export", "--practice", slug)
    return proc.stdout, json.loads(proc.stdout)


@pytest.mark.slow
def test_cli_export_of_a_contains_none_of_b(cli_home):
    raw, data = cli_export(cli_home, "alpha")
    assert set(data) >= EXPORT_KEYS and data["schema"] == "practicesync.export/1"
    assert data["practice"]["slug"] == "alpha" and set(data["practice"]) >= PRACTICE_KEYS
    assert {(p["pms_id"], p["family_name"]) for p in data["patients"]} == {
        ("P1", "Adams"), ("P2", "Ash")}
    assert all(set(p) >= PATIENT_KEYS for p in data["patients"])
    assert len(data["sync_runs"]) == 1 and set(data["sync_runs"][0]) >= RUN_KEYS
    assert all(set(r) >= REVIEW_KEYS for r in data["review_items"])
    for leaked in ("Brown", "Bobby", "Black", "Betty", "+447911123202", "bobby@example.org",
                   "Bravo"):
        assert leaked not in raw


@pytest.mark.slow
def test_cli_sync_of_a_leaves_b_unchanged(cli_home):
    _, before = cli_export(cli_home, "bravo")
    source = write_list(cli_home / "alpha-2.csv", [
        list_row(pms_id="P1", given_name="Alice", family_name="Adams",
                 mobile_phone="07911 123999", email="alice@example.org"),
        list_row(pms_id="P3", given_name="Bobby", family_name="Brown",
                 date_of_birth="1980-01-02"),
    ])
    summary = json.loads(cli(cli_home, "patients", "sync", "--practice", "alpha", "--source",
                             str(source), "--allow-drop", "test", "--json").stdout)
    # Leaving the practice is an update too: P1's new contact details and P2 leaving.
    assert summary["updated"] == 2 and summary["created"] == 1
    assert summary["left_practice"] == 1

    _, after = cli_export(cli_home, "bravo")
    assert after["patients"] == before["patients"]
    assert after["sync_runs"] == before["sync_runs"]
    b_p1 = next(p for p in after["patients"] if p["pms_id"] == "P1")
    assert (b_p1["given_name"], b_p1["family_name"], b_p1["mobile_phone"], b_p1["email"],
            b_p1["status"]) == ("Bobby", "Brown", "+447911123202", "bobby@example.org", "active")

    _, alpha = cli_export(cli_home, "alpha")
    a = {p["pms_id"]: p for p in alpha["patients"]}
    assert a["P1"]["mobile_phone"] == "+447911123999" and a["P2"]["status"] == "left"
    assert a["P3"]["family_name"] == "Brown" and a["P3"]["id"] != b_p1["id"]


@pytest.mark.slow
def test_cli_export_of_an_unknown_practice_is_a_usage_error(cli_home):
    proc = cli(cli_home, "export", "--practice", "charlie", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no practice with slug 'charlie'" in proc.stderr


@pytest.mark.django_db
def test_export_of_an_unknown_practice_prints_no_partial_json():
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("export", "--practice", "charlie", stdout=out)
    assert out.getvalue() == ""


# --- every dashboard URL, walked ---------------------------------------------------------------
#
# Two practices built alike (`build_world`): "alpha" (Medical Director) and "bravo" (Best
# Practice), each with a patient, a follow-up and a checklist group, a staff task, a message, a
# phone request, a sync run with a review item, a Results template, a bulk message waiting for a
# second admin, and an API token. The walks fill each URL's parameters from a world and check
# that a member of alpha never reaches, sees or changes anything of bravo's.

APPROVAL_OVER = 0  # every bulk waits for a second admin: approving it is an action to refuse
WORLDS = {
    "alpha": {"pms": "medicaldirector", "code": "ALF-31", "automatic": "Discuss",
              "checklist": ("Discuss", "Call about the iron level"),
              "people": [("Alice", "Adamson", "+61412100001"), ("Arthur", "Ashdown", "+61412100002"),
                         ("Agatha", "Applebee", "+61412100003"), ("Alma", "Alderton", "+61412100004")]},
    "bravo": {"pms": "bestpractice", "code": "BRV-44", "automatic": "Non-Urgent Appointment",
              "checklist": ("Nurse to Advise", ""),
              "people": [("Bobby", "Brownlow", "+61412200001"), ("Betty", "Blackwood", "+61412200002"),
                         ("Bertram", "Bellweather", "+61412200003"),
                         ("Bella", "Birchall", "+61412200004")]},
}


@dataclass
class World:
    practice: Practice
    admin: Membership
    creator: Membership  # the other admin, who created the bulk
    patient: Patient  # a PMS id only this practice uses
    shared: Patient  # PMS id "P1", which the other practice uses too
    pair: tuple[int, int]  # the review item's list patient and digital account
    group: ResultGroup  # with a follow-up sequence
    checklist: ResultGroup
    task: StaffTask
    message: Message
    request: PatientRequest
    run: SyncRun
    item: ReviewItem
    template: ResultsTemplate
    bulk_template: MessageTemplate
    bulk: BulkMessage
    token_prefix: str
    secrets: tuple[str, ...]  # what nobody outside the practice may ever see


def result_row(result_id, pms_id, action, comment=""):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    # Filed where both Best Practice and Medical Director count a result.
    row.update(result_id=result_id, pms_id=pms_id, test_name="FBC", performed_on="2026-11-18",
               reported_on="2026-11-20", actioned_on="2026-11-20", action=action,
               comment=comment, filed_under="Investigation Report", tab="Results",
               location="Result")
    return row


def build_world(slug: str, tmp_path) -> World:
    spec = WORLDS[slug]
    (main, checklist, twin, shared) = spec["people"]
    practice = make_practice(slug=slug, pms=spec["pms"])
    admin = add_staff(actor=ACTOR, practice=practice, email=f"admin@{slug}.example",
                      role="admin")
    creator = add_staff(actor=ACTOR, practice=practice, email=f"creator@{slug}.example",
                        role="admin")
    twins = [make_account(practice, given_name=twin[0], family_name=twin[1],
                          date_of_birth=dt.date(2001, 4, 4)) for _ in range(2)]
    email = f"{main[0]}.{main[1]}@{slug}.example".lower()
    code = spec["code"]
    rows = [list_row(pms_id=f"{code}17", given_name=main[0], family_name=main[1],
                     mobile_phone=main[2], email=email, address_line1=f"1 {slug} Road"),
            list_row(pms_id=f"{code}18", given_name=checklist[0], family_name=checklist[1],
                     mobile_phone=checklist[2]),
            list_row(pms_id=f"{code}19", given_name=twin[0], family_name=twin[1],
                     date_of_birth="2001-04-04", mobile_phone=twin[2]),
            list_row(pms_id="P1", given_name=shared[0], family_name=shared[1],
                     mobile_phone=shared[2])]
    folder = tmp_path / slug
    folder.mkdir()
    source = str(write_list(folder / "list.csv", rows))
    sync_patient_list(practice=practice, source=source, actor=ACTOR)
    # So that "Sync now" queues a run.
    schedule_nightly_sync(actor=ACTOR, practice=practice, source=source)
    patient = Patient.objects.get(practice=practice, pms_id=f"{code}17")
    assert (patient.mobile_phone, patient.email) == (main[2], email)
    item = ReviewItem.objects.get(practice=practice, kind="ambiguous_match")
    listed = Patient.objects.get(practice=practice, pms_id=f"{code}19")
    results = [result_row(f"{code}R1", patient.pms_id, spec["automatic"]),
               result_row(f"{code}R2", f"{code}18", *spec["checklist"])]
    report = sync_results(practice=practice, actor=ACTOR,
                          source=str(write_list(folder / "results.csv", results, RESULT_COLUMNS)))
    assert report.errors == []
    group = ResultGroup.objects.select_related("sequence", "template").get(practice=practice,
                                                                           patient=patient)
    checklist_group = ResultGroup.objects.get(practice=practice, patient__pms_id=f"{code}18")
    assert checklist_group.disposition == ResultGroup.Disposition.CHECKLIST
    assert group.sequence.state == Sequence.State.TO_ACTION_PAUSED
    bulk_template = save_template(actor=ACTOR, practice=practice, name=f"{slug} winter clinic",
                                  channel="sms",
                                  body="Hello {first_name}, the winter clinic is open.")
    bulk = create_bulk(actor=creator.user.email, practice=practice, template=bulk_template,
                       recipient_filter={"status": ["active"]})
    assert bulk.approval_needed
    return World(
        practice=practice, admin=admin, creator=creator, patient=patient,
        shared=Patient.objects.get(practice=practice, pms_id="P1"),
        pair=(listed.id, twins[0].id), group=group, checklist=checklist_group,
        task=StaffTask.objects.create(practice=practice, patient=patient, group=group,
                                      sequence=group.sequence, kind=StaffTask.Kind.CALL,
                                      reason=f"{slug}: call about results",
                                      idempotency_key=f"{slug}:call:1"),
        message=send_message(actor=ACTOR, patient=patient, channel="sms",
                             body="Please call the surgery."),
        request=add_patient_request(actor=ACTOR, patient=patient,
                                    reason=f"{slug}: repeat prescription"),
        run=SyncRun.objects.get(practice=practice), item=item, template=group.template,
        bulk_template=bulk_template, bulk=bulk,
        token_prefix=create_token(actor=ACTOR, practice=practice, name=f"{slug} lab",
                                  role="reception")[0].prefix,
        secrets=(slug, code, email, *(name for person in spec["people"] for name in person[:2]),
                 *(person[2] for person in spec["people"])))


@pytest.fixture
def worlds(db, tmp_path, settings):
    settings.PRACTICESYNC_BULK_APPROVAL_OVER = APPROVAL_OVER
    return build_world("alpha", tmp_path), build_world("bravo", tmp_path)


# What belongs to a practice: every row of every model that leads to it through foreign keys
# (the shortest way), and the staff users who are its members.

def _practice_path(model, depth=3) -> str | None:
    paths = [(model, "")]
    for _ in range(depth):
        found = []
        for current, path in paths:
            for f in current._meta.concrete_fields:
                if not f.many_to_one or f.related_model is None:
                    continue
                here = f"{path}{f.name}"
                if f.related_model is Practice:
                    return here
                if f.related_model is get_user_model():
                    found.append((Membership, f"{here}__memberships__"))
                else:
                    found.append((f.related_model, f"{here}__"))
        paths = found
    return None


def practice_state(practice) -> dict:
    """Every row that belongs to `practice`, as values: equal before and after means that
    nothing of the practice changed."""
    state = {"practice": list(Practice.objects.filter(pk=practice.pk).values()),
             "users": list(get_user_model().objects.filter(memberships__practice=practice)
                           .order_by("pk").values()),
             "sync_now_waiting": sync_now_waiting(practice)}
    for model in django_apps.get_models(include_auto_created=True):
        if (path := _practice_path(model)) is not None:
            state[model._meta.label] = list(model.objects.filter(**{path: practice})
                                            .distinct().order_by("pk").values())
    return state


def test_the_state_covers_what_a_walk_could_change(worlds):
    _, b = worlds
    state = practice_state(b.practice)
    for label in ("audit.AuditEvent", "outreach.Message", "outreach.Sequence", "outreach.StaffTask",
                  "outreach.Step", "outreach.BulkMessage", "outreach.MessageTemplate",
                  "patients.Patient", "patients.PatientRequest", "patients.ReviewItem",
                  "patients.ReviewItem_patients", "patients.SyncRun", "results.ResultGroup",
                  "results.Result", "practicesync_api.ApiToken", "practices.Membership",
                  "otp_totp.TOTPDevice"):
        assert label in state, label
    assert state["outreach.StaffTask"] and state["patients.ReviewItem_patients"]


# --- the URLs ---

@dataclass(frozen=True)
class Route:
    name: str
    route: str
    kwargs: tuple[str, ...]


def all_routes(resolver=None, prefix="", namespaces=(), kwargs=()) -> list[Route]:
    """Every URL pattern, through nested includes, with its full route and parameters."""
    found = []
    for entry in (resolver or get_resolver()).url_patterns:
        pattern = entry.pattern
        names = (*kwargs, *(getattr(pattern, "converters", None)
                            or pattern.regex.groupindex))
        if isinstance(entry, URLResolver):
            found += all_routes(entry, prefix + str(pattern),
                                (*namespaces, entry.namespace) if entry.namespace else namespaces,
                                names)
        else:
            found.append(Route(":".join((*namespaces, entry.name or "?")), prefix + str(pattern),
                               tuple(names)))
    return found


def practice_routes() -> list[Route]:
    return [r for r in all_routes() if "practice" in r.kwargs]


# Parameters that name one of the practice's objects, and how a world names its own.
OBJECT_KWARGS = {
    "pms_id": lambda w: [w.patient.pms_id],
    "group_id": lambda w: [w.group.id, w.checklist.id],
    "task_id": lambda w: [w.task.id],
    "request_id": lambda w: [w.request.id],
    "run_id": lambda w: [w.run.id],
    "item_id": lambda w: [w.item.id],
    "action_key": lambda w: [w.template.action_key],
    "bulk_id": lambda w: [w.bulk.id],
}
# Parameters that pick what to do, from the views' own tables.
CHOICE_KWARGS = {
    "event": [str(e) for e in STAFF_EVENTS],
    "how": list(RESOLUTION_WORDS),
    "section": list(SECTIONS),
    "position": [1],
}
# An object that exists nowhere, of each kind of parameter.
NOWHERE = {"pms_id": "NO-SUCH-PATIENT", "action_key": "no-such-action"}
NOWHERE_ID = 987654321
# Outside /p/<practice>/: the API has its own walk (tests/test_api.py), Django's admin is
# closed to practice staff, the webhooks check the provider's signature, and the rest are
# the home page and the user's own login and two-step login pages (tested below).
NON_PRACTICE_ROUTES = {"home", "login", "logout", "mfa", "mfa_enrol", "mfa_verify",
                       "mfa_disable", "twilio-status", "twilio-inbound"}


def fillings(route: Route, world: World, slug: str) -> list[dict]:
    """The route's parameters at practice `slug` with `world`'s objects, one set for each
    combination of the values given for them."""
    options = []
    for name in route.kwargs:
        if name == "practice":
            options.append([slug])
        elif name in OBJECT_KWARGS:
            options.append(OBJECT_KWARGS[name](world))
        elif name in CHOICE_KWARGS:
            options.append(CHOICE_KWARGS[name])
        else:
            pytest.fail(f"new URL parameter {name!r} in {route.name} ({route.route}): give the "
                        f"isolation walk a bravo object for it (OBJECT_KWARGS) or its choices "
                        f"(CHOICE_KWARGS)")
    return [dict(zip(route.kwargs, values, strict=True))
            for values in itertools.product(*options)]


def filled(route: Route, world: World, slug: str) -> list[str]:
    return [reverse(route.name, kwargs=kwargs) for kwargs in fillings(route, world, slug)]


def nowhere(route: Route, kwargs: dict) -> str:
    """The same URL with objects that exist nowhere in place of the world's."""
    return reverse(route.name, kwargs={
        name: NOWHERE.get(name, NOWHERE_ID) if name in OBJECT_KWARGS else value
        for name, value in kwargs.items()})


def has_object(route: Route) -> bool:
    return any(name in OBJECT_KWARGS for name in route.kwargs)


def form_data(w: World) -> dict:
    """Plausible input for every form of the dashboard, naming `w`'s objects."""
    return {
        "channel": "sms", "body": "Please call the surgery.", "subject": "From the surgery",
        "note": "done by phone", "reason": "checked with the patient", "dob_checked": "yes",
        "pair": f"{w.pair[0]}:{w.pair[1]}", "position": "1", "delay_days": "1",
        "not_booked": "on", "auto_start": "on", "template": str(w.bulk_template.id),
        "status": "active", "count": "1", "checked": "on", "again": "on", "batch": "all",
        "name": "walk", "back": "patient", "show": "done", "pms_ids": w.patient.pms_id,
        "request-reason": "repeat prescription", "request-assigned_to": str(w.admin.id),
        "permission-granted_by": "Dr Walk", "permission-dpia_ref": "DPIA-W",
        "revoke-reason": "walk", "schedule-at": "03:00", "schedule-fmt": "csv",
        "schedule-source": "/nonexistent/list.csv", "window-send_days": ["1", "2", "3"],
        "window-send_from": "09:00", "window-send_until": "17:00",
        "window-sends_per_hour": "10", "ages-min_age_sms": "12", "ages-teen_until": "15",
        "stop-reason": "walk", "stop-confirm": "on", "resume-reason": "walk",
        "links-booking_url": "https://book.example.org/walk",
        "links-video_base_url": "https://video.example.org/walk/", "hl7-ack_mode": "original",
        "hl7-pms_id_system": "",
    }


def body_of(response) -> str:
    content = (b"".join(response.streaming_content) if response.streaming
               else response.content)
    return content.decode() + " ".join(c.value for c in response.cookies.values())


def leaked(text: str, world: World, *, but=()) -> list[str]:
    text = text.casefold()
    return [s for s in world.secrets if s not in but and s.casefold() in text]


def member_of(practice, role) -> Client:
    email = f"{role}@{practice.slug}.example"
    membership = (Membership.objects.filter(practice=practice, user__username=email).first()
                  or add_staff(actor=ACTOR, practice=practice, email=email, role=role))
    return log_in(Client(), membership.user)


ROLES = [r.value for r in Membership.Role]


def test_every_practice_url_has_parameters_the_walk_can_fill(worlds):
    a, b = worlds
    routes = practice_routes()
    assert len(routes) >= 40 and {"patient", "bulk_approve", "review_resolve"} <= {
        r.name for r in routes}
    for route in routes:
        assert filled(route, b, b.practice.slug), route
    others = {r.name for r in all_routes() if "practice" not in r.kwargs
              and not r.route.startswith(("admin/", "api/"))}
    assert others == NON_PRACTICE_ROUTES, (
        f"a URL outside /p/<practice>/ was added or removed: {others ^ NON_PRACTICE_ROUTES}; "
        f"check that it shows and changes only what the logged-in user may, then list it")


def test_bravos_own_admin_reaches_every_url_the_walk_uses(worlds):
    """The walk's ids and form data are real: bravo's own admin gets no 404 from them, and
    the actions change bravo's data. So the 404s below come from the membership checks."""
    _, b = worlds
    client = log_in(Client(), b.admin.user)
    actions, changed = set(), set()
    for route in practice_routes():
        for method in ("get", "post"):
            statuses = []
            for url in filled(route, b, b.practice.slug):
                before = practice_state(b.practice)
                response = getattr(client, method)(url, form_data(b) if method == "post" else {})
                statuses.append(response.status_code)
                if method == "get" and response.status_code == 405:
                    actions.add(route.name)
                if practice_state(b.practice) != before:
                    changed.add(route.name)
            assert set(statuses) != {404}, (method, route.name, statuses)
    # Every action did something, except the live text check (it only reads), and Release
    # and Correct, which need a first batch that went out (the worker sends it).
    assert actions - changed == {"template_step_check", "bulk_release", "bulk_correct"}
    assert len(actions) >= 15


@pytest.mark.parametrize("role", ROLES)
def test_a_member_of_alpha_gets_404_on_every_bravo_url(worlds, role):
    a, b = worlds
    client = member_of(a.practice, role)
    before = practice_state(b.practice)
    for route in practice_routes():
        for url in filled(route, b, b.practice.slug):
            for method in ("get", "post"):
                response = getattr(client, method)(url, form_data(b) if method == "post" else {})
                assert response.status_code == 404, (role, method, url, response.status_code)
                assert not leaked(body_of(response), b), (role, method, url)
            assert practice_state(b.practice) == before, (role, url)


@pytest.mark.parametrize("role", ROLES)
def test_alphas_own_urls_with_bravos_ids_are_404(worlds, role):
    """Bravo's objects through alpha's slug look exactly like objects that do not exist: 404
    (a member without the page's role gets 403 whatever the id; a GET of an action, 405)."""
    a, b = worlds
    client = member_of(a.practice, role)
    before = practice_state(b.practice)
    routes = [r for r in practice_routes() if has_object(r)]
    assert len(routes) >= 20
    for route in routes:
        for kwargs in fillings(route, b, a.practice.slug):
            url = reverse(route.name, kwargs=kwargs)
            for method in ("get", "post"):
                data = form_data(b) if method == "post" else {}
                response = getattr(client, method)(url, data)
                status = response.status_code
                assert status == getattr(client, method)(nowhere(route, kwargs), data).status_code, (
                    role, method, url, status)
                assert status in (403, 404, 405), (role, method, url, status)
                if role == "admin":
                    assert status == 404 or (method == "get" and status == 405), (
                        method, url, status)
                assert not leaked(body_of(response), b), (role, method, url)
            assert practice_state(b.practice) == before, (role, url)


def test_alphas_own_objects_with_bravos_ids_in_the_form_change_nothing_of_bravos(worlds):
    """Alpha's admin on alpha's own pages and objects, with bravo's ids wherever a form or a
    query names an object (a template, a review pair, a member to assign, PMS ids)."""
    a, b = worlds
    client = log_in(Client(), a.admin.user)
    before = practice_state(b.practice)
    data = form_data(b)
    for route in practice_routes():
        for url in filled(route, a, a.practice.slug):
            for method in ("get", "post"):
                response = getattr(client, method)(url, data)
                # The PMS id is the user's own input, shown back in filter forms.
                found = leaked(body_of(response), b, but=(WORLDS["bravo"]["code"],))
                assert not found, (method, url, found)
            assert practice_state(b.practice) == before, url


# --- outside /p/<practice>/: home, the practice switcher, the user's own pages, Django admin ---

def test_home_lists_only_the_users_own_practices(worlds):
    a, b = worlds
    alone = log_in(Client(), a.admin.user)
    response = alone.get("/")
    assert response.status_code == 302 and response["Location"] == f"/p/{a.practice.slug}/patients/"
    charlie = make_practice(slug="charlie", pms="bestpractice")
    add_staff(actor=ACTOR, practice=charlie, email=a.admin.user.email, role="reception")
    html = alone.get("/").content.decode()
    assert 'href="/p/alpha/patients/"' in html and 'href="/p/charlie/patients/"' in html
    assert not leaked(html, b) and "/p/bravo/" not in html


def test_the_practice_switcher_never_offers_a_practice_the_user_is_not_in(worlds):
    a, b = worlds
    client = log_in(Client(), a.admin.user)
    html = client.get(f"/p/{a.practice.slug}/results/").content.decode()
    assert "Switch practice" not in html and not leaked(html, b)
    charlie = make_practice(slug="charlie", pms="bestpractice")
    add_staff(actor=ACTOR, practice=charlie, email=a.admin.user.email, role="reception")
    for route in practice_routes():
        for url in filled(route, a, a.practice.slug):
            response = client.get(url)
            if response.status_code != 200 or response.streaming:
                continue
            html = response.content.decode()
            if "<html" in html:
                assert "Switch practice" in html and "/p/charlie/" in html, url
            assert not leaked(html, b) and "/p/bravo/" not in html, url


def test_the_account_pages_act_only_on_the_logged_in_user(worlds):
    """Whatever a form names (another user's id or email), the two-step login pages read and
    change the logged-in user's own devices only."""
    a, b = worlds
    TOTPDevice.objects.create(user=b.admin.user, name="phone", confirmed=True)
    reception = add_staff(actor=ACTOR, practice=a.practice, email="reception@alpha.example",
                          role="reception").user
    client = log_in(Client(), reception)
    before = practice_state(b.practice)
    data = {"code": "123456", "user": b.admin.user.id, "user_id": b.admin.user.id,
            "email": b.admin.user.email, "username": b.admin.user.username,
            "device_id": TOTPDevice.objects.get(user=b.admin.user).id}
    routes = [r for r in all_routes() if r.route.startswith("account/")]
    assert {r.name for r in routes} == {"mfa", "mfa_enrol", "mfa_verify", "mfa_disable"}
    for route in routes:
        for method in ("get", "post"):
            response = getattr(client, method)(reverse(route.name), data)
            assert response.status_code in (200, 302, 405), (method, route.name)
            assert not leaked(body_of(response), b), (method, route.name)
    assert practice_state(b.practice) == before
    # The walk's "disable" turned off the reception user's own two-step login.
    assert not TOTPDevice.objects.filter(user=reception, confirmed=True).exists()
    assert TOTPDevice.objects.filter(user=b.admin.user, confirmed=True).exists()


def test_django_admin_is_closed_to_practice_staff(worlds):
    a, b = worlds
    client = log_in(Client(), a.admin.user)
    for url in ("/admin/", "/admin/patients/patient/", f"/admin/patients/patient/{b.patient.id}/change/",
                "/admin/audit/auditevent/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url


# --- the CLI: alpha's slug with bravo's objects ------------------------------------------------

def practice_subcommands() -> list[tuple[str, ...]]:
    """Every `practicesync` subcommand (through nested sub-parsers) that takes --practice."""
    def leaves(parser, path):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for action in subs:
            for name, sub in action.choices.items():
                yield from leaves(sub, (*path, name))

    found = []
    for name, app in get_commands().items():
        if app.startswith("practicesync"):
            parser = load_command_class(app, name).create_parser("practicesync", name)
            found += [path for path, leaf in leaves(parser, (name,))
                      if any("--practice" in a.option_strings for a in leaf._actions)]
    return found


def refusals(a: World, b: World) -> dict[tuple[str, ...], list[list[str]]]:
    """For each subcommand that names an object: alpha's slug with bravo's objects, which
    must be refused (exit 1 or 2). The first of each names only bravo's objects, so at
    bravo's slug it works (the control)."""
    at_a = ["--practice", a.practice.slug]
    email, body = b.admin.user.email, "Please call the surgery."
    return {
        ("apitoken", "revoke"): [[*at_a, "--prefix", b.token_prefix]],
        ("bulk", "template", "save"): [[*at_a, "--name", "walk", "--channel", "sms", "--body",
                                        body, "--as", email]],
        ("bulk", "preview"): [[*at_a, "--template", b.bulk_template.name]],
        ("bulk", "send"): [[*at_a, "--template", b.bulk_template.name, "--confirm", "--again"],
                           [*at_a, "--template", a.bulk_template.name, "--confirm", "--again",
                            "--as", email]],
        ("bulk", "status"): [[*at_a, "--bulk", str(b.bulk.id)]],
        **{("bulk", step): [[*at_a, "--bulk", str(b.bulk.id)],
                            [*at_a, "--bulk", str(a.bulk.id), "--as", email]]
           for step in ("approve", "release", "halt")},
        ("bulk", "correct"): [[*at_a, "--bulk", str(b.bulk.id), "--template", b.bulk_template.name],
                              [*at_a, "--bulk", str(b.bulk.id), "--template", a.bulk_template.name],
                              [*at_a, "--bulk", str(a.bulk.id), "--template", b.bulk_template.name]],
        ("message", "send"): [[*at_a, "--patient", b.patient.pms_id, "--channel", "sms", "--body",
                               body]],
        ("video", "invite"): [[*at_a, "--patient", b.patient.pms_id, "--channel", "sms"]],
        **{("outreach", str(event)): [[*at_a, "--group", str(b.group.id)],
                                      [*at_a, "--group", str(b.checklist.id)]]
           for event in STAFF_EVENTS},
        ("outreach", "task-done"): [[*at_a, "--task", str(b.task.id)]],
        ("outreach", "opt-out"): [[*at_a, "--patient", b.patient.pms_id, "--channel", "sms"]],
        ("outreach", "steps"): [[*at_a, "--action-key", b.template.action_key]],
        ("outreach", "step"): [[*at_a, "--action-key", b.template.action_key, "--position", "1",
                                "--channel", "sms", "--delay-days", "1", "--body", body]],
        ("patients", "not-same"): [[*at_a, "--pms-id", "P1", "--patient-id", str(b.patient.id)]],
        ("patients", "erase"): [[*at_a, "--pms-id", b.patient.pms_id, "--reason", "walk"]],
        ("results", "checklist-done"): [[*at_a, "--group", str(b.checklist.id)]],
        ("results", "template"): [[*at_a, "--action-key", b.template.action_key, "--auto-start",
                                   "on"]],
        ("staff", "mfa-reset"): [[*at_a, "--email", email]],
    }


def own_data(a: World, b: World, folder) -> dict[tuple[str, ...], list[list[str]]]:
    """Subcommands that read bravo's PMS ids as data at alpha: they may work, on alpha's own
    patients only (none has these ids)."""
    at_a = ["--practice", a.practice.slug]
    results = write_list(folder / "results.csv",
                         [result_row("X1", b.patient.pms_id, WORLDS["alpha"]["automatic"])],
                         RESULT_COLUMNS)
    bookings = write_list(folder / "appointments.csv",
                          [{"appointment_id": "AP1", "pms_id": b.patient.pms_id,
                            "starts_at": "2026-12-01T09:00", "status": "booked"}],
                          ("appointment_id", "pms_id", "starts_at", "status"))
    return {
        ("bulk", "preview"): [[*at_a, "--template", a.bulk_template.name, "--pms-id",
                               b.patient.pms_id]],
        ("bulk", "send"): [[*at_a, "--template", a.bulk_template.name, "--pms-id",
                            b.patient.pms_id, "--confirm", "--again"]],
        ("results", "sync"): [[*at_a, "--source", str(results)]],
        ("appointments", "sync"): [[*at_a, "--source", str(bookings)]],
    }


# Subcommands with --practice that name no object of a practice: they act on the named
# practice as a whole (and are tested for isolation where they read a list or export).
NO_OBJECT = {
    ("accounts", "import"), ("apitoken", "create"), ("apitoken", "list"),
    ("appointments", "poll"), ("bulk", "template", "list"), ("export",), ("hl7", "reprocess"),
    ("mllp",), ("outreach", "tick"), ("outreach", "tasks"), ("outreach", "policy"),
    ("patients", "sync"), ("practice", "permit"), ("practice", "schedule"), ("practice", "hl7"),
    ("results", "poll"), ("sync", "now"), ("retention", "set"), ("retention", "purge"),
    # Adds a user (by email) to this practice: a user of several practices is by design.
    ("staff", "add"),
}
# Bravo's own admin cannot do these to bravo's bulk either: nothing of it has gone out yet.
# Bravo's own patient is still active on its list: erasure is refused to bravo's admin too.
CONTROL_REFUSED = {("bulk", "release"), ("bulk", "correct"), ("patients", "erase")}


def test_every_cli_subcommand_with_a_practice_is_walked(worlds, tmp_path):
    a, b = worlds
    walked = set(refusals(a, b)) | set(own_data(a, b, tmp_path))
    for path in practice_subcommands():
        assert (path in walked) != (path in NO_OBJECT), (
            f"`practicesync {' '.join(path)}` takes --practice: add it to the CLI isolation "
            f"walk (refusals, with bravo's objects) or, if it names no object, to NO_OBJECT")
    assert walked | NO_OBJECT == set(practice_subcommands())


def typed(argv, world: World) -> tuple[str, ...]:
    return tuple(s for s in world.secrets if any(s.casefold() in arg.casefold() for arg in argv))


def test_the_cli_refuses_bravos_objects_at_alpha(worlds, tmp_path):
    a, b = worlds
    before = practice_state(b.practice)
    cases = refusals(a, b)
    for path, argvs in cases.items():
        for argv in argvs:
            code, out = run(*path, *argv)
            assert code in (1, 2), (path, argv, code, out)
            # Refused for what it names, not for how it was typed.
            assert not out.startswith("Error:"), (path, argv, out)
            # An error may repeat what was typed (an email, a template's name), nothing more.
            assert not leaked(out, b, but=typed(argv, b)), (path, argv, out)
            assert practice_state(b.practice) == before, (path, argv)
    for path, argvs in own_data(a, b, tmp_path).items():
        for argv in argvs:
            code, out = run(*path, *argv)
            assert not out.startswith("Error:"), (path, argv, out)
            # The report may name the PMS id it was given and did not find.
            assert not leaked(out, b, but=(*typed(argv, b), WORLDS["bravo"]["code"])), (
                path, argv, out)
            assert practice_state(b.practice) == before, (path, argv)
    # The control: the same commands at bravo's own slug find bravo's objects.
    for path, argvs in cases.items():
        argv = [b.practice.slug if arg == a.practice.slug else arg for arg in argvs[0]]
        code, out = run(*path, *argv)
        assert (code == 0) != (path in CONTROL_REFUSED), (path, argv, code, out)


def test_message_send_to_a_pms_id_both_practices_use_goes_to_alphas_patient(worlds):
    a, b = worlds
    before = practice_state(b.practice)
    code, data = run_json("message", "send", "--practice", a.practice.slug, "--patient", "P1",
                          "--channel", "sms", "--body", "Please call the surgery.")
    assert code == 0 and data["to"] == a.shared.mobile_phone != b.shared.mobile_phone
    assert Message.objects.get(id=data["message_id"]).patient == a.shared
    assert practice_state(b.practice) == before
