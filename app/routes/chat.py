"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.auth import Authorized
from app.cancellation import ClientDisconnected, cancel_on_disconnect
from app.deps import ChatServiceDep
from app.protocol import ChatCompletion, ChatCompletionRequest
from app.sse import EventStreamResponse

router = APIRouter(prefix="/v1", tags=["chat"])

# Proxies (nginx) buffer responses unless told not to; SSE must flow token by token.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/chat/completions", response_model=ChatCompletion)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, chat: ChatServiceDep,
                                 _: Authorized) -> Response:
    if body.stream:
        return EventStreamResponse(chat.stream(body), headers=_SSE_HEADERS)
    try:
        completion = await cancel_on_disconnect(request, chat.complete(body))
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is listening; the status is for access logs
    # pydantic's own serializer: one pass in Rust, a third of model_dump + json.dumps.
    return Response(completion.model_dump_json(exclude_none=True), media_type="application/json")
