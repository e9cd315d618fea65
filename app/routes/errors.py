"""The error statuses each route documents (OpenAPI `responses`), all in the one error shape."""

from __future__ import annotations

from typing import Any

from app.protocol import ErrorResponse


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "The request is invalid; `param` names the field.",
        401: "Missing or wrong API key (only when the server has keys).",
        404: "No such model.",
        408: "The request body did not arrive in time.",
        413: "The request body is too large.",
        415: "The body is not application/json.",
        429: "An upstream is rate limiting.",
        502: "The engine or an upstream failed.",
        503: "Overloaded, or shutting down: retry (see Retry-After).",
        504: "The request ran past its deadline.",
    }
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses}
    # "default" also keeps FastAPI from documenting a 422 this service never sends.
    documented["default"] = {"model": ErrorResponse, "description": "Any other error, in the same shape."}
    return documented
