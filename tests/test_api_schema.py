"""Schemathesis against the API's own OpenAPI document (/api/openapi.json): every operation
called with generated (valid and invalid) input, by an admin token of a practice with
patients, results, groups and messages. No answer may be a server error, and every answer
must be one the document describes, in the shape it describes.

Examples per operation and kind of input: 25, or 300 with HYPOTHESIS_PROFILE=soak
(`make soak`)."""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from practicesync.api import actions
from practicesync.connectors.csvfile.results import RESULT_COLUMNS
from practicesync.outreach.messaging import send_message
from practicesync.results.importer import sync_results
from tests.factories import ACTOR, make_patient, make_practice, write_list
from tests.test_outreach_pages import result

EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "soak" else 25


@pytest.fixture
def api_schema(db, settings, tmp_path):
    # Enough budget that the rate limit (429) does not hide the operations behind it.
    settings.PRACTICESYNC_API_RATE_PER_MINUTE = 10**9
    practice = make_practice(slug="harbour", pms="bestpractice")
    ann = make_patient(practice, pms_id="P1", given_name="Ann", family_name="Lee",
                       mobile_phone="+61412345678", email="ann@example.org")
    make_patient(practice, pms_id="P2", given_name="Bo", family_name="Tran",
                 mobile_phone="+61412345679")
    path = write_list(tmp_path / "results.csv",
                      [result("R1"), result("R2", pms_id="P2", action="Nurse to Advise")],
                      RESULT_COLUMNS)
    assert sync_results(practice=practice, source=str(path), actor=ACTOR).errors == []
    send_message(actor=ACTOR, patient=ann, channel="sms", body="Hello", subject="")
    _, secret = actions.create_token(actor=ACTOR, practice=practice, name="fuzz", role="admin")

    from practicesync.wsgi import application

    # As Django's test client does: the test's transaction holds the connection, which
    # the request signals would otherwise close (PostgreSQL) between requests.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        loaded = schemathesis.openapi.from_wsgi("/api/openapi.json", application)
        yield loaded, {"Authorization": f"Bearer {secret}"}, practice.slug
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


CHECKS = {
    GenerationMode.POSITIVE: [not_a_server_error, status_code_conformance,
                              content_type_conformance, response_schema_conformance],
    # Invalid input includes path values the URLconf does not route at all (a line break in
    # a PMS id): Django's own HTML 404 answers those, not the API, so the media type is not
    # checked; the status still is.
    GenerationMode.NEGATIVE: [not_a_server_error, status_code_conformance,
                              response_schema_conformance],
}


def _fuzz(operation, mode: GenerationMode, headers: dict, slug: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode, headers=headers,
                                      path_parameters={"slug": slug}))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case):
        case.call_and_validate(checks=CHECKS[mode])

    call()


@pytest.mark.slow
def test_no_server_errors_and_every_answer_is_documented(api_schema):
    """Each operation, with valid and with invalid input. (Schemathesis' own pytest plugin,
    `from_fixture`, does not run on this pytest, so the cases are drawn here.)"""
    loaded, headers, slug = api_schema
    failures = []
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, headers, slug)
            except Unsatisfiable:
                pass    # no invalid input exists for it (e.g. POST sync-runs takes none)
            except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - all are tried and reported
                failures.append(f"{operation.label} ({mode.value}): {e}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("method, path, body", [
    ("get", "patients?q=A%00", None),
    ("get", "patients/P%001", None),
    ("get", "results?pms_id=%00", None),
    ("get", "groups?pms_id=%00", None),
    ("get", "messages?pms_id=%00", None),
    ("post", "messages", {"pms_id": "P1", "channel": "sms", "body": "Hi\x00"}),
    ("post", "appointments", {"appointments": [{"appointment_id": "A\x00", "pms_id": "P1"}]}),
])
def test_a_nul_in_any_text_is_invalid_input_not_a_server_error(api_schema, method, path, body):
    """PostgreSQL cannot compare or store text holding NUL: found by the fuzz on PostgreSQL."""
    from django.test import Client

    _, headers, slug = api_schema
    url = f"/api/practices/{slug}/{path}"
    client = Client(headers=headers)
    response = (client.get(url) if method == "get"
                else client.post(url, body, content_type="application/json"))
    assert response.status_code == 422, response.content
    assert response["Content-Type"] == "application/problem+json"
