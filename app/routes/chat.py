"""POST /v1/chat/completions.

The handler reads and validates its body itself (pydantic straight from the bytes) and takes
the service and the key check from the app, rather than through FastAPI's body parameter and
dependencies: at concurrency 1 that machinery was a quarter of what the service adds before
the first engine call (bench/README.md). Errors keep their one shape: a body that does not
validate is a RequestValidationError, as FastAPI would raise it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.auth import require_api_key
from app.cancellation import ClientDisconnected, cancel_on_disconnect
from app.chat import ChatService
from app.protocol import ChatCompletion, ChatCompletionRequest
from app.sse import EventStreamResponse

router = APIRouter(prefix="/v1", tags=["chat"])

# Proxies (nginx) buffer responses unless told not to; SSE must flow token by token.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """`schema` with every local reference replaced by its definition (the models are not recursive)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(definitions[schema["$ref"].removeprefix("#/$defs/")], definitions)
        return {key: _inlined(value, definitions) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


_REQUEST_SCHEMA = ChatCompletionRequest.model_json_schema()
# The request body as the OpenAPI document shows it (FastAPI cannot see a body read by hand); inlined,
# since "#/$defs/..." would point into the OpenAPI document's root.
_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": _inlined(_REQUEST_SCHEMA, _REQUEST_SCHEMA.get("$defs", {}))}}}}


def _parse(raw: bytes) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


@router.post("/chat/completions", response_model=ChatCompletion, openapi_extra=_BODY)
async def create_chat_completion(request: Request) -> Response:
    await require_api_key(request)
    body = _parse(await request.body())
    chat: ChatService = request.app.state.chat
    if body.stream:
        return EventStreamResponse(chat.stream(body), headers=_SSE_HEADERS)
    try:
        completion = await cancel_on_disconnect(request.receive, chat.complete(body))
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is listening; the status is for access logs
    # pydantic's own serializer: one pass in Rust, a third of model_dump + json.dumps.
    return Response(completion.model_dump_json(exclude_none=True), media_type="application/json")
