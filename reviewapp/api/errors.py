"""Every API error is JSON ``{"detail": "<message>", "errors": {field: [messages]}}``."""

import logging
import re
import uuid

from django.core.exceptions import NON_FIELD_ERRORS, ObjectDoesNotExist, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from ninja import Field, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from ..enqueue import QueueUnavailable

__all__ = ["ERROR_RESPONSES", "QUEUE_RESPONSES", "ErrorOut", "install_error_handlers"]

logger = logging.getLogger(__name__)

QUEUE_DOWN = "The job queue is unavailable; try again."

# The prediction endpoints, whose callers are a project's clients with client tokens.
_PREDICT_PATH = re.compile(r"/projects/[^/]+/predict(/batch)?/?$|/predictions/\d+/?$")

# Where ninja found a bad value; the client already knows, the field name is what helps.
_SOURCES = {"body", "query", "path", "form", "file", "header", "cookie"}


class ErrorOut(Schema):
    detail: str
    errors: dict[str, list[str]] | None = None
    request_id: str | None = Field(
        None, description="On a 500: the id the error was logged under (also X-Request-ID)."
    )


# For the OpenAPI schema of each operation.
ERROR_RESPONSES = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 500: ErrorOut}
# Operations that start a background job: the broker may refuse it.
QUEUE_RESPONSES = {503: ErrorOut}


def _detail(errors: dict[str, list[str]]) -> str:
    return "; ".join(
        message if field == NON_FIELD_ERRORS else f"{field}: {message}"
        for field, messages in errors.items()
        for message in messages
    )


def _field_name(loc) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _SOURCES:
        parts = parts[1:]
    # ninja nests a body under its parameter name ("payload"); the client never sees it.
    if len(parts) > 1 and parts[0] == "payload":
        parts = parts[1:]
    return ".".join(parts) or NON_FIELD_ERRORS


def install_error_handlers(api: NinjaAPI) -> None:
    def error(request, status: int, detail: str, errors=None, headers=None):
        body = {"detail": detail}
        if errors:
            body["errors"] = errors
        response = api.create_response(request, body, status=status)
        for name, value in (headers or {}).items():
            response[name] = value
        return response

    @api.exception_handler(NinjaValidationError)
    def request_invalid(request, exc):
        # ninja's default is 422 with pydantic's raw list; clients get 400 and a sentence.
        errors: dict[str, list[str]] = {}
        for item in exc.errors:
            errors.setdefault(_field_name(item.get("loc", ())), []).append(item.get("msg", ""))
        return error(request, 400, _detail(errors), errors)

    @api.exception_handler(DjangoValidationError)
    def service_refused(request, exc):
        if hasattr(exc, "error_dict"):
            errors = exc.message_dict
        else:
            errors = {NON_FIELD_ERRORS: exc.messages}
        return error(request, 400, _detail(errors), errors)

    @api.exception_handler(AuthenticationError)
    def unauthenticated(request, exc):
        detail = exc.message
        if detail == "Unauthorized" and _PREDICT_PATH.search(request.path):
            detail = (
                "Authentication required: send the project's client token as "
                "'Authorization: Bearer lpc_…' (the project's Clients page, or "
                "`manage.py create_api_token --project SLUG --client NAME`)."
            )
        elif detail == "Unauthorized":  # ninja's default when no credentials came at all
            detail = (
                "Authentication required: send 'Authorization: Bearer <token>' "
                "(see `manage.py create_user_token`) or log in to Loupe in the browser."
            )
        return error(request, 401, detail, headers={"WWW-Authenticate": 'Bearer realm="loupe"'})

    @api.exception_handler(HttpError)
    def http_error(request, exc):
        detail = exc.message
        # ninja's words when the JSON body does not parse; say what to send instead.
        if exc.status_code == 400 and detail.startswith("Cannot parse request body"):
            detail = (
                "The request body is not valid JSON: send a JSON object with "
                "'Content-Type: application/json'."
            )
        return error(request, exc.status_code, detail)

    @api.exception_handler(PermissionDenied)
    def forbidden(request, exc):
        return error(request, 403, str(exc) or "You are not allowed to do this.")

    @api.exception_handler(Http404)
    def not_found(request, exc):
        return error(request, 404, str(exc) or "Not found.")

    @api.exception_handler(ObjectDoesNotExist)
    def object_not_found(request, exc):
        return error(request, 404, str(exc) or "Not found.")

    @api.exception_handler(QueueUnavailable)
    def queue_unavailable(request, exc):
        # The job's row is already failed with the broker's reason; nothing is left pending.
        return error(request, 503, QUEUE_DOWN, headers={"Retry-After": "30"})

    @api.exception_handler(Exception)
    def unexpected(request, exc):
        # Replaces ninja's default (re-raise: Django's HTML 500); the id ties answer to log.
        request_id = uuid.uuid4().hex
        logger.error(
            "API error %s on %s %s",
            request_id,
            request.method,
            request.get_full_path(),
            exc_info=exc,
            extra={"request_id": request_id},
        )
        response = api.create_response(
            request,
            {
                "detail": f"Something went wrong on our side; it was logged as {request_id}.",
                "request_id": request_id,
            },
            status=500,
        )
        response["X-Request-ID"] = request_id
        return response
