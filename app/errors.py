"""One error shape leaves the service: {"error": {"message", "type", "param", "code"}}.

Domain errors (serving.errors) and the HTTP layer's own (below) map to a status
and an OpenAI error type here, in one table. FastAPI's validation errors and
Starlette's 404/405 are reshaped into the same body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.access_log import current
from app.metrics import error_kind
from app.protocol import ErrorInfo, ErrorResponse
from app.request_id import HEADER
from serving.errors import (
    AFTError,
    BackendError,
    InvalidRequest,
    Overloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

logger = logging.getLogger(__name__)


class AuthenticationFailed(AFTError):
    pass


class ModelNotFound(InvalidRequest):
    pass


class RequestTimeout(AFTError):
    """The request ran past --request-timeout."""


class ShuttingDown(Overloaded):
    """The server is draining: it takes no new requests and ends the ones past the shutdown timeout."""


class UnsupportedMediaType(InvalidRequest):
    pass


# Most specific first: the first class in an error's MRO found here decides.
_STATUS: dict[type[AFTError], tuple[int, str]] = {
    AuthenticationFailed: (401, "authentication_error"),
    ModelNotFound: (404, "invalid_request_error"),
    UnsupportedMediaType: (415, "invalid_request_error"),
    InvalidRequest: (400, "invalid_request_error"),
    Overloaded: (503, "server_error"),
    UpstreamRateLimited: (429, "rate_limit_error"),
    UpstreamTimeout: (504, "server_error"),
    RequestTimeout: (504, "server_error"),
    UpstreamUnavailable: (502, "server_error"),
    BackendError: (502, "server_error"),
}


def status_and_body(exc: AFTError) -> tuple[int, ErrorResponse]:
    """The HTTP status and OpenAI error body for a domain error."""
    status, kind = next((_STATUS[c] for c in type(exc).__mro__ if c in _STATUS), (500, "server_error"))
    return status, ErrorResponse(error=ErrorInfo(message=exc.message, type=kind, param=exc.param, code=exc.code))


def error_response(status: int, message: str, kind: str, *, param: str | None = None,
                   code: str | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # Union members add their type name to the location; keep only field names and indices.
    loc = [p for p in loc if not p.startswith(("str", "list[", "function-"))]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return message, param


def _refused(request: Request, response: JSONResponse) -> JSONResponse:
    """Every error response leaves through here: the one place chat refusals are counted.
    `stream` is known once the route has the body (it sets request.state.stream)."""
    stream = getattr(request.state, "stream", None)
    label = "unknown" if stream is None else "true" if stream else "false"
    request.app.state.metrics.refused(request.url.path, response.status_code, label)
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise into the one error shape."""

    @app.exception_handler(AFTError)
    async def _domain(request: Request, exc: AFTError) -> JSONResponse:
        status, body = status_and_body(exc)
        if exc.detail:  # for the operator only: internal URLs, the cause
            logger.warning("%s %s: %s (%s)", request.method, request.url.path, exc.message, exc.detail)
        request.app.state.lifecycle.observe(exc)
        request.app.state.metrics.record_error(exc)
        current().error = error_kind(exc)
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        if status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return _refused(request, JSONResponse(body.model_dump(), status_code=status, headers=headers))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(list(exc.errors()))
        return _refused(request, error_response(400, message, "invalid_request_error", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        code = getattr(exc, "code", None)
        # exc.headers: 405's Allow, for one.
        return _refused(request, error_response(exc.status_code, str(exc.detail), kind, code=code,
                                                headers=exc.headers))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        # This handler runs outside the app's middleware: the request id header is set here.
        rid = getattr(request.state, "request_id", None)
        return _refused(request, error_response(500, "internal server error", "server_error",
                                                headers={HEADER: rid} if rid else None))
