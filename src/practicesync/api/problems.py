"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error the API returns has `type`, `title`, `status`, `detail` and `instance`; a
validation error adds `errors`, one per field with where it was (path, query, body). A
500 says only that something failed: no traceback, no exception text (it could hold
patient data), and the log gets the exception's class alone."""

import json
import logging
from http import HTTPStatus

from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpResponse
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
# Problem types of our own; plain HTTP errors are "about:blank" with the status's title.
TYPE = "urn:practicesync:problem:"


class Problem(Exception):
    """An error to answer with: the status, what went wrong (no patient details), an
    optional type name under TYPE, and extra members (`errors`, `code`...)."""

    def __init__(self, status: int, detail: str, *, kind: str | None = None,
                 title: str | None = None, **extra):
        super().__init__(detail)
        self.status, self.detail, self.kind, self.title, self.extra = (
            status, detail, kind, title, extra)


def problem_response(request, status: int, detail: str, *, kind: str | None = None,
                     title: str | None = None, **extra) -> HttpResponse:
    body = {"type": f"{TYPE}{kind}" if kind else "about:blank",
            "title": title or HTTPStatus(status).phrase, "status": status, "detail": detail,
            "instance": request.path, **extra}
    return HttpResponse(json.dumps(body, cls=DjangoJSONEncoder), status=status,
                        content_type=MEDIA_TYPE)


def _problem(request, exc: Problem):
    return problem_response(request, exc.status, exc.detail, kind=exc.kind, title=exc.title,
                            **exc.extra)


def field_errors(errors: list[dict]) -> list[dict]:
    """ninja's validation errors as {location, field, message, type}: the input value is
    never echoed back (it may be a patient's)."""
    return [{"location": e["loc"][0], "field": ".".join(str(p) for p in e["loc"][1:]),
             "message": e["msg"], "type": e["type"]} for e in errors]


def _validation(request, exc: ValidationError):
    return problem_response(request, 422, "The request has fields that are missing or invalid.",
                            kind="validation", title="Invalid request",
                            errors=field_errors(exc.errors))


def _http_error(request, exc: HttpError):
    if isinstance(exc, AuthenticationError):
        response = problem_response(
            request, 401, "Send a live API token: Authorization: Bearer psk_<prefix>_<secret>.",
            kind="unauthenticated")
        response["WWW-Authenticate"] = 'Bearer realm="practicesync"'
        return response
    if isinstance(exc, Throttled):
        # ninja adds Retry-After to this response.
        return problem_response(request, 429, "This token's requests per minute are used up.",
                                kind="rate-limited")
    # ninja's own HttpErrors (a body that is not JSON...) carry no request data.
    return problem_response(request, exc.status_code, str(exc))


def _not_found(request, exc):
    return problem_response(request, 404, "Not found at this practice.")


def _forbidden(request, exc):
    return problem_response(request, 403, str(exc) or "This token may not do that.",
                            kind="forbidden")


def _server_error(request, exc):
    log.error("api request failed: %s", type(exc).__name__)
    return problem_response(request, 500, "Something went wrong on our side; nothing about the "
                                          "failure is shown here. Try again, or tell support.")


def install(api) -> None:
    api.add_exception_handler(Problem, _problem)
    api.add_exception_handler(ValidationError, _validation)
    api.add_exception_handler(HttpError, _http_error)
    api.add_exception_handler(Http404, _not_found)
    api.add_exception_handler(PermissionDenied, _forbidden)
    api.add_exception_handler(Exception, _server_error)
