"""The REST API (/api/): tokens per practice from the CLI, one practice per token (every
route walked with another practice's token: 404, no data, nothing changed), roles, the
per-token rate limit counted in the database, RFC 9457 problem details, and the reads and
writes: patients, results, groups, sequences, messages, appointments (Pause on Booking)
and sync runs. The API's rows are the export's rows."""

import datetime as dt
import json
import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django_tasks_db.models import DBTaskResult

from practicesync.api import actions, endpoints
from practicesync.api.auth import spend_request
from practicesync.api.endpoints import api
from practicesync.api.models import ApiToken
from practicesync.audit.models import AuditEvent
from practicesync.outreach.messaging import send_message
from practicesync.outreach.models import Message, OutboxEntry, Sequence
from practicesync.patients.models import Patient, SyncRun
from practicesync.practices import actions as practice_actions
from practicesync.practices.export import build_export
from practicesync.practices.models import Practice
from practicesync.results.models import ResultGroup
from tests.cli import run, run_json
from tests.factories import ACTOR, NHS, list_row, make_patient, make_practice, write_list
from tests.test_outreach_pages import follow_ups

UTC = dt.UTC
PROBLEM = "application/problem+json"


@pytest.fixture
def harbour(au_practice, tmp_path):
    return follow_ups(au_practice, tmp_path)


@pytest.fixture
def group(harbour):
    group = ResultGroup.objects.get(practice=harbour, patient__pms_id="P1")
    assert group.sequence.state == Sequence.State.TO_ACTION_PAUSED
    return group


def token(practice, role="admin", name=None) -> str:
    return actions.create_token(actor=ACTOR, practice=practice, name=name or f"{role}-bridge",
                                role=role)[1]


class Api:
    """The test client with a bearer token; JSON in, (status, JSON body, response) out."""

    def __init__(self, secret: str | None, slug: str):
        self.client, self.secret, self.slug = Client(), secret, slug

    def url(self, path: str) -> str:
        return f"/api/practices/{self.slug}/{path}"

    def call(self, method: str, path: str, body=None, *, raw_url=False):
        headers = {"Authorization": f"Bearer {self.secret}"} if self.secret else {}
        url = path if raw_url else self.url(path)
        if method == "get":
            response = self.client.get(url, body, headers=headers)
        else:
            response = getattr(self.client, method)(
                url, json.dumps(body) if body is not None else None,
                content_type="application/json", headers=headers)
        data = json.loads(response.content) if response.content else None
        return response.status_code, data, response

    def get(self, path, params=None):
        return self.call("get", path, params)

    def post(self, path, body=None):
        return self.call("post", path, body)


@pytest.fixture
def admin(harbour):
    return Api(token(harbour, "admin", "pms-bridge"), harbour.slug)


