"""An OpenAI-compatible upstream's error answers, as the domain errors that say whose fault they are.

The client's own mistakes (400, 422) pass on in the upstream's words; every other failure gets a plain
message, with the upstream's URL and words in `detail` (for the logs). Text taken from the upstream
has the API key masked before it is cut (Where.redact).
"""

from __future__ import annotations

from typing import Any, NoReturn

import orjson

from serving.backends.upstream_client import Where
from serving.errors import (
    BackendError,
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamRateLimited,
    UpstreamUnavailable,
)

_CONTEXT_MARKERS = ("context length", "maximum model length", "max_model_len")


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """Message and param of an error body: OpenAI's {"error": {...}} or vLLM's older {"message": ...}."""
    error = (body.get("error") or body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        param = error.get("param")
        return error["message"], param if isinstance(param, str) else None
    return (error, None) if isinstance(error, str) else (None, None)


def raise_status(where: Where, status: int, reason: str | None, body: bytes) -> NoReturn:
    """Raise the domain error for an upstream's answer with error `status` and `body`."""
    try:
        message, param = _error_fields(orjson.loads(body))
    except ValueError:
        message, param = None, None
    text = where.redact(message or body.decode(errors="replace") or reason or "")
    if status in (400, 422):
        # The client's request was refused: the upstream's words say why (and name no internal URL).
        if any(marker in text.lower() for marker in _CONTEXT_MARKERS):
            raise ContextLengthExceeded(text, param="max_tokens" if param == "max_tokens" else "messages")
        raise InvalidRequest(text, param=param.removeprefix("body.") if param else None)
    detail = f"upstream {where.label} answered {status}: {text}"
    if status == 429:
        raise UpstreamRateLimited("the upstream model server is rate limiting this service; retry later",
                                  detail=detail)
    if status in (401, 403, 404):
        raise UpstreamUnavailable(f"the upstream model server refused this service ({status}): its upstream URL, "
                                  "model or API key is misconfigured (not the client's fault)", detail=detail)
    raise UpstreamUnavailable(f"the upstream model server failed ({status})", detail=detail)


def stream_error(where: Where, chunk: Any, payload: bytes) -> BackendError:
    """The domain error for an error event in the middle of a stream."""
    text = where.redact(_error_fields(chunk)[0] or payload.decode(errors="replace"))
    return UpstreamUnavailable("the upstream model server failed mid-stream",
                               detail=f"upstream {where.label} failed mid-stream: {text}")
