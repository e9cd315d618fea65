"""The SSE renderer: token chunks are byte for byte json.dumps of the chunk, and every stream,
even one dropped before it started, gives its admission slot back; the response writes nothing
before the stream first waits, and ends its body with the stream's end."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncGenerator
from typing import Any

from app.protocol import ChatCompletionRequest
from app.sse import EventStreamResponse
from app.streaming import sse_stream
from serving.backends.base import Usage
from serving.pipeline import AnswerDelta, AnswerDone, Event
from tests.fakes import ScriptedBackend, chat_body


async def events(*texts: tuple[int, str]) -> AsyncGenerator[Event, None]:
    for index, text in texts:
        yield AnswerDelta(index, text)


async def test_token_chunks_are_the_json_of_the_chunk() -> None:
    texts = [(0, 'plain'), (1, 'quote " backslash \\ newline \n tab \t'), (0, "é ☃ \u2028 \x00 😀")]
    closed: list[bool] = []
    lines = [line async for line in sse_stream(
        events(*texts), request_id="chatcmpl-1", model='m"odel', created=7, n=2, proposals=3, rounds=1,
        include_usage=False, include_proposals=False, on_close=closed.append)]
    assert lines[-1] == "data: [DONE]\n\n" and closed == [True]
    for line, (index, text) in zip(lines[1:-1], texts, strict=True):
        expected = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": 'm"odel',
                    "choices": [{"index": index, "delta": {"content": text}, "logprobs": None,
                                 "finish_reason": None}]}
        assert line == "data: " + json.dumps(expected, ensure_ascii=False, separators=(",", ":")) + "\n\n"


async def finishing(*order: int) -> AsyncGenerator[Event, None]:
    """A token, then the end, of each answer in `order`."""
    for index in order:
        yield AnswerDelta(index, "x")
        yield AnswerDone(index, "stop", Usage(requests=1, completion_tokens=1), [Usage(requests=1)])


async def test_the_last_answers_end_usage_and_done_leave_in_one_piece() -> None:
    pieces = [piece async for piece in sse_stream(
        finishing(1, 0), request_id="r", model="m", created=1, n=2, proposals=3, rounds=1,
        include_usage=True, include_proposals=False)]
    assert len(pieces) == 1 + 4  # the role chunks, a token of answer 1, its end, a token of answer 0, the tail
    assert pieces[0].count('"role":"assistant"') == 2
    assert json.loads(pieces[2][len("data: "):])["choices"][0] == {  # answer 1 ended while 0 still ran: sent then
        "index": 1, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    events = pieces[-1].split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and len(events) == 4
    finish, usage = (json.loads(event[len("data: "):]) for event in events[:2])
    assert finish["choices"][0]["index"] == 0 and finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2


async def test_a_stream_closed_early_closes_the_pipeline_and_reports_it() -> None:
    closed: list[bool] = []
    source = events((0, "a"), (0, "b"))
    lines = sse_stream(source, request_id="r", model="m", created=1, n=1, proposals=1, rounds=0,
                       include_usage=False, include_proposals=False, on_close=closed.append)
    await anext(lines)  # the role chunk
    await anext(lines)  # "a"
    await lines.aclose()
    assert closed == [False]
    assert source.ag_frame is None  # closed, not left to the garbage collector


async def test_a_stream_dropped_before_it_started_gives_its_slot_back(app_factory: Any,
                                                                      backend: ScriptedBackend) -> None:
    chat = app_factory().state.chat
    stream = chat.stream(ChatCompletionRequest(**chat_body(stream=True)))
    assert chat.admission.active == 1
    del stream  # the client left before the response began: the generator never ran
    gc.collect()
    assert chat.admission.active == 0
    assert 'aft_requests_total{status="disconnected",stream="true"} 1.0' in chat.metrics.render().decode()


async def respond(pieces: AsyncGenerator[str, None], log: list[Any]) -> None:
    """Run an EventStreamResponse over `pieces` as the server would, logging what it sends."""
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        log.append((message["type"], message.get("body"), message.get("more_body")))

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
    await asyncio.wait_for(EventStreamResponse(pieces)(scope, receive, send), timeout=5)


async def test_the_first_engine_request_leaves_before_anything_is_written() -> None:
    log: list[Any] = []

    async def pieces() -> AsyncGenerator[str, None]:
        yield "data: role\n\n"
        log.append("engine request sent")
        await asyncio.sleep(0)  # the pipeline waits on the engine: now the head may go
        log.append("engine answered")
        yield "data: token\n\n"
        yield "data: [DONE]\n\n"

    await respond(pieces(), log)
    assert log == ["engine request sent",
                   ("http.response.start", None, None), ("http.response.body", b"data: role\n\n", True),
                   "engine answered",
                   ("http.response.body", b"data: token\n\n", True),
                   ("http.response.body", b"data: [DONE]\n\n", False)]


async def test_the_streams_end_ends_the_body_in_one_message() -> None:
    log: list[Any] = []

    async def pieces() -> AsyncGenerator[str, None]:
        yield "data: role\n\n"
        yield "data: token\n\n"
        yield "data: [DONE]\n\n"
        log.append("stream finished")  # its clean-up runs before the last write

    await respond(pieces(), log)
    assert log == [("http.response.start", None, None), ("http.response.body", b"data: role\n\n", True),
                   ("http.response.body", b"data: token\n\n", True), "stream finished",
                   ("http.response.body", b"data: [DONE]\n\n", False)]


async def test_a_stream_cut_short_still_ends_the_body() -> None:
    log: list[Any] = []

    async def pieces() -> AsyncGenerator[str, None]:
        yield "data: role\n\n"

    await respond(pieces(), log)
    assert log[-2:] == [("http.response.body", b"data: role\n\n", True), ("http.response.body", b"", False)]