def assert_problem(response, status: int, kind: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(PROBLEM)
    body = json.loads(response.content)
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status and body["instance"] == response.wsgi_request.path
    assert body["type"] == (f"urn:practicesync:problem:{kind}" if kind else "about:blank")
    return body


# --- tokens: the CLI ------------------------------------------------------------------------

def test_token_create_list_revoke_from_the_cli(harbour):
    code, made = run_json("apitoken", "create", "--practice", harbour.slug, "--name", "pms bridge",
                          "--role", "clinician")
    assert code == 0 and made["role"] == "clinician" and made["name"] == "pms bridge"
    secret = made["token"]
    assert re.fullmatch(rf"psk_{made['prefix']}_[\w-]{{40,}}", secret)
    stored = ApiToken.objects.get(prefix=made["prefix"])
    # Only the hash is kept: the secret is nowhere in the row.
    assert secret.split("_", 2)[2] not in json.dumps(
        [str(getattr(stored, f.attname)) for f in ApiToken._meta.fields])
    client = Api(secret, harbour.slug)
    assert client.get("patients")[0] == 200
    stored.refresh_from_db()
    assert stored.last_used_at is not None

    code, listed = run_json("apitoken", "list", "--practice", harbour.slug)
    assert code == 0 and [t["prefix"] for t in listed["tokens"]] == [made["prefix"]]
    assert "token" not in listed["tokens"][0] and secret not in json.dumps(listed)

    code, revoked = run_json("apitoken", "revoke", "--practice", harbour.slug,
                             "--prefix", made["prefix"])
    assert code == 0 and revoked["revoked_at"]
    assert_problem(client.get("patients")[2], 401, "unauthenticated")
    audited = list(AuditEvent.objects.filter(action__startswith="api_token.").order_by("id")
                   .values_list("action", "actor", "practice"))
    assert [a for a, _, _ in audited] == ["api_token.created", "api_token.listed",
                                          "api_token.revoked"]
    assert all(actor.startswith("cli:") and p == harbour.id for _, actor, p in audited)
    assert secret not in json.dumps(list(AuditEvent.objects.values("detail", "why")))
    # Human output shows the secret once, too.
    code, out = run("apitoken", "create", "--practice", harbour.slug, "--name", "second",
                    "--role", "reception")
    assert code == 0 and re.search(r"^psk_\w{12}_", out, re.M)


@pytest.mark.parametrize("args, message", [
    (("create", "--practice", "nowhere", "--name", "x", "--role", "admin"), "no practice"),
    (("create", "--practice", "harbour", "--name", " ", "--role", "admin"), "needs a name"),
    (("create", "--practice", "harbour", "--name", "pms-bridge", "--role", "admin"),
     "already has a token"),
    (("revoke", "--practice", "harbour", "--prefix", "000000000000"), "no token"),
])
def test_token_usage_errors_exit_2(admin, args, message):
    code, out = run("apitoken", *args)
    assert code == 2 and message in out


def test_a_revoked_name_can_be_used_again(harbour):
    first = ApiToken.objects.get(prefix=token(harbour, name="bridge").split("_")[1])
    actions.revoke_token(actor=ACTOR, practice=harbour, prefix=first.prefix)
    assert Api(token(harbour, name="bridge"), harbour.slug).get("patients")[0] == 200


# --- auth, scope, roles, rate limit, problems ------------------------------------------------

@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic abc",
                                    "Bearer psk_000000000000_secret"])
