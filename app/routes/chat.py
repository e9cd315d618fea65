"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.auth import Authorized
from app.cancellation import ClientDisconnected, cancel_on_disconnect
from app.deps import ChatDep, JSONBody
from app.protocol import ChatCompletion, ChatCompletionRequest
from app.routes.errors import documented

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={**documented(400, 401, 404, 408, 413, 415, 429, 502, 503, 504),
                        200: {"content": {"text/event-stream": {}},
                              "description": "The completion; with `stream`, its chunks as server-sent events."}})
async def create_chat_completion(body: ChatCompletionRequest, request: Request, chat: ChatDep,
                                 _: Authorized, __: JSONBody) -> Response:
    request.state.stream = body.stream  # errors from here on are counted by kind
    if body.stream:
        return await chat.stream(body)
    try:
        completion = await cancel_on_disconnect(request.receive, chat.complete(body))
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is listening; the status is for access logs
    # pydantic's own serializer, straight to JSON bytes (no dict in between).
    return Response(completion.model_dump_json(exclude_none=True), media_type="application/json")
