"""POST /v1/responses."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.auth import Authorized
from app.cancellation import ClientDisconnected, cancel_on_disconnect
from app.deps import JSONBody, ResponsesDep
from app.responses.protocol import ResponsesRequest, ResponsesResponse
from app.routes.errors import documented

router = APIRouter(prefix="/v1", tags=["responses"])


@router.post("/responses", response_model=ResponsesResponse,
             responses={**documented(400, 401, 404, 408, 413, 415, 429, 502, 503, 504),
                        200: {"content": {"text/event-stream": {}},
                              "description": "The Response; with `stream`, its events as server-sent events."}})
async def create_response(body: ResponsesRequest, request: Request, responses: ResponsesDep,
                          _: Authorized, __: JSONBody) -> Response:
    request.state.stream = body.stream  # errors from here on are counted by kind
    if body.stream:
        return await responses.stream(body)
    try:
        answer = await cancel_on_disconnect(request.receive, responses.create(body))
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is listening; the status is for access logs
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")