def test_missing_or_invalid_token_is_401_problem(harbour, header):
    client = Client()
    response = client.get(f"/api/practices/{harbour.slug}/patients",
                          headers={"Authorization": header} if header else {})
    body = assert_problem(response, 401, "unauthenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Ann" not in json.dumps(body)


def test_a_wrong_secret_for_a_real_prefix_is_401(admin):
    prefix = admin.secret.split("_")[1]
    wrong = Api(f"psk_{prefix}_{'x' * 43}", admin.slug)
    assert_problem(wrong.get("patients")[2], 401, "unauthenticated")


def _fill(path: str, values: dict) -> str:
    return re.sub(r"{(\w+)}", lambda m: str(values[m.group(1)]), path)


def _routes():
    """Every practice-scoped operation the API has, read from its OpenAPI schema, so an
    endpoint added later is walked too."""
    paths = api.get_openapi_schema()["paths"]
    return sorted((method, path) for path, operations in paths.items()
                  if path.startswith("/api/practices/{slug}/") for method in operations)


# A valid body for each write, so a refusal is the scope's and not the body's. A new POST
# route fails here until it has one.
BODIES = {
    "/api/practices/{slug}/messages": {"pms_id": "P1", "channel": "sms", "body": "Hello"},
    "/api/practices/{slug}/appointments": {"appointments": [
        {"appointment_id": "A1", "pms_id": "P1", "starts_at": "2030-01-01T10:00:00+11:00",
         "status": "booked"}]},
    "/api/practices/{slug}/groups/{group_id}/sequence/{event}": None,
    "/api/practices/{slug}/sync-runs": None,
}


@pytest.fixture
def riverside(practice):
    """Another practice, with a patient of its own."""
    make_patient(practice, pms_id="R1", given_name="Rita", family_name="Rowe",
                 mobile_phone="+447700900123", email="rita@example.org")
    return practice


def test_every_route_with_another_practices_token_is_404_and_no_data(harbour, group, riverside):
    ann = Patient.objects.get(practice=harbour, pms_id="P1")
    message = send_message(actor=ACTOR, patient=ann, channel="sms", body="Hello {first_name}")
    run_id = run_json("sync", "now", "--practice", harbour.slug)[1]["run_id"]
    harbour_admin = Api(token(harbour), harbour.slug)
    Practice.objects.filter(id=harbour.id).update(list_source="/srv/harbour/list.csv")
    task_id = harbour_admin.post("sync-runs")[1]["task_id"]
    harbour_ids = {"slug": harbour.slug, "pms_id": "P1", "group_id": group.id, "event": "start",
                   "message_id": message.id, "run_id": run_id, "task_id": task_id}
    intruder = Api(token(riverside), riverside.slug)
    before = (AuditEvent.objects.filter(practice=harbour).count(), Message.objects.count(),
              Sequence.objects.get(id=group.sequence.id).state, DBTaskResult.objects.count())
    routes = _routes()
    assert len(routes) >= 14
    for method, path in routes:
        body = BODIES[path] if method == "post" else None
        # Harbour's slug with riverside's token; and riverside's own slug with harbour's ids.
        for slug in (harbour.slug, riverside.slug):
            ids = harbour_ids | {"slug": slug}
            if slug == riverside.slug and not set(re.findall(r"{(\w+)}", path)) - {"slug"}:
                continue  # riverside's own lists: its own data, checked elsewhere
            response = intruder.call(method, _fill(path, ids), body, raw_url=True)[2]
            problem = assert_problem(response, 404)
            text = response.content.decode()
            assert "Ann" not in text and "Lee" not in text and "ann@example.org" not in text, path
            assert problem["detail"] == "Not found at this practice."
    assert before == (AuditEvent.objects.filter(practice=harbour).count(), Message.objects.count(),
                      Sequence.objects.get(id=group.sequence.id).state,
                      DBTaskResult.objects.count())


def test_a_reception_token_may_not_run_a_sync_or_post_appointments(harbour, group):
    reception = Api(token(harbour, "reception"), harbour.slug)
    assert_problem(reception.post("sync-runs")[2], 403, "forbidden")
    assert_problem(reception.post("appointments", BODIES[
        "/api/practices/{slug}/appointments"])[2], 403, "forbidden")
    assert not DBTaskResult.objects.exists()
    # As on the dashboard, reception starts sequences and messages patients.
    assert reception.post(f"groups/{group.id}/sequence/start")[0] == 200
    assert reception.post("messages", {"pms_id": "P1", "channel": "email", "body": "Hi"})[0] == 201


def test_the_rate_limit_is_per_token_and_answers_429_with_retry_after(harbour, settings):
    settings.PRACTICESYNC_API_RATE_PER_MINUTE = 2
    first, second = Api(token(harbour, name="one"), harbour.slug), Api(token(harbour, name="two"),
                                                                       harbour.slug)
    assert [first.get("patients")[0] for _ in range(2)] == [200, 200]
    response = first.get("patients")[2]
    problem = assert_problem(response, 429, "rate-limited")
    assert 1 <= int(response["Retry-After"]) <= 60 and "items" not in problem
    assert second.get("patients")[0] == 200


def test_the_window_is_a_clock_minute_counted_in_the_row(harbour):
    row = ApiToken.objects.get(prefix=token(harbour).split("_")[1])
    start = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    spent = [spend_request(row, start + dt.timedelta(seconds=s), 3) for s in (0, 10, 20, 59)]
    assert spent == [True, True, True, False]
    assert spend_request(row, start + dt.timedelta(minutes=1), 3)  # a new window
    row.refresh_from_db()
    assert (row.window_start, row.window_count) == (start + dt.timedelta(minutes=1), 1)


def test_validation_errors_name_each_field_and_where_it_was(admin):
    status, body, response = admin.get("patients", {"limit": 0, "status": "asleep"})
    problem = assert_problem(response, 422, "validation")
    assert {(e["location"], e["field"]) for e in problem["errors"]} == {
        ("query", "limit"), ("query", "status")}
    problem = assert_problem(admin.post("messages", {"channel": "fax", "body": ""})[2], 422,
                             "validation")
    assert {(e["location"], e["field"]) for e in problem["errors"]} == {
        ("body", "payload.pms_id"), ("body", "payload.channel"), ("body", "payload.body")}
    assert_problem(admin.get("groups/not-a-number")[2], 422, "validation")


def test_a_server_error_is_a_500_problem_without_details(admin, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("Ann Lee 1980-01-02 traceback here")

    monkeypatch.setattr(endpoints, "_page", broken)
    response = admin.get("patients")[2]
    assert_problem(response, 500)
    assert "Ann" not in response.content.decode() and "Traceback" not in response.content.decode()
    assert "Ann" not in caplog.text and "RuntimeError" in caplog.text


# --- patients and results -------------------------------------------------------------------

def test_patients_search_filters_and_pages(harbour, admin):
    make_patient(harbour, pms_id="A/1", given_name="Dee", family_name="Adams", digital=True,
                 account_id="ACC1", nhs_number=NHS[0])
    status, page, _ = admin.get("patients", {"limit": 2})
    assert status == 200 and page["count"] == 4 and page["next_offset"] == 2
    assert [p["family_name"] for p in page["items"]] == ["Adams", "Lee"]
    _, rest, _ = admin.get("patients", {"limit": 2, "offset": 2})
    assert [p["family_name"] for p in rest["items"]] == ["Tran", "Ward"]
    assert rest["next_offset"] is None

    def found(**params):
        return [p["pms_id"] for p in admin.get("patients", params)[1]["items"]]

    assert found(q="tra") == ["P2"]
    assert found(q="P3") == ["P3"]
    assert found(q=f"{NHS[0][:3]} {NHS[0][3:6]} {NHS[0][6:]}") == ["A/1"]
    assert found(digital="true") == ["A/1"]
    assert found(status="deceased") == ["P3"]
    assert admin.get("patients", {"limit": 201})[0] == 422


def test_a_patient_by_a_pms_id_with_a_slash(harbour, admin):
    make_patient(harbour, pms_id="A/1/b", given_name="Dee", family_name="Adams")
    status, patient, _ = admin.get("patients/A/1/b")
    assert status == 200 and (patient["pms_id"], patient["given_name"]) == ("A/1/b", "Dee")
    assert_problem(admin.get("patients/A/1")[2], 404)


def test_results_and_groups_with_filters(harbour, admin, group):
    status, results, _ = admin.get("results", {"pms_id": "P1"})
    assert status == 200 and [r["result_id"] for r in results["items"]] == ["R1"]
    assert admin.get("results", {"eligible": "false"})[1]["count"] == 0
    _, groups, _ = admin.get("groups", {"disposition": "checklist"})
    assert [g["pms_id"] for g in groups["items"]] == ["P2"]
    _, groups, _ = admin.get("groups", {"sequence_state": "to_action_paused"})
    assert [g["id"] for g in groups["items"]] == [group.id]
    status, one, _ = admin.get(f"groups/{group.id}")
    assert status == 200 and one["sequence_state"] == "to_action_paused"


def _same(a: dict, b: dict) -> bool:
    """Equal, with datetimes compared as instants (the API writes UTC as Z, to the ms)."""
    def norm(v):
        if isinstance(v, str) and re.match(r"\d{4}-\d\d-\d\dT", v):
            return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).replace(microsecond=0)
        return v
    return a.keys() == b.keys() and all(norm(a[k]) == norm(b[k]) for k in a)


def test_api_rows_are_the_exports_rows(harbour, admin, group):
    admin.post(f"groups/{group.id}/sequence/start")
    admin.post("messages", {"pms_id": "P1", "channel": "email", "body": "Hi", "subject": "S"})
    run("sync", "now", "--practice", harbour.slug)
    export = {k: list(v) if not isinstance(v, dict | str) else v
              for k, v in build_export(harbour)}
    for key, path in (("patients", "patients"), ("results", "results"),
                      ("result_groups", "groups"), ("messages", "messages"),
                      ("sync_runs", "sync-runs")):
        rows = {r["id"]: r for r in admin.get(path)[1]["items"]}
        assert rows and rows.keys() == {r["id"] for r in export[key]}, key
        for row in export[key]:
            assert _same(rows[row["id"]], row), (key, rows[row["id"]], row)


# --- writes ---------------------------------------------------------------------------------

def test_sequence_start_through_the_api_is_audited_and_refused_when_it_cannot(harbour, admin,
                                                                              group):
    status, body, _ = admin.post(f"groups/{group.id}/sequence/start")
    assert status == 200 and body["sequence_state"] == "active"
    assert Sequence.objects.get(group=group).state == Sequence.State.ACTIVE
    event = AuditEvent.objects.get(action="sequence.active")
    assert (event.actor, event.patient.pms_id) == ("api:pms-bridge", "P1")
    problem = assert_problem(admin.post(f"groups/{group.id}/sequence/start")[2], 409,
                             "sequence-not-allowed")
    assert "cannot start a sequence that is active" in problem["detail"]
    checklist = ResultGroup.objects.get(practice=harbour, patient__pms_id="P2")
    assert_problem(admin.post(f"groups/{checklist.id}/sequence/start")[2], 409, "no-sequence")
    assert_problem(admin.post(f"groups/{group.id}/sequence/explode")[2], 422, "validation")


def test_a_message_sent_through_the_api_is_queued_and_reaches_the_outbox(harbour, admin):
    status, body, _ = admin.post("messages", {"pms_id": "P1", "channel": "sms",
                                              "body": "Hello {first_name}, please call us."})
    assert status == 201 and body["status"] == "queued" and body["to"] == "+61412345678"
    message = Message.objects.get(id=body["id"])
    assert (message.created_by, message.body) == ("api:pms-bridge", "Hello Ann, please call us.")
    assert AuditEvent.objects.get(action="message.queued").actor == "api:pms-bridge"
    assert run("outreach", "tick", "--now", message.not_before.isoformat())[0] == 0
    assert OutboxEntry.objects.filter(to="+61412345678").count() == 1
    status, body, _ = admin.get(f"messages/{message.id}")
    assert status == 200 and body["status"] == "sent"
    assert [m["id"] for m in admin.get("messages", {"status": "sent"})[1]["items"]] == [message.id]


def test_a_message_is_refused_as_the_patient_page_refuses_it(harbour, admin):
    problem = assert_problem(admin.post("messages", {"pms_id": "P3", "channel": "sms",
                                                     "body": "Hello"})[2], 409, "message-refused")
    assert problem["code"] == "deceased"
    assert AuditEvent.objects.get(action="message.refused").actor == "api:pms-bridge"
    problem = assert_problem(admin.post("messages", {"pms_id": "P404", "channel": "sms",
                                                     "body": "Hello"})[2], 422, "validation")
    assert problem["errors"][0]["field"] == "pms_id"
    assert not Message.objects.exists()


def test_a_booking_posted_to_the_api_pauses_the_running_sequence(harbour, admin, group):
    admin.post(f"groups/{group.id}/sequence/start")
    later = (dt.datetime.now(UTC) + dt.timedelta(days=3)).isoformat()
    status, body, _ = admin.post("appointments", {"appointments": [
        {"appointment_id": "APT1", "pms_id": "P1", "starts_at": later, "status": "booked"}]})
    assert status == 200 and (body["created"], body["sequences_paused"], body["errors"]) == (
        1, 1, [])
    assert Sequence.objects.get(group=group).state == Sequence.State.PAUSED_BOOKING
    assert AuditEvent.objects.get(action="appointment.created").actor == "api:pms-bridge"
    # Cancelled: resumed. A bad row alongside is reported by its place in the list.
    status, body, _ = admin.post("appointments", {"appointments": [
        {"appointment_id": "APT1", "pms_id": "P1", "starts_at": later, "status": "cancelled"},
        {"appointment_id": "APT2", "pms_id": "P1", "starts_at": later, "status": "maybe"}]})
    assert status == 207 and body["sequences_resumed"] == 1
    assert body["errors"] == [{"row": 2, "pms_id": "P1", "field": "status",
                               "message": "'maybe' is not booked, cancelled, dna or attended"}]
    assert Sequence.objects.get(group=group).state == Sequence.State.ACTIVE
    problem = assert_problem(admin.post("appointments", {"appointments": [
        {"appointment_id": "APT3", "pms_id": "P1", "starts_at": "tomorrow",
         "status": "booked"}]})[2], 422, "rows-rejected")
    assert [(e["row"], e["field"]) for e in problem["errors"]] == [(1, "starts_at")]


def test_appointments_and_sync_need_the_practices_permission(db):
    closed = make_practice(permitted=False)
    client = Api(token(closed), closed.slug)
    assert_problem(client.post("sync-runs")[2], 403, "sync-not-permitted")
    assert_problem(client.post("appointments", BODIES["/api/practices/{slug}/appointments"])[2],
                   403, "sync-not-permitted")
    assert not DBTaskResult.objects.exists()


def test_a_sync_asked_for_through_the_api_is_run_by_the_worker(transactional_db, practice,
                                                               tmp_path):
    path = write_list(tmp_path / "l.csv", [list_row(pms_id="P1"), list_row(pms_id="P2")])
    practice_actions.schedule_nightly_sync(actor=ACTOR, practice=practice, source=str(path))
    client = Api(token(practice, name="nightly-bridge"), practice.slug)
    status, queued, _ = client.post("sync-runs")
    assert status == 202 and queued["status"] == "READY"
    assert AuditEvent.objects.get(action="sync.queued").actor == "api:nightly-bridge"
    assert client.post("sync-runs")[1]["task_id"] == queued["task_id"]  # one run waits, once
    assert queued["task_url"] == client.url(f"sync-tasks/{queued['task_id']}")
    assert client.call("get", queued["task_url"], raw_url=True)[1]["sync_run_id"] is None
    assert run("worker", "--once")[0] == 0
    status, task, _ = client.call("get", queued["task_url"], raw_url=True)
    assert status == 200 and task["status"] == "SUCCESSFUL"
    sync_run = SyncRun.objects.get(id=task["sync_run_id"])
    assert (sync_run.triggered_by, sync_run.counts["created"]) == ("api:nightly-bridge", 2)
    status, body, _ = client.get(f"sync-runs/{sync_run.id}")
    assert status == 200 and body["status"] == "completed" and body["counts"]["created"] == 2
    assert [r["id"] for r in client.get("sync-runs")[1]["items"]] == [sync_run.id]
    # Another task's id (the worker's tick) is not a sync task: 404, not a server error.
    from practicesync.outreach.tasks import outreach_tick

    assert client.get(f"sync-tasks/{outreach_tick.enqueue().id}")[0] == 404


# --- OpenAPI and docs -----------------------------------------------------------------------

def test_openapi_json_lists_every_endpoint_and_its_refs_resolve(db):
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.") and schema["info"]["title"] == "practicesync API"
    registered = {(m.lower(), "/api/" + path.replace("{path:pms_id}", "{pms_id}")
                   .replace("{int:", "{").lstrip("/"))
                  for _, router in api._routers for path, view in router.path_operations.items()
                  for op in view.operations for m in op.methods}
    listed = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert registered and registered <= listed
    assert {("post", "/webhooks/twilio/status"), ("post", "/webhooks/twilio/inbound")} <= listed
    operation_ids = [op["operationId"] for p, ops in schema["paths"].items()
                     if p.startswith("/api/") for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schema)):
        assert ref in schema["components"]["schemas"], ref
    assert schema["components"]["securitySchemes"]["TokenAuth"]["scheme"] == "bearer"


def test_the_docs_page_loads_swagger_from_our_own_static_files(db):
    response = Client().get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html and "/api/openapi.json" in html
    assert not re.search(r"(https?:)?//[\w.-]+\.\w+/", html), "an external URL in the docs page"
    assert '"validatorUrl": null' in html
    for asset in ("ninja/swagger-ui-bundle.js", "ninja/swagger-ui.css", "ninja/swagger-ui-init.js"):
        assert finders.find(asset), asset
