"""Responses: translate the request, run it down the chat path, translate the answer back. No HTTP
here beyond the stream's response object: `create` returns a Response, `stream` a StreamedAnswer."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from app.access_log import current
from app.answer_stream import StreamedAnswer
from app.chat import ChatService
from app.params import subset_read
from app.protocol import AftInfo
from app.responses import translate
from app.responses.events import ResponseEvents
from app.responses.protocol import ResponsesRequest, ResponsesResponse
from serving.errors import InvalidRequest
from serving.pipeline import PipelineParams

T = TypeVar("T")


async def _in_responses_terms(call: Awaitable[T]) -> T:
    """`call`, its refusals naming the Responses request's parameters, not the chat request's."""
    try:
        return await call
    except InvalidRequest as exc:
        translate.in_responses_terms(exc)
        raise


class ResponsesService:
    """Serves Responses API requests through the chat path (and so the same pipeline)."""

    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def create(self, request: ResponsesRequest) -> ResponsesResponse:
        """Answer a non-streaming request."""
        chat_request = translate.chat_request(request)
        response_id, created_at = f"resp_{current().request_id}", int(time.time())
        completion = await _in_responses_terms(self.chat.complete(chat_request))
        return translate.from_completion(request, response_id, created_at, completion)

    async def stream(self, request: ResponsesRequest) -> StreamedAnswer:
        """Check and admit now (refusals are plain HTTP errors); then the events of ResponseEvents."""
        chat_request = translate.chat_request(request)
        response_id, created_at = f"resp_{current().request_id}", int(time.time())

        def render(params: PipelineParams) -> ResponseEvents:
            aft = AftInfo(proposals=params.proposals, rounds=params.rounds, subset=subset_read(params), answers=[])
            return ResponseEvents(request, response_id, created_at, aft,
                                  include_proposals=bool(request.aft and request.aft.include_proposals))

        return await _in_responses_terms(self.chat.stream(chat_request, render))
